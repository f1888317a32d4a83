/* SPDX-License-Identifier: MIT */
/* The compiled policy: packing, per-port tables, decide(), and the file form.
 * Nothing here links libconfig: the LD_PRELOAD shim uses this file alone. */
#include "policy-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTION(p, offset, type) ((type)(const void *)((const char *)(p) + (offset)))

static const struct pf_rule *rules_of(const struct pf_policy *p)
{
        return SECTION(p, p->rules, const struct pf_rule *);
}

static const struct pf_range *ranges_of(const struct pf_policy *p)
{
        return SECTION(p, p->ranges, const struct pf_range *);
}

static const struct pf_pool_range *pool_of(const struct pf_policy *p)
{
        return SECTION(p, p->pool_ranges, const struct pf_pool_range *);
}

static const uint8_t *kinds_of(const struct pf_policy *p)
{
        return SECTION(p, p->rule_kind, const uint8_t *);
}

static const char *string_at(const struct pf_policy *p, uint32_t offset)
{
        return SECTION(p, p->strings, const char *) + offset;
}

/* ---- remap targets -------------------------------------------------------- */

static uint16_t pool_nth(const struct pf_policy *p, uint32_t n)
{
        const struct pf_pool_range *pool = pool_of(p);
        uint32_t lo = 0, hi = p->pool_range_count - 1;

        n %= p->pool_count;
        while (lo < hi) {       /* the last range with before <= n */
                uint32_t mid = (lo + hi + 1) / 2;

                if (pool[mid].before <= n)
                        lo = mid;
                else
                        hi = mid - 1;
        }
        return (uint16_t)(pool[lo].range.lo + (n - pool[lo].before));
}

static uint32_t guarded_rank(const struct pf_policy *p, enum pf_proto proto, unsigned port)
{
        uint64_t below = p->guarded[proto].words[port / 64] & (((uint64_t)1 << (port % 64)) - 1);

        return p->guarded_rank[proto][port / 64] + (uint32_t)__builtin_popcountll(below);
}

/* The port's offset within the rule's ports; the port must be covered. */
static uint32_t rule_rank(const struct pf_policy *p, const struct pf_rule *rule, unsigned port)
{
        const struct pf_range *ranges = ranges_of(p) + rule->first_range;
        uint32_t rank = 0;

        if (!rule->has_ports)
                return port - 1;
        for (uint32_t i = 0; i < rule->range_count; i++) {
                if (port <= ranges[i].hi)
                        return rank + (port - ranges[i].lo);
                rank += ranges[i].hi - ranges[i].lo + 1u;
        }
        return rank;
}

static uint16_t rule_target_at(const struct pf_policy *p, const struct pf_rule *rule, uint32_t rank)
{
        return rule->has_to ? (uint16_t)(rule->to + rank) : pool_nth(p, rank);
}

static bool rule_covers(const struct pf_policy *p, const struct pf_rule *rule, unsigned port)
{
        const struct pf_range *ranges = ranges_of(p) + rule->first_range;
        uint32_t lo = 0, hi = rule->range_count;

        if (!rule->has_ports)
                return true;
        while (lo < hi) {       /* ranges are sorted and disjoint */
                uint32_t mid = (lo + hi) / 2;

                if (port < ranges[mid].lo)
                        hi = mid;
                else if (port > ranges[mid].hi)
                        lo = mid + 1;
                else
                        return true;
        }
        return false;
}

/* ---- packing ----------------------------------------------------------- */

