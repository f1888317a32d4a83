/* SPDX-License-Identifier: MIT */
/* Packing what the loader parsed into one compiled block, with the
 * per-(proto, port) slot table decide() starts from. */
#include "policy-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pf_policy_head_defaults(struct pf_policy *head)
{
        head->default_action = PF_REFUSE;
        head->refuse_errno = EADDRINUSE;
        head->redirect_connect = true;
        head->steer = true;
        head->on_error = PF_ON_ERROR_REFUSE;
        head->getsockname = PF_GETSOCKNAME_REQUESTED;
        head->unbound_listen = PF_ALLOW;
        head->log_to = PF_LOG_STDERR;
        head->log_level = PF_LEVEL_INFO;
        head->log_format = PF_FORMAT_TEXT;
}

static size_t align8(size_t n)
{
        return (n + 7) & ~(size_t)7;
}

/* First match wins: each rule claims the ports no earlier rule claimed. */
static void compile_slots(struct pf_policy *p, enum pf_proto proto)
{
        const struct pf_rule *rules = pf_rules_of(p);
        struct pf_slot *slots = p->slots[proto];
        struct pf_portset claimed;
        uint32_t rank;

        pf_portset_clear(&claimed);
        for (uint32_t i = 0; i < p->rule_count; i++) {
                const struct pf_rule *rule = &rules[i];
                const struct pf_range all = { 1, PF_PORT_MAX };
                bool fixed_target = !rule->conditional && rule->action == PF_REMAP;

                if (!(rule->protos & PF_PROTO_BIT(proto)))
                        continue;
                rank = 0;
                for (uint32_t k = 0; k < (rule->has_ports ? rule->range_count : 1); k++) {
                        const struct pf_range *r = rule->has_ports ?
                                &pf_ranges_of(p)[rule->first_range + k] : &all;

                        for (unsigned port = r->lo; port <= r->hi;) {
                                if (claimed.words[port / 64] == UINT64_MAX) {
                                        port = (port | 63) + 1;
                                        continue;
                                }
                                if (!pf_portset_has(&claimed, port)) {
                                        slots[port].rule = (uint16_t)(i + 1);
                                        if (fixed_target)
                                                slots[port].target =
                                                        pf_rule_target_at(p, rule, rank + port - r->lo);
                                        pf_portset_add(&claimed, port);
                                }
                                port++;
                        }
                        rank += r->hi - r->lo + 1u;
                }
        }
        rank = 0;
        for (unsigned w = 0; w < PF_PORTSET_WORDS; w++) {
                p->guarded_rank[proto][w] = (uint16_t)rank;
                rank += (uint32_t)__builtin_popcountll(p->rank_domain[proto].words[w]);
        }
        if (p->default_action != PF_REMAP)
                return;
        for (unsigned port = pf_portset_find(&p->guarded[proto], 1, true); port <= PF_PORT_MAX;
             port = pf_portset_find(&p->guarded[proto], port + 1, true))
                if (!slots[port].rule)
                        slots[port].target = pf_pool_nth(p, pf_guarded_rank(p, proto, port));
}

/* Ports allowed for every caller of both protocols: the first rule of the
 * port (its slot) is an unconditional allow, or no rule covers it and it is
 * not guarded. One look at each rule first, then two slots per port. */
static void compile_plain_allow(struct pf_policy *p)
{
        const struct pf_rule *rules = pf_rules_of(p);
        uint8_t *plain = calloc(p->rule_count + 1u, 1);

        pf_portset_clear(&p->plain_allow);
        if (!plain)
                return;         /* no fast path: every port is decided in full */
        for (uint32_t i = 0; i < p->rule_count; i++)
                plain[i + 1] = !rules[i].conditional && rules[i].action == PF_ALLOW;
        for (unsigned port = 1; port <= PF_PORT_MAX; port++) {
                bool both = true;

                for (int proto = 0; proto < PF_PROTO_COUNT && both; proto++) {
                        uint16_t rule = p->slots[proto][port].rule;

                        both = rule ? plain[rule] : !pf_portset_has(&p->guarded[proto], port);
                }
                if (both)
                        pf_portset_add(&p->plain_allow, port);
        }
        free(plain);
}

