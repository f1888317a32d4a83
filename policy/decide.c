/* SPDX-License-Identifier: MIT */
/* Decisions: pf_decide() for the enforcers that can call it, the decision
 * chain for those that cannot (the BPF programs), both over one walk of the
 * rules, and the accessors. Pure: no system call, no allocation. */
#include "policy-internal.h"

#include <errno.h>

/* The default's remap target: in the slot, unless a rule owns the slot. */
static uint16_t default_target(const struct pf_policy *p, enum pf_proto proto, unsigned port,
                               struct pf_slot slot)
{
        return slot.rule ? pf_pool_nth(p, pf_guarded_rank(p, proto, port)) : slot.target;
}

/* ---- the one walk of the rules --------------------------------------------- */

/* The rules that can decide a bind of port over proto, in order: the slot
 * names the first whose ports and protocol cover it, each call gives the
 * next. rule_count when there is none (left). */
static uint32_t first_rule(const struct pf_policy *p, struct pf_slot slot)
{
        return slot.rule && slot.rule <= p->rule_count ? slot.rule - 1u : p->rule_count;
}

static uint32_t next_rule(const struct pf_policy *p, enum pf_proto proto, unsigned port, uint32_t after)
{
        for (uint32_t i = after + 1; i < p->rule_count; i++) {
                const struct pf_rule *rule = &pf_rules_of(p)[i];

                if ((rule->protos & PF_PROTO_BIT(proto)) && pf_rule_covers(p, rule, port))
                        return i;
        }
        return p->rule_count;
}

/* A rule's step: its action and, for remap, this port's target. */
static struct pf_step rule_step(const struct pf_policy *p, uint32_t index, unsigned port)
{
        const struct pf_rule *rule = &pf_rules_of(p)[index];

        return (struct pf_step){
                .action = rule->action, .rule = index + 1, .conditional = rule->conditional,
                .target = rule->action == PF_REMAP ? pf_rule_target(p, rule, port) : 0,
        };
}

/* What no rule with conditions decides: the first unconditional rule that
 * covers port, else default_action for a guarded port, else allow. */
static struct pf_step fallback_step(const struct pf_policy *p, enum pf_proto proto, unsigned port,
                                    struct pf_slot slot)
{
        enum pf_action action;

        for (uint32_t i = first_rule(p, slot); i < p->rule_count; i = next_rule(p, proto, port, i))
                if (!pf_rules_of(p)[i].conditional)
                        return rule_step(p, i, port);
        action = port != 0 && pf_portset_has(&p->guarded[proto], port) ? p->default_action : PF_ALLOW;
        return (struct pf_step){
                .action = action,
                .target = action == PF_REMAP ? default_target(p, proto, port, slot) : 0,
        };
}

static struct pf_slot slot_of(const struct pf_policy *p, enum pf_proto proto, unsigned port)
{
        struct pf_slot slot = p->slots[proto][port];

        if (slot.rule > p->rule_count)          /* a damaged mapped file */
                slot.rule = 0;
        return slot;
}

/* ---- the one matcher of conditions ------------------------------------------- */

bool pf_conditions_match(const struct pf_conditions *c, const struct pf_query *q)
{
        struct pf_cidr cidr = { c->cidr_addr, c->cidr_prefix };

        if (c->has_family && c->family != q->addr.family)
                return false;
        if (c->has_cidr && !pf_cidr_match(&cidr, &q->addr))
                return false;
        return !c->program || (q->program && pf_program_match(c->program, q->program));
}

bool pf_policy_uses_programs(const struct pf_policy *p)
{
        for (uint32_t i = 0; i < p->rule_count; i++)
                if (pf_rules_of(p)[i].program)
                        return true;
        return false;
}

void pf_policy_conditions(const struct pf_policy *p, unsigned rule, struct pf_conditions *out)
{
        const struct pf_rule *r = &pf_rules_of(p)[rule - 1];

        *out = (struct pf_conditions){
                .has_family = r->has_family, .family = r->family,
                .has_cidr = r->has_cidr, .cidr_addr = r->cidr.addr, .cidr_prefix = r->cidr.prefix,
                .program = r->program ? pf_string_at(p, r->program) : NULL,
        };
}