void pf_policy_head_defaults(struct pf_policy *head)
{
        head->default_action = PF_REFUSE;
        head->refuse_errno = EADDRINUSE;
        head->redirect_connect = true;
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

static uint32_t count_ranges(const struct pf_portset *set)
{
        struct pf_range range = { 0, 0 };
        uint32_t n = 0;

        while (pf_portset_next_range(set, &range))
                n++;
        return n;
}

/* First match wins: each rule claims the ports no earlier rule claimed. */
static void compile_slots(struct pf_policy *p, enum pf_proto proto)
{
        const struct pf_rule *rules = rules_of(p);
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
                                &ranges_of(p)[rule->first_range + k] : &all;

                        for (unsigned port = r->lo; port <= r->hi;) {
                                if (claimed.words[port / 64] == UINT64_MAX) {
                                        port = (port | 63) + 1;
                                        continue;
                                }
                                if (!pf_portset_has(&claimed, port)) {
                                        slots[port].rule = (uint16_t)(i + 1);
                                        if (fixed_target)
                                                slots[port].target =
                                                        rule_target_at(p, rule, rank + port - r->lo);
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
                rank += (uint32_t)__builtin_popcountll(p->guarded[proto].words[w]);
        }
        if (p->default_action != PF_REMAP)
                return;
        for (unsigned port = pf_portset_find(&p->guarded[proto], 1, true); port <= PF_PORT_MAX;
             port = pf_portset_find(&p->guarded[proto], port + 1, true))
                if (!slots[port].rule)
                        slots[port].target = pool_nth(p, guarded_rank(p, proto, port));
}

struct pf_policy *pf_policy_pack(const struct pf_policy_parts *parts)
{
        uint32_t pool_range_count = count_ranges(&parts->head->pool);
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
        return p;
}

void pf_policy_free(struct pf_policy *p)
{
        free(p);
}

int pf_policy_default(struct pf_policy **out, char *why, size_t why_size)
{
        static const char strings[] = "\0" PF_POLICY_BUILTIN;
        struct pf_policy *head = calloc(1, sizeof(*head));
        struct pf_policy_parts parts = {
                .head = head, .strings = strings, .strings_size = sizeof(strings), .name = 1,
        };
        int r;

        if (!head) {
                snprintf(why, why_size, "%s", strerror(ENOMEM));
                return -ENOMEM;
        }
        pf_policy_head_defaults(head);
        r = pf_profile_dynamic(pf_profile_find("host"), PF_TCP, &head->guarded[PF_TCP], why,
                               why_size);
        if (r < 0) {
                free(head);
                return r;
        }
        head->guarded[PF_UDP] = head->guarded[PF_TCP];
        pf_portset_add_range(&head->pool, 1024, PF_PORT_MAX);
        pf_portset_subtract(&head->pool, &head->guarded[PF_TCP]);
        *out = pf_policy_pack(&parts);
        if (!*out) {
                snprintf(why, why_size, "%s", strerror(ENOMEM));
                return -ENOMEM;
        }
        return 0;
}

/* ---- the file form ---------------------------------------------------------- */

uint64_t pf_policy_hash(const struct pf_policy *p)
{
        const unsigned char *bytes = (const unsigned char *)p;
        uint64_t hash = 0xcbf29ce484222325u;    /* FNV-1a */

        for (uint64_t i = 0; i < p->size; i++)
                hash = (hash ^ bytes[i]) * 0x100000001b3u;
        return hash;
}

int pf_policy_save(const struct pf_policy *p, const char *path)
{
        char tmp[4096];
        const char *data = (const char *)p;
        size_t done = 0;
        int fd, r = 0;

        if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp))
                return -ENAMETOOLONG;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        while (done < p->size) {
                ssize_t n = write(fd, data + done, p->size - done);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -EIO;
                        break;
                }
                done += (size_t)n;
        }
        if (r == 0 && fchmod(fd, 0644) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

static bool section_fits(const struct pf_policy *p, uint64_t offset, uint64_t count, size_t item)
{
        return offset >= sizeof(*p) && offset % 8 == 0 && offset <= p->size &&
               count <= (p->size - offset) / item;
}

/* Every offset and index decide() follows stays inside the block (slots:
 * see pf_decide). */
static bool policy_valid(const struct pf_policy *p, uint64_t file_size)
{
        const struct pf_rule *rules;
        const char *strings;

        if (file_size < sizeof(*p) || p->magic != PF_POLICY_MAGIC ||
            p->header_size != sizeof(*p) || p->size != file_size)
                return false;
        if (!section_fits(p, p->rules, p->rule_count, sizeof(struct pf_rule)) ||
            !section_fits(p, p->ranges, p->range_count, sizeof(struct pf_range)) ||
            !section_fits(p, p->pool_ranges, p->pool_range_count, sizeof(struct pf_pool_range)) ||
            !section_fits(p, p->rule_kind, p->rule_count, 1) ||
            !section_fits(p, p->strings, p->strings_size, 1) || p->strings_size == 0)
                return false;
        strings = string_at(p, 0);
        if (strings[p->strings_size - 1] != '\0' || p->name >= p->strings_size ||
            p->log_path >= p->strings_size || p->rule_count > UINT16_MAX ||
            p->default_action > PF_REMAP || p->unbound_listen > PF_REMAP)
                return false;
        if (p->pool_count != pf_portset_count(&p->pool) ||
            p->pool_range_count != count_ranges(&p->pool))
                return false;
        rules = rules_of(p);
        for (uint32_t i = 0; i < p->rule_count; i++) {
                if ((uint64_t)rules[i].first_range + rules[i].range_count > p->range_count ||
                    rules[i].program >= p->strings_size || rules[i].action > PF_REMAP ||
                    (rules[i].action == PF_REMAP && !rules[i].has_to && p->pool_count == 0))
                        return false;
        }
        /* Slots are checked by decide() as it reads them: touching all
         * 512 KiB here would cost every wrapped program that much memory. */
        return !(p->default_action == PF_REMAP && p->pool_count == 0);
}

int pf_policy_map(const char *path, const struct pf_policy **out)
{
        struct stat st;
        void *map;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0) {
                int r = -errno;

                close(fd);
                return r;
        }
        if (!S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(struct pf_policy)) {
                close(fd);
                return -EINVAL;
        }
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (map == MAP_FAILED)
                return -errno;
        if (!policy_valid(map, (uint64_t)st.st_size)) {
                munmap(map, (size_t)st.st_size);
                return -EINVAL;
        }
        *out = map;
        return 0;
}

