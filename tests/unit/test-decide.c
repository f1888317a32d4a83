/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "policy.h"

static const char policy_a[] =
        "version = 1;\n"
        "ephemeral = \"40000-49999\";\n"
        "refuse_errno = \"EACCES\";\n"
        "remap_pool = \"7000-7009\";\n"
        "rules = (\n"
        "  { ports = \"8080\"; action = \"allow\"; },\n"                               /* 1 */
        "  { ports = \"40000-40009\"; proto = \"tcp\"; action = \"remap\"; to = 7200; },\n" /* 2 */
        "  { ports = \"41000-41019\"; action = \"remap\"; },\n"                         /* 3 */
        "  { program = \"redis-*\"; action = \"log\"; },\n"                             /* 4 */
        "  { address = \"127.0.0.0/8\"; ports = \"42000-42999\"; action = \"allow\"; },\n" /* 5 */
        "  { family = \"ipv6\"; ports = \"43000\"; action = \"allow\"; },\n"            /* 6 */
        "  { ports = \"44000\"; action = \"log\"; },\n"                                 /* 7 */
        "  { ports = \"44000\"; action = \"allow\"; },\n"                               /* 8 */
        "  { ports = \"9090\"; action = \"refuse\"; },\n"                               /* 9 */
        "  { ports = \"46000-46003\"; program = \"app\"; action = \"remap\"; },\n"      /* 10 */
        "  { ports = \"47000-47001,47010\"; action = \"remap\"; to = 7500; }\n"         /* 11 */
        ");\n";

struct decide_case {
        const char *proto;
        const char *addr;
        unsigned port;
        const char *program;
        enum pf_action action;
        unsigned target;
        int err;
        unsigned rule;
        bool guarded;
};

static void run_cases(const char *text, const struct decide_case *cases, size_t count)
{
        struct pf_policy *policy = NULL;
        struct pf_diag diag;

        assert_int_equal(pf_policy_load_text(text, "decide.conf", &policy, &diag), 0);
        pf_diag_free(&diag);
        for (size_t i = 0; i < count; i++) {
                const struct decide_case *c = &cases[i];
                struct pf_query q = { .port = (uint16_t)c->port, .program = c->program };
                struct pf_verdict v;

                print_message("case %zu: %u/%s %s %s\n", i, c->port, c->proto, c->addr,
                              c->program ? c->program : "-");
                assert_int_equal(pf_proto_parse(c->proto, &q.proto), 0);
                assert_int_equal(pf_addr_parse(c->addr, &q.addr), 0);
                pf_decide(policy, &q, &v);
                assert_string_equal(pf_action_name(v.action), pf_action_name(c->action));
                assert_int_equal(v.target, c->target);
                assert_int_equal(v.err, c->err);
                assert_int_equal(v.rule, c->rule);
                assert_int_equal(v.guarded, c->guarded);
        }
        pf_policy_free(policy);
}