struct pf_policy *pf_policy_pack(const struct pf_policy_parts *parts)
{
        uint32_t pool_range_count = pf_portset_range_count(&parts->head->pool);
        size_t rules = align8(sizeof(struct pf_policy));
        size_t ranges = align8(rules + parts->rule_count * sizeof(struct pf_rule));
        size_t pool = align8(ranges + parts->range_count * sizeof(struct pf_range));
        size_t kinds = align8(pool + pool_range_count * sizeof(struct pf_pool_range));
        size_t strings = align8(kinds + parts->rule_count);
        size_t size = align8(strings + parts->strings_size);
        struct pf_policy *p = realloc(parts->head, size);
        struct pf_pool_range *pool_ranges;
        struct pf_range range = { 0, 0 };
        uint8_t *kind;

        if (!p) {
                free(parts->head);
                return NULL;
        }
        memset((char *)p + sizeof(*p), 0, size - sizeof(*p));
        p->magic = PF_POLICY_MAGIC;
        p->header_size = sizeof(*p);
        p->size = size;
        p->rules = (uint32_t)rules;
        p->rule_count = parts->rule_count;
        p->ranges = (uint32_t)ranges;
        p->range_count = parts->range_count;
        p->pool_ranges = (uint32_t)pool;
        p->pool_range_count = pool_range_count;
        p->pool_count = pf_portset_count(&p->pool);
        p->rule_kind = (uint32_t)kinds;
        p->strings = (uint32_t)strings;
        p->strings_size = parts->strings_size;
        p->name = parts->name;
        p->log_path = parts->log_path;
        if (parts->rule_count)
                memcpy((char *)p + rules, parts->rules, parts->rule_count * sizeof(struct pf_rule));
        if (parts->range_count)
                memcpy((char *)p + ranges, parts->ranges, parts->range_count * sizeof(struct pf_range));
        memcpy((char *)p + strings, parts->strings, parts->strings_size);
        pool_ranges = (struct pf_pool_range *)(void *)((char *)p + pool);
        for (uint32_t i = 0, before = 0; pf_portset_next_range(&p->pool, &range); i++) {
                pool_ranges[i] = (struct pf_pool_range){ range, before };
                before += range.hi - range.lo + 1u;
        }
        kind = (uint8_t *)p + kinds;
        for (uint32_t i = 0; i < p->rule_count; i++)
                kind[i] = (uint8_t)(parts->rules[i].action |
                                    (parts->rules[i].conditional ? PF_KIND_CONDITIONAL : 0));
        memset(p->slots, 0, sizeof(p->slots));
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++)
                compile_slots(p, proto);
        compile_plain_allow(p);
        return p;
}

void pf_policy_free(struct pf_policy *p)
{
        free(p);
}

int pf_policy_log_only(const struct pf_policy *base, struct pf_policy **out)
{
        static const char strings[] = "\0(learning)";
        struct pf_policy *head = calloc(1, sizeof(*head));
        struct pf_policy_parts parts = {
                .head = head, .strings = strings, .strings_size = sizeof(strings), .name = 1,
        };

        if (!head)
                return -ENOMEM;
        pf_policy_head_defaults(head);
        head->default_action = PF_LOG;
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++)
                head->guarded[proto] = base->guarded[proto];
        pf_rank_domain_fill(head, false);       /* nothing is moved: no pool */
        *out = pf_policy_pack(&parts);
        return *out ? 0 : -ENOMEM;
}

int pf_policy_default(struct pf_policy **out, char *why)
{
        static const char strings[] = "\0" PF_POLICY_BUILTIN;
        struct pf_policy *head = calloc(1, sizeof(*head));
        struct pf_policy_parts parts = {
                .head = head, .strings = strings, .strings_size = sizeof(strings), .name = 1,
        };
        int r;

        if (!head) {
                snprintf(why, PF_WHY_SIZE, "%s", strerror(ENOMEM));
                return -ENOMEM;
        }
        pf_policy_head_defaults(head);
        r = pf_profile_dynamic(pf_profile_find("host"), PF_TCP, &head->guarded[PF_TCP], why);
        if (r < 0) {
                free(head);
                return r;
        }
        head->guarded[PF_UDP] = head->guarded[PF_TCP];
        pf_rank_domain_fill(head, true);
        pf_pool_default_of(head);
        *out = pf_policy_pack(&parts);
        if (!*out) {
                snprintf(why, PF_WHY_SIZE, "%s", strerror(ENOMEM));
                return -ENOMEM;
        }
        return 0;
}

