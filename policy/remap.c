/* SPDX-License-Identifier: MIT */
/* Remap arithmetic: where a remapped port goes. A target is a pure function
 * of the policy (the rule's "to" plus the port's offset in the rule's ports,
 * or that offset, for the default the offset in the rank domain: the guarded set,
 * with the host's whole ip_local_port_range when it comes from there), wrapped
 * around the pool, so a client in another process computes the very port
 * the server got. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "policy-internal.h"

uint16_t pf_pool_nth(const struct pf_policy *p, uint32_t n)
{
        const struct pf_pool_range *pool = pf_pool_of(p);
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

uint32_t pf_guarded_rank(const struct pf_policy *p, enum pf_proto proto, unsigned port)
{
        uint64_t below = p->rank_domain[proto].words[port / 64] & (((uint64_t)1 << (port % 64)) - 1);

        return p->guarded_rank[proto][port / 64] + (uint32_t)__builtin_popcountll(below);
}

uint32_t pf_rule_rank(const struct pf_policy *p, const struct pf_rule *rule, unsigned port)
{
        const struct pf_range *ranges = pf_ranges_of(p) + rule->first_range;
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

uint16_t pf_rule_target_at(const struct pf_policy *p, const struct pf_rule *rule, uint32_t rank)
{
        return rule->has_to ? (uint16_t)(rule->to + rank) : pf_pool_nth(p, rank);
}

bool pf_rule_covers(const struct pf_policy *p, const struct pf_rule *rule, unsigned port)
{
        const struct pf_range *ranges = pf_ranges_of(p) + rule->first_range;
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

uint16_t pf_rule_target(const struct pf_policy *p, const struct pf_rule *rule, unsigned port)
{
        return pf_rule_target_at(p, rule, pf_rule_rank(p, rule, port));
}

void pf_rank_domain_fill(struct pf_policy *p, bool uses_host)
{
        struct pf_portset host;
        char why[PF_WHY_SIZE];
        bool have_host = uses_host && pf_host_port_range_read(PF_PROC_PORT_RANGE, &host, why) == 0;

        for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                p->rank_domain[proto] = p->guarded[proto];
                if (have_host)
                        pf_portset_union(&p->rank_domain[proto], &host);
        }
}

void pf_pool_default_of(struct pf_policy *p)
{
        struct pf_portset host;
        char why[PF_WHY_SIZE];

        if (pf_host_port_range_read(PF_PROC_PORT_RANGE, &host, why) == 0)
                pf_pool_default(p->rank_domain, &host, &p->pool);
        else
                pf_pool_default(p->rank_domain, NULL, &p->pool);
}

void pf_pool_default(const struct pf_portset domain[PF_PROTO_COUNT], const struct pf_portset *host,
                     struct pf_portset *out)
{
        pf_portset_clear(out);
        pf_portset_add_range(out, 1024, PF_PORT_MAX);
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++)
                pf_portset_subtract(out, &domain[proto]);
        if (host)
                pf_portset_subtract(out, host);
}

/* Does an unconditional verdict move its port into the pool? */
static bool pool_remap(const struct pf_policy *p, const struct pf_step *step)
{
        return step->action == PF_REMAP &&
               (step->rule == 0 || !pf_rules_of(p)[step->rule - 1].has_to);
}

int pf_policy_pool_share(const struct pf_policy *p, struct pf_pool_share *out)
{
        uint32_t *count = malloc((PF_PORT_MAX + 1) * sizeof(*count));  /* sources per pool port */

        memset(out, 0, sizeof(*out));
        if (!count)
                return -ENOMEM;
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                memset(count, 0, (PF_PORT_MAX + 1) * sizeof(*count));
                for (unsigned port = 1; port <= PF_PORT_MAX; port++) {
                        struct pf_step step;

                        pf_policy_fallback(p, (enum pf_proto)proto, port, &step);
                        if (!pool_remap(p, &step))
                                continue;
                        out->sources += proto == PF_TCP;
                        if (++count[step.target] <= out->most)
                                continue;
                        out->most = count[step.target];
                        out->proto = (enum pf_proto)proto;
                        out->target = step.target;
                }
        }
        free(count);
        if (out->most < 2)
                return 0;
        /* The first two ports that share the busiest target. */
        for (unsigned port = 1, found = 0; port <= PF_PORT_MAX && found < 2; port++) {
                struct pf_step step;

                pf_policy_fallback(p, out->proto, port, &step);
                if (pool_remap(p, &step) && step.target == out->target)
                        out->example[found++] = (uint16_t)port;
        }
        return 0;
}