static void test_decide_rules(void **state)
{
        static const struct decide_case cases[] = {
                /* port 0 always passes */
                { "tcp", "0.0.0.0", 0, NULL, PF_ALLOW, 0, 0, 0, false },
                { "udp", "::", 0, "redis-server", PF_ALLOW, 0, 0, 0, false },
                /* unguarded, no rule */
                { "tcp", "0.0.0.0", 8081, NULL, PF_ALLOW, 0, 0, 0, false },
                { "tcp", "0.0.0.0", 8080, NULL, PF_ALLOW, 0, 0, 1, false },
                /* a rule refuses an unguarded port too */
                { "udp", "127.0.0.1", 9090, NULL, PF_REFUSE, 0, EACCES, 9, false },
                /* remap with "to": port offset kept */
                { "tcp", "0.0.0.0", 40000, NULL, PF_REMAP, 7200, 0, 2, true },
                { "tcp", "::1", 40009, NULL, PF_REMAP, 7209, 0, 2, true },
                /* proto = tcp: udp falls through to the default */
                { "udp", "0.0.0.0", 40000, NULL, PF_REFUSE, 0, EACCES, 0, true },
                /* remap into the pool, wrapping around */
                { "tcp", "0.0.0.0", 41000, NULL, PF_REMAP, 7000, 0, 3, true },
                { "udp", "0.0.0.0", 41009, NULL, PF_REMAP, 7009, 0, 3, true },
                { "tcp", "0.0.0.0", 41010, NULL, PF_REMAP, 7000, 0, 3, true },
                { "tcp", "0.0.0.0", 41019, NULL, PF_REMAP, 7009, 0, 3, true },
                /* program globs */
                { "tcp", "0.0.0.0", 45000, "redis-server", PF_LOG, 0, 0, 4, true },
                { "tcp", "0.0.0.0", 45000, "redis", PF_REFUSE, 0, EACCES, 0, true },
                { "tcp", "0.0.0.0", 45000, NULL, PF_REFUSE, 0, EACCES, 0, true },
                { "tcp", "0.0.0.0", 8082, "redis-cli", PF_LOG, 0, 0, 4, false },
                /* addresses, v4-mapped matching as IPv4 */
                { "tcp", "127.0.0.1", 42000, NULL, PF_ALLOW, 0, 0, 5, true },
                { "tcp", "127.255.0.9", 42999, NULL, PF_ALLOW, 0, 0, 5, true },
                { "tcp", "::ffff:127.0.0.1", 42000, NULL, PF_ALLOW, 0, 0, 5, true },
                { "tcp", "10.0.0.1", 42000, NULL, PF_REFUSE, 0, EACCES, 0, true },
                { "tcp", "::1", 42000, NULL, PF_REFUSE, 0, EACCES, 0, true },
                { "tcp", "0.0.0.0", 42000, NULL, PF_REFUSE, 0, EACCES, 0, true },
                /* families */
                { "tcp", "::", 43000, NULL, PF_ALLOW, 0, 0, 6, true },
                { "udp", "::1", 43000, NULL, PF_ALLOW, 0, 0, 6, true },
                { "tcp", "0.0.0.0", 43000, NULL, PF_REFUSE, 0, EACCES, 0, true },
                { "tcp", "::ffff:1.2.3.4", 43000, NULL, PF_REFUSE, 0, EACCES, 0, true },
                /* first match wins */
                { "tcp", "0.0.0.0", 44000, NULL, PF_LOG, 0, 0, 7, true },
                { "tcp", "0.0.0.0", 44000, "redis-server", PF_LOG, 0, 0, 4, true },
                /* conditional remap into the pool, by offset in its own range */
                { "tcp", "0.0.0.0", 46003, "app", PF_REMAP, 7003, 0, 10, true },
                { "tcp", "0.0.0.0", 46003, "app2", PF_REFUSE, 0, EACCES, 0, true },
                /* "to" over a range list: offset within the list */
                { "tcp", "0.0.0.0", 47001, NULL, PF_REMAP, 7501, 0, 11, true },
                { "tcp", "0.0.0.0", 47010, NULL, PF_REMAP, 7502, 0, 11, true },
                { "tcp", "0.0.0.0", 47005, NULL, PF_REFUSE, 0, EACCES, 0, true },
                /* edges of the guarded set */
                { "tcp", "0.0.0.0", 39999, NULL, PF_ALLOW, 0, 0, 0, false },
                { "tcp", "0.0.0.0", 49999, NULL, PF_REFUSE, 0, EACCES, 0, true },
                { "tcp", "0.0.0.0", 50000, NULL, PF_ALLOW, 0, 0, 0, false },
                { "tcp", "0.0.0.0", 65535, NULL, PF_ALLOW, 0, 0, 0, false },
        };
        (void)state;
        run_cases(policy_a, cases, sizeof(cases) / sizeof(cases[0]));
}

/* default_action = remap: the port's offset in the guarded set, wrapped into
 * the pool; the same answer with or without a conditional rule in the way. */
/* A port the kernel chose in a narrowed range: what the policy moves is
 * refused with its errno (the port is taken already), the rest as decided. */
static void test_chosen_port(void **state)
{
        static const char text[] = "version = 1;\nephemeral = \"40000-40099\";\ndefault_action = \"refuse\";\n"
                                   "refuse_errno = \"EACCES\";\n"
                                   "rules = ( { ports = \"40001\"; action = \"remap\"; to = 7001; },\n"
                                   "          { ports = \"40002\"; action = \"log\"; } );\n";
        static const struct { unsigned port; enum pf_action action; int err; unsigned rule; } cases[] = {
                { 40001, PF_REFUSE, EACCES, 1 }, { 40002, PF_LOG, 0, 2 }, { 40003, PF_REFUSE, EACCES, 0 },
                { 8080, PF_ALLOW, 0, 0 },
        };
        struct pf_policy *policy = NULL;
        struct pf_diag diag;

        (void)state;
        assert_int_equal(pf_policy_load_text(text, "chosen.conf", &policy, &diag), 0);
        pf_diag_free(&diag);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct pf_query q = { .proto = PF_TCP, .port = (uint16_t)cases[i].port };
                struct pf_verdict v;

                assert_int_equal(pf_addr_parse("127.0.0.1", &q.addr), 0);
                pf_decide_chosen(policy, &q, &v);
                assert_int_equal(v.action, cases[i].action);
                assert_int_equal(v.err, cases[i].err);
                assert_int_equal(v.target, 0);
                assert_int_equal(v.rule, cases[i].rule);
        }
        pf_policy_free(policy);
}