static bool rule_matches(const struct pf_policy *p, uint32_t index, const struct pf_query *q)
{
        struct pf_conditions c;

        if (!pf_rules_of(p)[index].conditional)
                return true;
        pf_policy_conditions(p, index + 1, &c);
        return pf_conditions_match(&c, q);
}

/* ---- decisions ------------------------------------------------------------------ */

static void verdict_of(const struct pf_policy *p, struct pf_step step, struct pf_verdict *out)
{
        out->action = step.action;
        out->rule = step.rule;
        out->target = step.action == PF_REMAP ? step.target : 0;
        out->err = step.action == PF_REFUSE ? p->refuse_errno : 0;
}

void pf_decide(const struct pf_policy *p, const struct pf_query *q, struct pf_verdict *out)
{
        const unsigned port = q->port;
        const enum pf_proto proto = q->proto;
        struct pf_slot slot;

        *out = (struct pf_verdict){ .action = PF_ALLOW };
        if (port == 0)
                return;
        out->guarded = pf_portset_has(&p->guarded[proto], port);
        slot = slot_of(p, proto, port);
        /* The common case, precomputed: an unconditional first rule. */
        if (slot.rule && !(pf_kinds_of(p)[slot.rule - 1] & PF_KIND_CONDITIONAL)) {
                verdict_of(p, (struct pf_step){ .action = pf_kinds_of(p)[slot.rule - 1] & PF_KIND_ACTION,
                                                .target = slot.target, .rule = slot.rule }, out);
                return;
        }
        for (uint32_t i = first_rule(p, slot); i < p->rule_count; i = next_rule(p, proto, port, i)) {
                if (rule_matches(p, i, q)) {
                        verdict_of(p, rule_step(p, i, port), out);
                        return;
                }
        }
        verdict_of(p, fallback_step(p, proto, port, slot), out);
}

int pf_policy_chain(const struct pf_policy *p, enum pf_proto proto, unsigned port,
                    struct pf_step *steps, unsigned max)
{
        struct pf_slot slot = slot_of(p, proto, port);
        unsigned n = 0;

        for (uint32_t i = port ? first_rule(p, slot) : p->rule_count; i < p->rule_count;
             i = next_rule(p, proto, port, i)) {
                if (!pf_rules_of(p)[i].conditional)
                        break;
                if (n + 1 == max)
                        return -E2BIG;
                steps[n++] = rule_step(p, i, port);
        }
        if (n == max)
                return -E2BIG;
        steps[n++] = fallback_step(p, proto, port, slot);
        return (int)n;
}

void pf_policy_fallback(const struct pf_policy *p, enum pf_proto proto, unsigned port,
                        struct pf_step *out)
{
        *out = fallback_step(p, proto, port, slot_of(p, proto, port));
}