void pf_policy_unmap(const struct pf_policy *p)
{
        if (p)
                munmap((void *)p, p->size);
}

/* ---- decide ---------------------------------------------------------------- */

/* The default's remap target: in the slot, unless a rule owns the slot. */
static uint16_t default_target(const struct pf_policy *p, enum pf_proto proto, unsigned port,
                               struct pf_slot slot)
{
        return slot.rule ? pool_nth(p, guarded_rank(p, proto, port)) : slot.target;
}

static bool conditions_match(const struct pf_policy *p, const struct pf_rule *rule,
                             const struct pf_query *q)
{
        if (rule->has_family && rule->family != q->addr.family)
                return false;
        if (rule->has_cidr && !pf_cidr_match(&rule->cidr, &q->addr))
                return false;
        if (rule->program && !(q->program && pf_glob_match(string_at(p, rule->program), q->program)))
                return false;
        return true;
}

static void verdict_of(const struct pf_policy *p, enum pf_action action, uint16_t target,
                       struct pf_verdict *out)
{
        out->action = action;
        out->target = action == PF_REMAP ? target : 0;
        out->err = action == PF_REFUSE ? p->refuse_errno : 0;
}

void pf_decide(const struct pf_policy *p, const struct pf_query *q, struct pf_verdict *out)
{
        const unsigned port = q->port;
        const enum pf_proto proto = q->proto;
        const uint8_t *kinds = kinds_of(p);
        struct pf_slot slot;

        *out = (struct pf_verdict){ .action = PF_ALLOW };
        if (port == 0)
                return;
        out->guarded = pf_portset_has(&p->guarded[proto], port);
        slot = p->slots[proto][port];
        if (slot.rule > p->rule_count)          /* a damaged mapped file */
                slot.rule = 0;
        if (slot.rule && !(kinds[slot.rule - 1] & PF_KIND_CONDITIONAL)) {
                out->rule = slot.rule;
                verdict_of(p, kinds[slot.rule - 1] & PF_KIND_ACTION, slot.target, out);
                return;
        }
        /* Conditional rules: only from the first rule that covers port on. */
        for (uint32_t i = slot.rule ? slot.rule - 1u : p->rule_count; i < p->rule_count; i++) {
                const struct pf_rule *rule = &rules_of(p)[i];

                if (!(rule->protos & PF_PROTO_BIT(proto)) || !rule_covers(p, rule, port) ||
                    !conditions_match(p, rule, q))
                        continue;
                out->rule = i + 1;
                verdict_of(p, rule->action,
                           rule->action == PF_REMAP ? rule_target_at(p, rule, rule_rank(p, rule, port)) : 0,
                           out);
                return;
        }
        if (!out->guarded)
                return;
        verdict_of(p, p->default_action,
                   p->default_action == PF_REMAP ? default_target(p, proto, port, slot) : 0, out);
}

int pf_policy_chain(const struct pf_policy *p, enum pf_proto proto, unsigned port,
                    struct pf_step *steps, unsigned max)
{
        struct pf_slot slot = p->slots[proto][port];
        enum pf_action action;
        unsigned n = 0;

        if (port != 0 && slot.rule && slot.rule <= p->rule_count) {
                for (uint32_t i = slot.rule - 1u; i < p->rule_count; i++) {
                        const struct pf_rule *rule = &rules_of(p)[i];

                        if (!(rule->protos & PF_PROTO_BIT(proto)) || !rule_covers(p, rule, port))
                                continue;
                        if (n == max)
                                return -E2BIG;
                        steps[n++] = (struct pf_step){
                                .action = rule->action, .rule = i + 1, .conditional = rule->conditional,
                                .target = rule->action == PF_REMAP ?
                                          rule_target_at(p, rule, rule_rank(p, rule, port)) : 0,
                        };
                        if (!rule->conditional)
                                return (int)n;
                }
        }
        if (n == max)
                return -E2BIG;
        action = port != 0 && pf_portset_has(&p->guarded[proto], port) ? p->default_action : PF_ALLOW;
        steps[n++] = (struct pf_step){
                .action = action,
                .target = action == PF_REMAP ? default_target(p, proto, port, slot) : 0,
        };
        return (int)n;
}

