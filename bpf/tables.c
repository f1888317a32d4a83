/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tables.h"

int pf_bpf_fail(int r, char *why, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, PF_WHY_SIZE, fmt, ap);
        va_end(ap);
        return r < 0 ? r : -EINVAL;
}

/* The chain of (proto, port) as a span of its own. */
static int port_span(const struct pf_policy *p, unsigned proto, unsigned port, struct pf_bpf_span *out,
                     char *why)
{
        struct pf_step steps[PF_BPF_CHAIN];
        int n = pf_policy_chain(p, proto, port, steps, PF_BPF_CHAIN);

        if (n < 0)
                return pf_bpf_fail(n, why, "port %u/%s is covered by more than %d rules with conditions: "
                            "the kernel checks at most %d", port, pf_proto_name(proto),
                            PF_BPF_CHAIN - 1, PF_BPF_CHAIN - 1);
        memset(out, 0, sizeof(*out));
        out->key = PF_BPF_SPAN_KEY(proto, port);
        out->count = (uint8_t)n;
        for (int i = 0; i < PF_BPF_CHAIN; i++) {        /* unused steps repeat the last */
                const struct pf_step *s = &steps[i < n ? i : n - 1];

                out->step[i] = (struct pf_bpf_step){
                        .rule = (uint16_t)s->rule,
                        .target = s->action == PF_REMAP ? s->target : 0,
                        .action = (uint8_t)(s->action | PF_BPF_FILLED),
                        .conditional = s->conditional && i < n - 1,
                };
        }
        return 0;
}

/* Does next (one port) continue span, its remap targets one further each? */
static bool continues(const struct pf_bpf_span *span, const struct pf_bpf_span *next)
{
        unsigned port = next->key & 0xffff;

        if ((span->key >> 16) != (next->key >> 16) || span->count != next->count)
                return false;
        for (int i = 0; i < PF_BPF_CHAIN; i++) {
                struct pf_bpf_step moved = pf_bpf_span_step(span, (unsigned)i, port);

                if (memcmp(&moved, &next->step[i], sizeof(moved)) != 0)
                        return false;
        }
        return true;
}

int pf_bpf_build_spans(const struct pf_policy *p, struct pf_bpf_span **out, uint32_t *count,
                       char *why)
{
        struct pf_bpf_span *spans = NULL, next;
        uint32_t n = 0, capacity = 0;
        int r;

        for (unsigned proto = 0; proto < PF_BPF_PROTOS; proto++) {
                for (unsigned port = 0; port < PF_BPF_PORTS; port++) {
                        if ((r = port_span(p, proto, port, &next, why)) < 0) {
                                free(spans);
                                return r;
                        }
                        if (n > 0 && continues(&spans[n - 1], &next))
                                continue;
                        if (n == capacity) {
                                struct pf_bpf_span *grown;

                                capacity = capacity ? 2 * capacity : 64;
                                grown = realloc(spans, capacity * sizeof(*spans));
                                if (!grown) {
                                        free(spans);
                                        return pf_bpf_fail(-ENOMEM, why, "%s", strerror(ENOMEM));
                                }
                                spans = grown;
                        }
                        spans[n++] = next;
                }
        }
        *out = spans;
        *count = n;
        return 0;
}

/* The index in spans[lo, hi) of the last span whose key is not above key
 * (spans[lo].key <= key: the caller knows). */
static uint32_t search(const struct pf_bpf_span *spans, uint32_t lo, uint32_t hi, uint32_t key)
{
        while (hi - lo > 1) {   /* spans[lo].key <= key < spans[hi].key */
                uint32_t mid = lo + (hi - lo) / 2;

                if (spans[mid].key <= key)
                        lo = mid;
                else
                        hi = mid;
        }
        return lo;
}

int pf_bpf_build_blocks(const struct pf_bpf_span *spans, uint32_t count, struct pf_bpf_block **out, char *why)
{
        struct pf_bpf_block *blocks;

        if (count == 0 || spans[0].key != 0)
                return pf_bpf_fail(-EINVAL, why, "the spans do not start at port 0 of TCP");
        blocks = calloc(PF_BPF_BLOCKS, sizeof(*blocks));
        if (!blocks)
                return pf_bpf_fail(-ENOMEM, why, "%s", strerror(ENOMEM));
        for (uint32_t b = 0, first = 0; b < PF_BPF_BLOCKS; b++) {
                uint32_t start = b << PF_BPF_BLOCK_SHIFT, last;

                first = search(spans, first, count, start);
                last = search(spans, first, count, start + PF_BPF_BLOCK_PORTS - 1);
                blocks[b] = (struct pf_bpf_block){
                        .first = first,
                        .count = last - first + 1,
                        .next_key = last > first ? spans[first + 1].key : UINT32_MAX,
                        .span = spans[first],
                };
        }
        *out = blocks;
        return 0;
}

