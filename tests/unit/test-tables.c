/* SPDX-License-Identifier: MIT */
/* The kernel's tables say, port by port, what the policy says: every
 * (proto, port) found in the spans as the programs find it gives the chain
 * pf_policy_chain() gives, and the spans are as few as the policy allows. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tables.h"

static struct pf_policy *load(const char *text)
{
        struct pf_policy *policy = NULL;
        struct pf_diag diag;

        assert_int_equal(pf_policy_load_text(text, "tables.conf", &policy, &diag), 0);
        pf_diag_free(&diag);
        return policy;
}

/* Every port of both protocols, against the policy; the span count. */
static uint32_t check_every_port(const char *text)
{
        struct pf_policy *policy = load(text);
        struct pf_bpf_span *spans = NULL;
        struct pf_bpf_block *blocks = NULL;
        char why[PF_WHY_SIZE];
        uint32_t count = 0;

        assert_int_equal(pf_bpf_build_spans(policy, &spans, &count, why), 0);
        assert_int_equal(pf_bpf_build_blocks(spans, count, &blocks, why), 0);
        for (uint32_t i = 1; i < count; i++)
                assert_true(spans[i - 1].key < spans[i].key);
        for (unsigned proto = 0; proto < PF_PROTO_COUNT; proto++) {
                for (unsigned port = 0; port < 65536; port++) {
                        struct pf_step want[PF_BPF_CHAIN];
                        int n = pf_policy_chain(policy, proto, port, want, PF_BPF_CHAIN);
                        const struct pf_bpf_span *span = pf_bpf_find_span(blocks, spans, proto, port);

                        assert_non_null(span);
                        assert_int_equal(span->count, n);
                        for (int i = 0; i < n; i++) {
                                struct pf_bpf_step got = pf_bpf_span_step(span, (unsigned)i, port);

                                if ((got.action & ~PF_BPF_FILLED) != want[i].action ||
                                    (want[i].action == PF_REMAP && got.target != want[i].target) ||
                                    got.rule != want[i].rule || (i < n - 1 && got.conditional != want[i].conditional))
                                        fail_msg("%u/%u step %d: action %u target %u rule %u, want %u %u %u",
                                                 port, proto, i, got.action & ~PF_BPF_FILLED, got.target,
                                                 got.rule, want[i].action, want[i].target, want[i].rule);
                        }
                }
        }
        free(blocks);
        free(spans);
        pf_policy_free(policy);
        return count;
}

static void shipped_policy_is_a_handful_of_spans(void **state)
{
        (void)state;
        /* 2 protocols x (below, guarded, above) with the pool's two runs. */
        assert_in_range(check_every_port("version = 1;\nephemeral = \"32768-60999\";\n"
                                         "default_action = \"remap\";\n"), 2, 16);
}

static void rules_and_conditions(void **state)
{
        (void)state;
        check_every_port(
                "version = 1;\n"
                "ephemeral = \"40000-49999\";\n"
                "remap_pool = \"7000-7009\";\n"         /* wraps around: many spans */
                "default_action = \"remap\";\n"
                "rules = (\n"
                "  { ports = \"8080\"; action = \"allow\"; },\n"
                "  { ports = \"40000-40009\"; proto = \"tcp\"; action = \"remap\"; to = 7200; },\n"
                "  { ports = \"41000-41019\"; action = \"remap\"; },\n"
                "  { program = \"redis-*\"; action = \"log\"; },\n"
                "  { address = \"127.0.0.0/8\"; ports = \"42000-42999\"; action = \"allow\"; },\n"
                "  { family = \"ipv6\"; ports = \"43000\"; action = \"refuse\"; },\n"
                "  { ports = \"46000-46003\"; program = \"app\"; action = \"remap\"; },\n"
                "  { ports = \"47000-47001,47010\"; action = \"remap\"; to = 7500; }\n"
                ");\n");
}