void pf_policy_conditions(const struct pf_policy *p, unsigned rule, struct pf_conditions *out)
{
        const struct pf_rule *r = &rules_of(p)[rule - 1];

        *out = (struct pf_conditions){
                .has_family = r->has_family, .family = r->family,
                .has_cidr = r->has_cidr, .cidr_addr = r->cidr.addr, .cidr_prefix = r->cidr.prefix,
                .program = r->program ? string_at(p, r->program) : NULL,
        };
}

void pf_policy_server_ports(const struct pf_policy *p, enum pf_proto proto, struct pf_portset *out)
{
        bool pool_used = p->default_action == PF_REMAP && !pf_portset_empty(&p->guarded[proto]);

        pf_portset_clear(out);
        for (uint32_t i = 0; i < p->rule_count; i++) {
                const struct pf_rule *rule = &rules_of(p)[i];
                struct pf_portset ports;

                if (!(rule->protos & PF_PROTO_BIT(proto)))
                        continue;
                pf_portset_clear(&ports);
                if (!rule->has_ports)
                        pf_portset_fill(&ports);
                for (uint32_t k = 0; k < rule->range_count; k++)
                        pf_portset_add_range(&ports, ranges_of(p)[rule->first_range + k].lo,
                                             ranges_of(p)[rule->first_range + k].hi);
                if (rule->action == PF_ALLOW && !rule->conditional) {
                        pf_portset_intersect(&ports, &p->guarded[proto]);
                        pf_portset_union(out, &ports);
                } else if (rule->action == PF_REMAP && rule->has_to) {
                        pf_portset_add_range(out, rule->to, rule->to + pf_portset_count(&ports) - 1u);
                } else if (rule->action == PF_REMAP) {
                        pool_used = true;
                }
        }
        if (pool_used)
                pf_portset_union(out, &p->pool);
}

bool pf_conditions_match(const struct pf_conditions *c, const struct pf_query *q)
{
        struct pf_cidr cidr = { c->cidr_addr, c->cidr_prefix };

        if (c->has_family && c->family != q->addr.family)
                return false;
        if (c->has_cidr && !pf_cidr_match(&cidr, &q->addr))
                return false;
        return !c->program || (q->program && pf_glob_match(c->program, q->program));
}

/* ---- accessors ------------------------------------------------------------- */

const char *pf_policy_name(const struct pf_policy *p) { return string_at(p, p->name); }
const struct pf_portset *pf_policy_guarded(const struct pf_policy *p, enum pf_proto proto)
{
        return &p->guarded[proto];
}
const struct pf_portset *pf_policy_pool(const struct pf_policy *p) { return &p->pool; }
const struct pf_portset *pf_policy_client_ports(const struct pf_policy *p) { return &p->client_ports; }
unsigned pf_policy_rule_count(const struct pf_policy *p) { return p->rule_count; }
unsigned pf_policy_rule_line(const struct pf_policy *p, unsigned rule)
{
        return rule >= 1 && rule <= p->rule_count ? rules_of(p)[rule - 1].line : 0;
}
enum pf_action pf_policy_rule_action(const struct pf_policy *p, unsigned rule)
{
        return rule >= 1 && rule <= p->rule_count ? rules_of(p)[rule - 1].action : PF_ALLOW;
}
bool pf_policy_redirect_connect(const struct pf_policy *p) { return p->redirect_connect; }
enum pf_getsockname pf_policy_getsockname(const struct pf_policy *p) { return p->getsockname; }
enum pf_action pf_policy_unbound_listen(const struct pf_policy *p) { return p->unbound_listen; }
enum pf_on_error pf_policy_on_error(const struct pf_policy *p) { return p->on_error; }
int pf_policy_refuse_errno(const struct pf_policy *p) { return p->refuse_errno; }
void pf_policy_log(const struct pf_policy *p, struct pf_log_settings *out)
{
        out->to = p->log_to;
        out->path = p->log_path ? string_at(p, p->log_path) : NULL;
        out->level = p->log_level;
        out->format = p->log_format;
}