const struct pf_bpf_span *pf_bpf_find_span(const struct pf_bpf_block *blocks, const struct pf_bpf_span *spans,
                                           unsigned proto, unsigned port)
{
        uint32_t key = PF_BPF_SPAN_KEY(proto, port);
        const struct pf_bpf_block *block = &blocks[(key >> PF_BPF_BLOCK_SHIFT) % PF_BPF_BLOCKS];

        if (key < block->next_key)
                return &block->span;
        return &spans[search(spans, block->first + 1, block->first + block->count, key)];
}

struct pf_bpf_step pf_bpf_span_step(const struct pf_bpf_span *span, unsigned i, unsigned port)
{
        struct pf_bpf_step step = span->step[i];

        if ((step.action & ~PF_BPF_FILLED) == PF_BPF_REMAP)
                step.target = (uint16_t)(step.target + (port - (span->key & 0xffff)));
        return step;
}

/* HEAD or HEAD*TAIL, each cut to the 15 characters a comm keeps. */
static int fill_rule_program(struct pf_bpf_rule *out, const char *glob, unsigned rule, char *why)
{
        struct pf_comm_parts parts;

        if (pf_glob_comm_split(glob, &parts) == PF_COMM_UNSUPPORTED)
                return pf_bpf_fail(-EINVAL, why, "rule %u: program glob '%s': %s", rule, glob,
                            pf_comm_glob_note(PF_COMM_UNSUPPORTED));
        _Static_assert(sizeof(out->head) > PF_COMM_LEN && sizeof(out->tail) > PF_COMM_LEN,
                       "a comm's 15 characters fit the rule");
        out->has_program = 1;
        out->has_star = parts.star;
        out->head_len = (uint8_t)parts.head_len;
        out->tail_len = (uint8_t)parts.tail_len;
        memcpy(out->head, parts.head, parts.head_len);
        memcpy(out->tail, parts.tail, parts.tail_len);
        return 0;
}

static void addr_words(const struct pf_addr *addr, uint32_t words[4])
{
        memset(words, 0, 16);
        if (addr->family == PF_IPV4)
                memcpy(words, &addr->v4, 4);
        else
                memcpy(words, &addr->v6, 16);
}

static bool has_conditions(const struct pf_conditions *c)
{
        return c->has_family || c->has_cidr || c->program;
}

int pf_bpf_build_rules(const struct pf_policy *p, struct pf_bpf_rule **out, uint32_t *count,
                       char *why)
{
        unsigned highest = 0, rules = pf_policy_rule_count(p);
        struct pf_bpf_rule *table;
        struct pf_conditions c;
        int r;

        for (unsigned rule = 1; rule <= rules; rule++) {
                pf_policy_conditions(p, rule, &c);
                if (!has_conditions(&c))
                        continue;
                if (rule > PF_BPF_RULES)
                        return pf_bpf_fail(-E2BIG, why, "rule %u has conditions, but the kernel checks those "
                                    "of the first %d rules only", rule, PF_BPF_RULES);
                highest = rule;
        }
        table = calloc(highest + 1, sizeof(*table));
        if (!table)
                return pf_bpf_fail(-ENOMEM, why, "%s", strerror(ENOMEM));
        for (unsigned rule = 1; rule <= highest; rule++) {
                struct pf_bpf_rule *value = &table[rule];

                pf_policy_conditions(p, rule, &c);
                if (!has_conditions(&c))
                        continue;
                value->has_family = c.has_family;
                value->family = (uint8_t)c.family;
                value->has_cidr = c.has_cidr;
                value->cidr_family = (uint8_t)c.cidr_addr.family;
                value->prefix = (uint8_t)c.cidr_prefix;
                addr_words(&c.cidr_addr, value->addr);
                if (c.program && (r = fill_rule_program(value, c.program, rule, why)) < 0) {
                        free(table);
                        return r;
                }
        }
        *out = table;
        *count = highest + 1;
        return 0;
}