void pf_policy_server_ports(const struct pf_policy *p, enum pf_proto proto, struct pf_portset *out)
{
        bool pool_used = p->default_action == PF_REMAP && !pf_portset_empty(&p->guarded[proto]);

        pf_portset_clear(out);
        for (uint32_t i = 0; i < p->rule_count; i++) {
                const struct pf_rule *rule = &pf_rules_of(p)[i];
                struct pf_portset ports;

                if (!(rule->protos & PF_PROTO_BIT(proto)))
                        continue;
                pf_portset_clear(&ports);
                if (!rule->has_ports)
                        pf_portset_fill(&ports);
                for (uint32_t k = 0; k < rule->range_count; k++)
                        pf_portset_add_range(&ports, pf_ranges_of(p)[rule->first_range + k].lo,
                                             pf_ranges_of(p)[rule->first_range + k].hi);
                if (rule->action == PF_ALLOW && !rule->conditional) {
                        if (!rule->has_ports)   /* "every port": the guarded ones it frees */
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

void pf_policy_landlock_tcp(const struct pf_policy *p, struct pf_portset *out)
{
        struct pf_step steps[8];
        struct pf_portset servers;

        pf_portset_clear(out);
        for (unsigned port = 1; port <= PF_PORT_MAX; port++) {
                int n = pf_policy_chain(p, PF_TCP, port, steps, 8);
                bool allowed = n < 0;   /* past what is looked at: never refuse a bind the policy may allow */

                for (int i = 0; i < n && !allowed; i++)
                        allowed = steps[i].action == PF_ALLOW || steps[i].action == PF_LOG;
                if (allowed)
                        pf_portset_add(out, port);
        }
        pf_policy_server_ports(p, PF_TCP, &servers);
        pf_portset_union(out, &servers);
}

void pf_policy_unreserved_server_ports(const struct pf_policy *p, const struct pf_portset *range,
                                       const struct pf_portset *reserved, struct pf_portset *out)
{
        struct pf_portset udp;

        pf_policy_server_ports(p, PF_TCP, out);
        pf_policy_server_ports(p, PF_UDP, &udp);
        pf_portset_union(out, &udp);
        pf_portset_intersect(out, range);
        pf_portset_subtract(out, reserved);
}

/* ---- accessors ------------------------------------------------------------- */

const char *pf_policy_name(const struct pf_policy *p) { return pf_string_at(p, p->name); }
const struct pf_portset *pf_policy_guarded(const struct pf_policy *p, enum pf_proto proto)
{
        return &p->guarded[proto];
}
const struct pf_portset *pf_policy_pool(const struct pf_policy *p) { return &p->pool; }
const struct pf_portset *pf_policy_client_ports(const struct pf_policy *p) { return &p->client_ports; }
unsigned pf_policy_rule_count(const struct pf_policy *p) { return p->rule_count; }
unsigned pf_policy_rule_line(const struct pf_policy *p, unsigned rule)
{
        return rule >= 1 && rule <= p->rule_count ? pf_rules_of(p)[rule - 1].line : 0;
}
const char *pf_policy_rule_file(const struct pf_policy *p, unsigned rule)
{
        uint32_t file = rule >= 1 && rule <= p->rule_count ? pf_rules_of(p)[rule - 1].file : 0;

        return file ? pf_string_at(p, file) : pf_policy_name(p);
}
enum pf_action pf_policy_rule_action(const struct pf_policy *p, unsigned rule)
{
        return rule >= 1 && rule <= p->rule_count ? pf_rules_of(p)[rule - 1].action : PF_ALLOW;
}
bool pf_policy_redirect_connect(const struct pf_policy *p) { return p->redirect_connect; }
bool pf_policy_steer(const struct pf_policy *p) { return p->steer; }

bool pf_policy_moves_servers(const struct pf_policy *p)
{
        for (unsigned rule = 1; rule <= p->rule_count; rule++)
                if (pf_rules_of(p)[rule - 1].action == PF_REMAP)
                        return true;
        return p->default_action == PF_REMAP &&
               (!pf_portset_empty(&p->guarded[PF_TCP]) || !pf_portset_empty(&p->guarded[PF_UDP]));
}

bool pf_policy_landlock(const struct pf_policy *p) { return p->landlock; }
enum pf_getsockname pf_policy_getsockname(const struct pf_policy *p) { return p->getsockname; }
enum pf_action pf_policy_unbound_listen(const struct pf_policy *p) { return p->unbound_listen; }
enum pf_on_error pf_policy_on_error(const struct pf_policy *p) { return p->on_error; }
int pf_policy_refuse_errno(const struct pf_policy *p) { return p->refuse_errno; }
void pf_policy_log(const struct pf_policy *p, struct pf_log_settings *out)
{
        out->to = p->log_to;
        out->path = p->log_path ? pf_string_at(p, p->log_path) : NULL;
        out->level = p->log_level;
        out->format = p->log_format;
}

void pf_decide_chosen(const struct pf_policy *policy, const struct pf_query *query, struct pf_verdict *out)
{
        pf_decide(policy, query, out);
        if (out->action == PF_REMAP) {
                out->action = PF_REFUSE;
                out->target = 0;
                out->err = pf_policy_refuse_errno(policy);
        }
}

bool pf_policy_plain_allow(const struct pf_policy *p, unsigned port)
{
        return pf_portset_has(&p->plain_allow, port);
}

const struct pf_portset *pf_policy_plain_allow_set(const struct pf_policy *p)
{
        return &p->plain_allow;
}