static void blocks_need_spans_from_port_0(void **state)
{
        struct pf_bpf_span one = { .key = PF_BPF_SPAN_KEY(1, 100) };
        struct pf_bpf_block *blocks = NULL;
        char why[PF_WHY_SIZE];

        (void)state;
        assert_int_equal(pf_bpf_build_blocks(&one, 0, &blocks, why), -EINVAL);
        assert_int_equal(pf_bpf_build_blocks(&one, 1, &blocks, why), -EINVAL);
        assert_null(blocks);
}

/* A span starting inside a block, and one covering a block whole: the
 * block knows both, and its first span answers below the second. */
static void blocks_hold_their_first_span(void **state)
{
        struct pf_bpf_span spans[] = {
                { .key = PF_BPF_SPAN_KEY(0, 0), .count = 1 },
                { .key = PF_BPF_SPAN_KEY(0, 40), .count = 2 },
                { .key = PF_BPF_SPAN_KEY(0, 41), .count = 3 },
                { .key = PF_BPF_SPAN_KEY(1, 0), .count = 1 },
        };
        struct pf_bpf_block *blocks = NULL;
        char why[PF_WHY_SIZE];

        (void)state;
        assert_int_equal(pf_bpf_build_blocks(spans, 4, &blocks, why), 0);
        assert_int_equal(blocks[0].count, 1);
        assert_int_equal(blocks[0].next_key, UINT32_MAX);
        assert_int_equal(blocks[1].first, 0);
        assert_int_equal(blocks[1].count, 3);
        assert_int_equal(blocks[1].next_key, PF_BPF_SPAN_KEY(0, 40));
        assert_int_equal(blocks[2].first, 2);
        assert_int_equal(blocks[2].count, 1);
        assert_int_equal(blocks[2].span.count, 3);
        assert_int_equal(pf_bpf_find_span(blocks, spans, 0, 39)->count, 1);
        assert_int_equal(pf_bpf_find_span(blocks, spans, 0, 40)->count, 2);
        assert_int_equal(pf_bpf_find_span(blocks, spans, 0, 63)->count, 3);
        assert_int_equal(pf_bpf_find_span(blocks, spans, 0, 65535)->count, 3);
        assert_ptr_equal(pf_bpf_find_span(blocks, spans, 1, 7), &blocks[PF_BPF_BLOCKS / 2].span);
        free(blocks);
}

static void rules_table_holds_conditions_at_their_numbers(void **state)
{
        struct pf_policy *policy = load(
                "version = 1;\nephemeral = \"40000-49999\";\n"
                "rules = ( { ports = \"8080\"; action = \"allow\"; },\n"
                "          { ports = \"40001\"; family = \"ipv6\"; action = \"allow\"; },\n"
                "          { ports = \"40002\"; action = \"allow\"; },\n"
                "          { ports = \"40003\"; program = \"web*-1\"; address = \"10.0.0.0/8\"; action = \"allow\"; } );\n");
        struct pf_bpf_rule *rules = NULL;
        char why[PF_WHY_SIZE];
        uint32_t count = 0;

        (void)state;
        assert_int_equal(pf_bpf_build_rules(policy, &rules, &count, why), 0);
        assert_int_equal(count, 5);
        assert_int_equal(rules[1].has_family, 0);
        assert_true(rules[2].has_family && rules[2].family == PF_IPV6);
        assert_int_equal(rules[3].has_family | rules[3].has_cidr | rules[3].has_program, 0);
        assert_true(rules[4].has_program && rules[4].has_star && rules[4].has_cidr);
        assert_int_equal(rules[4].prefix, 8);
        assert_memory_equal(rules[4].head, "web", 3);
        assert_memory_equal(rules[4].tail, "-1", 2);
        free(rules);
        pf_policy_free(policy);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(shipped_policy_is_a_handful_of_spans),
                cmocka_unit_test(rules_and_conditions),
                cmocka_unit_test(blocks_need_spans_from_port_0),
                cmocka_unit_test(blocks_hold_their_first_span),
                cmocka_unit_test(rules_table_holds_conditions_at_their_numbers),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