/* Learning's policy: the base's guarded ports, logged; nothing else. */
static void test_log_only(void **state)
{
        static const char text[] = "version = 1;\nephemeral = \"40000-40099\";\ndefault_action = \"remap\";\n"
                                   "rules = ( { ports = \"8080\"; action = \"refuse\"; } );\n";
        struct pf_policy *base = NULL, *learning = NULL;
        struct pf_diag diag;
        struct pf_query q = { .proto = PF_UDP };
        struct pf_verdict v;

        (void)state;
        assert_int_equal(pf_policy_load_text(text, "base.conf", &base, &diag), 0);
        pf_diag_free(&diag);
        assert_int_equal(pf_policy_log_only(base, &learning), 0);
        assert_int_equal(pf_addr_parse("0.0.0.0", &q.addr), 0);
        for (unsigned port = 39999; port <= 40100; port++) {
                q.port = (uint16_t)port;
                pf_decide(learning, &q, &v);
                assert_int_equal(v.action, port >= 40000 && port <= 40099 ? PF_LOG : PF_ALLOW);
        }
        q.port = 8080;
        pf_decide(learning, &q, &v);
        assert_int_equal(v.action, PF_ALLOW);      /* the base's rules are not learning's */
        pf_policy_free(learning);
        pf_policy_free(base);
}

/* Whether a policy may move a server: what run's steering and check's note
 * are decided by. */
static void test_moves_servers(void **state)
{
        static const struct { const char *text; bool moves; } cases[] = {
                { "version = 1;\nephemeral = \"40000-40099\";\ndefault_action = \"refuse\";\n", false },
                { "version = 1;\nephemeral = \"40000-40099\";\ndefault_action = \"remap\";\n", true },
                { "version = 1;\nephemeral = \"40000-40099\";\ndefault_action = \"refuse\";\n"
                  "rules = ( { ports = \"40005\"; action = \"remap\"; to = 7005; } );\n", true },
                { "version = 1;\nephemeral = \"40000-40099\";\ndefault_action = \"allow\";\n"
                  "rules = ( { ports = \"40005\"; action = \"log\"; } );\n", false },
        };

        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct pf_policy *policy = NULL;
                struct pf_diag diag;

                print_message("%zu\n", i);
                assert_int_equal(pf_policy_load_text(cases[i].text, "moves.conf", &policy, &diag), 0);
                pf_diag_free(&diag);
                assert_int_equal(pf_policy_moves_servers(policy), cases[i].moves);
                pf_policy_free(policy);
        }
}

static void test_default_remap_wraps(void **state)
{
        static const char text[] =
                "version = 1;\n"
                "ephemeral = \"50000-50009\";\n"
                "default_action = \"remap\";\n"
                "remap_pool = \"7000-7002,7100\";\n"
                "rules = ( { ports = \"50005\"; program = \"x\"; action = \"allow\"; } );\n";
        static const struct decide_case cases[] = {
                { "tcp", "0.0.0.0", 50000, NULL, PF_REMAP, 7000, 0, 0, true },
                { "tcp", "0.0.0.0", 50002, NULL, PF_REMAP, 7002, 0, 0, true },
                { "tcp", "0.0.0.0", 50003, NULL, PF_REMAP, 7100, 0, 0, true },
                { "udp", "0.0.0.0", 50004, NULL, PF_REMAP, 7000, 0, 0, true },
                { "tcp", "0.0.0.0", 50005, NULL, PF_REMAP, 7001, 0, 0, true },
                { "tcp", "0.0.0.0", 50005, "x", PF_ALLOW, 0, 0, 1, true },
                { "tcp", "0.0.0.0", 50009, NULL, PF_REMAP, 7001, 0, 0, true },
        };
        (void)state;
        run_cases(text, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_glob(void **state)
{
        static const struct { const char *pattern, *name; bool match; } cases[] = {
                { "redis-server", "redis-server", true },
                { "redis-server", "redis-serve", false },
                { "redis-*", "redis-server", true },
                { "redis-*", "redis-", true },
                { "redis-*", "redis", false },
                { "*", "anything", true },
                { "*", "", true },
                { "", "", true },
                { "", "a", false },
                { "?ginx", "nginx", true },
                { "?ginx", "ginx", false },
                { "*sql*", "postgresql-15", true },
                { "a*b*c", "aXbYbZc", true },
                { "a*b*c", "aXbYbZ", false },
                { "[np]ginx", "nginx", true },
                { "[np]ginx", "pginx", true },
                { "[!n]ginx", "nginx", false },
                { "[^n]ginx", "xginx", true },
                { "python3.[0-9]*", "python3.11", true },
                { "python3.[0-9]*", "python3.x", false },
                { "[abc", "[abc", true },       /* unterminated: literal */
                { "java*", "javac", true },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                print_message("%s ~ %s\n", cases[i].pattern, cases[i].name);
                assert_int_equal(pf_glob_match(cases[i].pattern, cases[i].name), cases[i].match);
        }
}

static void test_address_rules(void **state)
{
        static const char text[] =
                "version = 1;\n"
                "ephemeral = \"50000-50009\";\n"
                "rules = (\n"
                "  { address = \"::ffff:10.0.0.0/104\"; action = \"allow\"; },\n"
                "  { address = \"fd00::/8\"; action = \"log\"; },\n"
                "  { address = \"192.168.1.7\"; action = \"allow\"; }\n"
                ");\n";
        static const struct decide_case cases[] = {
                { "tcp", "10.200.0.1", 50000, NULL, PF_ALLOW, 0, 0, 1, true },
                { "tcp", "::ffff:10.1.2.3", 50000, NULL, PF_ALLOW, 0, 0, 1, true },
                { "tcp", "11.0.0.1", 50000, NULL, PF_REFUSE, 0, EADDRINUSE, 0, true },
                { "udp", "fd12:3456::1", 50001, NULL, PF_LOG, 0, 0, 2, true },
                { "udp", "fe80::1", 50001, NULL, PF_REFUSE, 0, EADDRINUSE, 0, true },
                { "tcp", "192.168.1.7", 50002, NULL, PF_ALLOW, 0, 0, 3, true },
                { "tcp", "192.168.1.8", 50002, NULL, PF_REFUSE, 0, EADDRINUSE, 0, true },
        };
        (void)state;
        run_cases(text, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_addr_set_in6_maps_v4(void **state)
{
        struct in6_addr mapped;
        struct pf_addr addr;

        (void)state;
        assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.1", &mapped), 1);
        pf_addr_set_in6(&addr, &mapped);
        assert_int_equal(addr.family, PF_IPV4);
        assert_int_equal(ntohl(addr.v4.s_addr), 0xc0000201);
        assert_int_equal(pf_addr_parse("not-an-address", &addr), -EINVAL);
}

/* The chain of steps an enforcer walks gives what pf_decide() gives, for
 * every port of both protocols and a spread of addresses and programs. */
static void test_chain_matches_decide(void **state)
{
        static const struct { const char *addr, *program; } queries[] = {
                { "0.0.0.0", NULL }, { "127.0.0.1", NULL }, { "::1", "redis-server" },
                { "::ffff:127.0.0.5", "app" }, { "10.1.1.1", "app" }, { "::", "nginx" },
        };
        struct pf_policy *policy = NULL;
        struct pf_diag diag;

        (void)state;
        assert_int_equal(pf_policy_load_text(policy_a, "decide.conf", &policy, &diag), 0);
        pf_diag_free(&diag);
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                for (unsigned port = 0; port <= PF_PORT_MAX; port++) {
                        struct pf_step steps[4];
                        int n = pf_policy_chain(policy, proto, port, steps, 4);

                        assert_true(n >= 1);
                        assert_false(steps[n - 1].conditional);
                        for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
                                struct pf_query q = { .proto = proto, .port = (uint16_t)port,
                                                      .program = queries[i].program };
                                struct pf_verdict v;
                                int k = 0;

                                assert_int_equal(pf_addr_parse(queries[i].addr, &q.addr), 0);
                                for (; k < n - 1; k++) {
                                        struct pf_conditions c;

                                        pf_policy_conditions(policy, steps[k].rule, &c);
                                        if (pf_conditions_match(&c, &q))
                                                break;
                                }
                                pf_decide(policy, &q, &v);
                                assert_int_equal(steps[k].action, v.action);
                                assert_int_equal(steps[k].target, v.target);
                                assert_int_equal(steps[k].rule, v.rule);
                        }
                }
        }
        pf_policy_free(policy);
}

static void test_chain_too_long(void **state)
{
        static const char text[] =
                "version = 1;\nephemeral = \"50000-50009\";\n"
                "rules = ( { program = \"a\"; action = \"allow\"; },\n"
                "          { program = \"b\"; action = \"allow\"; },\n"
                "          { program = \"c\"; action = \"allow\"; } );\n";
        struct pf_policy *policy = NULL;
        struct pf_diag diag;
        struct pf_step steps[4];

        (void)state;
        assert_int_equal(pf_policy_load_text(text, "chain.conf", &policy, &diag), 0);
        pf_diag_free(&diag);
        assert_int_equal(pf_policy_chain(policy, PF_TCP, 50000, steps, 3), -E2BIG);
        assert_int_equal(pf_policy_chain(policy, PF_TCP, 50000, steps, 4), 4);
        assert_int_equal(steps[3].action, PF_REFUSE);
        pf_policy_free(policy);
}

/* Every errno has its name in log lines, not only those a policy can name. */
static void test_errno_names(void **state)
{
        (void)state;
        assert_string_equal(pf_errno_name(EADDRINUSE), "EADDRINUSE");
        assert_string_equal(pf_errno_name(EINPROGRESS), "EINPROGRESS");
        assert_string_equal(pf_errno_name(ECONNREFUSED), "ECONNREFUSED");
        assert_string_equal(pf_errno_name(-12345), "EUNKNOWN");
        int err = 0;

        assert_int_equal(pf_errno_parse("EACCES", &err), 0);
        assert_int_equal(err, EACCES);
        assert_int_equal(pf_errno_parse("EINPROGRESS", &err), -EINVAL);  /* not a refuse_errno */
}

static void test_glob_comm_form(void **state)
{
        (void)state;
        assert_int_equal(pf_glob_comm_form("redis-server"), PF_COMM_EXACT);
        assert_int_equal(pf_glob_comm_form("redis-*"), PF_COMM_EXACT);
        assert_int_equal(pf_glob_comm_form("*-server"), PF_COMM_EXACT);
        assert_int_equal(pf_glob_comm_form("p?thon*3"), PF_COMM_EXACT);
        assert_int_equal(pf_glob_comm_form("a-very-long-program-name"), PF_COMM_TRUNCATED);
        assert_int_equal(pf_glob_comm_form("*sql*"), PF_COMM_UNSUPPORTED);
        assert_int_equal(pf_glob_comm_form("[np]ginx"), PF_COMM_UNSUPPORTED);
}

/* The matcher both enforcers share: a thread's comm (15 characters at
 * most) against the glob as the kernel cuts it. */
static void test_program_match_on_the_comm(void **state)
{
        (void)state;
        assert_true(pf_program_match("abcdefghijkl?no", "abcdefghijklmno"));
        assert_true(pf_program_match("a-very-long-program-name", "a-very-long-pro"));  /* cut to 15 */
        assert_true(pf_program_match("prefix-a-very-long-*", "prefix-a-very-l"));
        assert_false(pf_program_match("*-name", "my-very-long-se"));
        assert_true(pf_program_match("worker-?", "worker-1"));
        assert_false(pf_program_match("worker-?", "worker-10"));
        assert_true(pf_program_match("[np]ginx", "nginx"));                     /* the shim's own */
        assert_null(pf_program_glob_note("redis-*"));
        assert_null(pf_program_glob_note("redis-server"));
        assert_non_null(pf_program_glob_note("*-name"));
        assert_non_null(pf_program_glob_note("abcde*mnop"));
        assert_non_null(pf_program_glob_note("abcdefghijkl?no"));
        assert_non_null(pf_program_glob_note("a-very-long-program-name"));
        assert_non_null(pf_program_glob_note("*sql*"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_decide_rules),
                cmocka_unit_test(test_program_match_on_the_comm),
                cmocka_unit_test(test_default_remap_wraps),
                cmocka_unit_test(test_chosen_port),
                cmocka_unit_test(test_log_only),
                cmocka_unit_test(test_moves_servers),
                cmocka_unit_test(test_glob),
                cmocka_unit_test(test_address_rules),
                cmocka_unit_test(test_addr_set_in6_maps_v4),
                cmocka_unit_test(test_chain_matches_decide),
                cmocka_unit_test(test_chain_too_long),
                cmocka_unit_test(test_glob_comm_form),
                cmocka_unit_test(test_errno_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
