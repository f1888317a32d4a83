/* SPDX-License-Identifier: MIT */
/* Loading policies: every broken fixture names its line and its problem, and
 * nothing of a broken policy loads. */
#include <errno.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "policy-internal.h"

static const struct {
        const char *file;
        unsigned line;
        const char *text;
} broken[] = {
        { "bad-version.conf", 1, "unsupported version 2: this portfence reads version 1" },
        { "missing-version.conf", 1, "'version' is missing: start the policy with 'version = 1;'" },
        { "unknown-key.conf", 3, "unknown key 'defualt_action' (did you mean 'default_action'?)" },
        { "wrong-type.conf", 3, "'default_action' must be a string, not an integer" },
        { "unknown-action.conf", 4, "rule 1: action: unknown action 'deny' (allow, log, refuse or remap)" },
        { "unknown-proto.conf", 5, "rule 1: unknown proto 'sctp' (tcp or udp)" },
        { "unknown-family.conf", 4, "rule 1: family: unknown value 'ipv5' (ipv4 or ipv6)" },
        { "unknown-profile.conf", 3, "unknown profile 'windows-xp' in 'ephemeral' (see 'portfence ranges')" },
        { "unknown-errno.conf", 3, "unknown errno name 'EWHATEVER' (e.g. EADDRINUSE, EACCES, EPERM)" },
        { "range-reversed.conf", 4, "rule 1: 'ports': range reversed in '9000-8000'" },
        { "range-outside.conf", 4, "rule 1: 'ports': port outside 1-65535 in '1-65536'" },
        { "port-zero.conf", 2, "'ephemeral': port outside 1-65535 in '0-1023'" },
        { "bad-cidr.conf", 4, "rule 1: bad address or CIDR '10.0.0.0/40'" },
        { "target-guarded.conf", 4, "rule 1: remap targets 49150-49159 are guarded (tcp): choose ports outside 'ephemeral'" },
        { "target-outside.conf", 4, "rule 1: remap target 70000 outside 1-65535" },
        { "target-past-end.conf", 6, "rule 1: remap targets 65500-65599 run past 65535" },
        { "to-without-ports.conf", 4, "rule 1: remap targets 7000-72534 run past 65535" },
        { "empty-pool.conf", 3, "remap needs a port to go to, but remap_pool is empty" },
        { "pool-guarded.conf", 4, "remap_pool ports 49152-49199 are guarded (tcp): a remap target must not be" },
        { "syntax-error.conf", 2, "syntax error" },
        { "missing-action.conf", 4, "rule 1: 'action' is missing" },
        { "to-without-remap.conf", 4, "rule 1: 'to' needs action = \"remap\", not \"allow\"" },
        { "rule-unknown-key.conf", 4, "unknown key 'port' in rule 1 (did you mean 'ports'?)" },
        { "bad-log.conf", 3, "log file 'relative.log' must be an absolute path" },
        { "bad-on-error.conf", 3, "on_error: unknown value 'ignore' (refuse or allow)" },
        { "rules-not-list.conf", 3, "'rules' must be a list ( { ... }, ... ), not a string" },
        { "empty-ephemeral.conf", 2, "'ephemeral' is an empty list: name at least one profile or range" },
        { "rule-not-group.conf", 2, "rule 1 must be a group { ... }, not a string" },
        { "unknown-log-destination.conf", 2, "unknown log destination 'journal' (stderr, syslog or file:PATH)" },
        { "bad-log-level.conf", 2, "log.level: unknown value 'loud' (error, warn, info or debug)" },
        { "bad-log-format.conf", 2, "log.format: unknown value 'xml' (text or json)" },
        { "empty-program.conf", 3, "rule 1: empty program pattern" },
};

/* More rules than a rule number can name: made here, too big to keep. */
static void test_too_many_rules(void **state)
{
        size_t size = 128 + 70000 * 48, len;
        char *text = malloc(size), got[1024];
        struct pf_policy *policy = NULL;
        struct pf_diag diag;

        (void)state;
        assert_non_null(text);
        len = (size_t)snprintf(text, size, "version = 1;\nephemeral = \"40000-40999\";\nrules = (\n");
        for (int i = 0; i < 70000; i++)
                len += (size_t)snprintf(text + len, size - len, "%s{ ports = \"%d\"; action = \"allow\"; }\n",
                                        i ? "," : "", 1000 + i % 60000);
        snprintf(text + len, size - len, ");\n");
        assert_int_equal(pf_policy_load_text(text, "many.conf", &policy, &diag), -EINVAL);
        assert_null(policy);
        assert_string_equal(pf_diag_format(&diag, 0, got, sizeof(got)),
                            "many.conf:3: too many rules: 70000 (at most 65535)");
        pf_diag_free(&diag);
        free(text);
}

static char *fixture(const char *name)
{
        char *path;

        assert_true(asprintf(&path, "%s/%s", PF_TEST_POLICIES, name) > 0);
        return path;
}

static void test_broken_policies(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
                char *path = fixture(broken[i].file);
                char expect[1024], got[1024];
                struct pf_policy *policy = NULL;
                struct pf_diag diag;

                print_message("%s\n", broken[i].file);
                assert_int_equal(pf_policy_load(path, &policy, &diag), -EINVAL);
                assert_null(policy);
                assert_int_equal(diag.count, 1);
                snprintf(expect, sizeof(expect), "%s:%u: %s", path, broken[i].line, broken[i].text);
                assert_string_equal(pf_diag_format(&diag, 0, got, sizeof(got)), expect);
                pf_diag_free(&diag);
                free(path);
        }
}

/* Every error of a file, in line order, not just the first. */
static void test_every_error_reported(void **state)
{
        static const struct { unsigned line; const char *text; } expect[] = {
                { 3, "default_action: unknown action 'deny' (allow, log, refuse or remap)" },
                { 4, "unknown errno name 'ENOPE' (e.g. EADDRINUSE, EACCES, EPERM)" },
                { 6, "rule 1: 'ports': port outside 1-65535 in '70000'" },
                { 7, "unknown key 'progam' in rule 2 (did you mean 'program'?)" },
        };
        char *path = fixture("many-errors.conf");
        struct pf_policy *policy = NULL;
        struct pf_diag diag;

        (void)state;
        assert_int_equal(pf_policy_load(path, &policy, &diag), -EINVAL);
        assert_null(policy);
        assert_int_equal(diag.count, sizeof(expect) / sizeof(expect[0]));
        for (size_t i = 0; i < diag.count; i++) {
                assert_int_equal(diag.entries[i].line, expect[i].line);
                assert_string_equal(diag.entries[i].text, expect[i].text);
        }
        pf_diag_free(&diag);
        free(path);
}

static void test_missing_file(void **state)
{
        struct pf_policy *policy = NULL;
        struct pf_diag diag;
        char got[256];

        (void)state;
        assert_int_equal(pf_policy_load("/nonexistent/portfence.conf", &policy, &diag), -ENOENT);
        assert_null(policy);
        assert_string_equal(pf_diag_format(&diag, 0, got, sizeof(got)),
                            "/nonexistent/portfence.conf: No such file or directory");
        pf_diag_free(&diag);
        assert_int_equal(pf_policy_load("/tmp", &policy, &diag), -EISDIR);
        assert_null(policy);
        pf_diag_free(&diag);
}

/* A FIFO (or a device) is no policy: said at once, never waited on. */
static void test_not_a_regular_file(void **state)
{
        char dir[] = "/tmp/pf-test-fifo-XXXXXX", fifo[64], got[256], want[128];
        struct pf_policy *policy = NULL;
        struct pf_diag diag;

        (void)state;
        assert_non_null(mkdtemp(dir));
        snprintf(fifo, sizeof(fifo), "%s/policy.conf", dir);
        assert_int_equal(mkfifo(fifo, 0600), 0);
        assert_int_equal(pf_policy_load(fifo, &policy, &diag), -EINVAL);
        assert_null(policy);
        snprintf(want, sizeof(want), "%s: not a regular file: a policy is read from one only", fifo);
        assert_string_equal(pf_diag_format(&diag, 0, got, sizeof(got)), want);
        pf_diag_free(&diag);
        assert_int_equal(pf_policy_load("/dev/zero", &policy, &diag), -EINVAL);
        pf_diag_free(&diag);
        unlink(fifo);
        rmdir(dir);
}

static struct pf_policy *load_text(const char *text)
{
        struct pf_policy *policy = NULL;
        struct pf_diag diag;
        int r = pf_policy_load_text(text, "test.conf", &policy, &diag);

        for (size_t i = 0; i < diag.count; i++) {
                char line[512];

                print_error("%s\n", pf_diag_format(&diag, i, line, sizeof(line)));
        }
        pf_diag_free(&diag);
        assert_int_equal(r, 0);
        return policy;
}

static const char *format(const struct pf_portset *set)
{
        static char buf[8192];

        pf_portset_format(set, buf, sizeof(buf));
        return buf;
}

static void test_defaults(void **state)
{
        struct pf_policy *p = load_text("version = 1;\nephemeral = \"iana\";\nremap_pool = \"7000-7999\";\n");
        struct pf_log_settings settings, *log = &settings;

        (void)state;
        pf_policy_log(p, log);
        assert_string_equal(format(pf_policy_guarded(p, PF_TCP)), "49152-65535");
        assert_string_equal(format(pf_policy_guarded(p, PF_UDP)), "49152-65535");
        assert_string_equal(format(pf_policy_pool(p)), "7000-7999");
        assert_int_equal(pf_policy_refuse_errno(p), EADDRINUSE);
        assert_true(pf_policy_redirect_connect(p));
        assert_true(pf_policy_steer(p));
        assert_false(pf_policy_landlock(p));
        assert_int_equal(pf_policy_on_error(p), PF_ON_ERROR_REFUSE);
        assert_int_equal(log->to, PF_LOG_STDERR);
        assert_int_equal(log->level, PF_LEVEL_INFO);
        assert_int_equal(log->format, PF_FORMAT_TEXT);
        assert_int_equal(pf_policy_rule_count(p), 0);
        pf_policy_free(p);
}

static void test_all_keys(void **state)
{
        struct pf_policy *p = load_text(
                "version = 1;\n"
                "ephemeral = [ \"stcp-pre-1098\", \"stcp-udp\" ];\n"
                "default_action = \"log\";\n"
                "refuse_errno = \"EACCES\";\n"
                "remap_pool = \"1024-1100\";\n"
                "redirect_connect = false;\n"
                "steer = false;\n"
                "landlock = true;\n"
                "on_error = \"allow\";\n"
                "log = { to = \"file:/var/log/portfence.log\"; level = \"debug\"; format = \"json\"; };\n"
                "rules = (\n"
                "  { ports = 8080; action = \"allow\"; },\n"
                "  { ports = \"40000-40009\"; proto = \"udp\"; action = \"remap\"; to = 6000; }\n"
                ");\n");
        struct pf_log_settings settings, *log = &settings;

        (void)state;
        pf_policy_log(p, log);
        /* Per-protocol rows: STCP's TCP row guards TCP only, its UDP row UDP. */
        assert_string_equal(format(pf_policy_guarded(p, PF_TCP)), "10000-65535");
        assert_string_equal(format(pf_policy_guarded(p, PF_UDP)), "49152-65535");
        assert_int_equal(pf_policy_refuse_errno(p), EACCES);
        assert_false(pf_policy_redirect_connect(p));
        assert_false(pf_policy_steer(p));
        assert_true(pf_policy_landlock(p));
        assert_int_equal(pf_policy_on_error(p), PF_ON_ERROR_ALLOW);
        assert_int_equal(log->to, PF_LOG_FILE);
        assert_string_equal(log->path, "/var/log/portfence.log");
        assert_int_equal(log->level, PF_LEVEL_DEBUG);
        assert_int_equal(log->format, PF_FORMAT_JSON);
        assert_int_equal(pf_policy_rule_count(p), 2);
        assert_int_equal(pf_policy_rule_line(p, 1), 12);
        assert_int_equal(pf_policy_rule_line(p, 2), 13);
        pf_policy_free(p);
}

static void write_file(const char *dir, const char *name, const char *text)
{
        char path[512];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

/* An error in an @include'd file is that file's, at its line; a missing
 * include is named; rules remember the file they are written in. @include
 * is relative to the including policy's directory, wherever portfence runs. */
static void test_include_errors_where_they_are(void **state)
{
        char dir[] = "/tmp/pf-include-XXXXXX", path[512], line[512], expect[600];
        struct pf_policy *p = NULL;
        struct pf_diag diag;

        (void)state;
        assert_non_null(mkdtemp(dir));
        write_file(dir, "main.conf", "version = 1;\n@include \"rules.conf\"\n");
        write_file(dir, "rules.conf", "rules = (\n  { ports = \"80\"; action = \"allow\"; },\n"
                                      "  { ports = \"x\"; action = \"allow\"; }\n);\n");
        write_file(dir, "missing.conf", "version = 1;\n\n@include \"nowhere.conf\"\n");
        snprintf(path, sizeof(path), "%s/main.conf", dir);
        assert_int_equal(pf_policy_load(path, &p, &diag), -EINVAL);
        assert_int_equal(diag.count, 1);
        snprintf(expect, sizeof(expect), "%s/rules.conf:3: rule 2: 'ports': expected a port number in 'x'", dir);
        assert_string_equal(pf_diag_format(&diag, 0, line, sizeof(line)), expect);
        pf_diag_free(&diag);

        snprintf(path, sizeof(path), "%s/missing.conf", dir);
        assert_int_equal(pf_policy_load(path, &p, &diag), -EINVAL);
        snprintf(expect, sizeof(expect), "%s:3: cannot open include file 'nowhere.conf'", path);
        assert_string_equal(pf_diag_format(&diag, 0, line, sizeof(line)), expect);
        pf_diag_free(&diag);

        write_file(dir, "rules.conf", "rules = (\n  { ports = \"80\"; action = \"allow\"; }\n);\n");
        snprintf(path, sizeof(path), "%s/main.conf", dir);
        assert_int_equal(pf_policy_load(path, &p, &diag), 0);
        pf_diag_free(&diag);
        snprintf(expect, sizeof(expect), "%s/rules.conf", dir);
        assert_string_equal(pf_policy_rule_file(p, 1), expect);
        assert_int_equal(pf_policy_rule_line(p, 1), 2);
        pf_policy_free(p);
        for (const char *const *name = (const char *const[]){ "main.conf", "rules.conf", "missing.conf", NULL };
             *name; name++) {
                snprintf(path, sizeof(path), "%s/%s", dir, *name);
                unlink(path);
        }
        rmdir(dir);
}

/* The pool of a policy without remap_pool: 1024-65535 outside the guarded
 * ports and outside this host's dynamic range. */
static void test_default_pool(void **state)
{
        struct pf_policy *p = load_text("version = 1;\nephemeral = [ \"iana\", \"1024-2047\" ];\n");
        struct pf_portset expect, host;
        char why[PF_WHY_SIZE];

        (void)state;
        assert_int_equal(pf_profile_dynamic(pf_profile_find("host"), PF_TCP, &host, why), 0);
        pf_portset_clear(&expect);
        pf_portset_add_range(&expect, 2048, 49151);
        pf_portset_subtract(&expect, &host);
        assert_string_equal(format(pf_policy_pool(p)), format(&expect));
        {
                struct pf_portset both = *pf_policy_pool(p);

                pf_portset_intersect(&both, pf_policy_guarded(p, PF_TCP));
                assert_true(pf_portset_empty(&both));
        }
        pf_policy_free(p);
}

static void test_builtin_default(void **state)
{
        struct pf_policy *p = NULL;
        struct pf_portset host;
        struct pf_diag diag;
        char why[PF_WHY_SIZE];

        (void)state;
        assert_int_equal(pf_policy_load(PF_POLICY_BUILTIN, &p, &diag), 0);
        pf_diag_free(&diag);
        assert_int_equal(pf_profile_dynamic(pf_profile_find("host"), PF_TCP, &host, why), 0);
        assert_string_equal(format(pf_policy_guarded(p, PF_TCP)), format(&host));
        assert_string_equal(pf_policy_name(p), PF_POLICY_BUILTIN);
        pf_policy_free(p);
}

static void test_policy_path_order(void **state)
{
        (void)state;
        setenv("PORTFENCE_CONFIG", "/from/env.conf", 1);
        assert_string_equal(pf_policy_path("/explicit.conf"), "/explicit.conf");
        assert_string_equal(pf_policy_path(NULL), "/from/env.conf");
        unsetenv("PORTFENCE_CONFIG");
        assert_string_equal(pf_policy_path(NULL),
                            access(PF_POLICY_SYSTEM, F_OK) == 0 ? PF_POLICY_SYSTEM : PF_POLICY_BUILTIN);
}

static char *temp_path(void)
{
        char *path = strdup("/tmp/pf-compiled-XXXXXX");
        int fd = mkstemp(path);

        assert_true(fd >= 0);
        close(fd);
        return path;
}

/* A compiled policy written to a file and mapped back answers exactly as
 * the one loaded from text, for every port of both protocols. */
static void test_save_and_map(void **state)
{
        struct pf_policy *p = load_text(
                "version = 1;\nephemeral = \"40000-49999\";\ndefault_action = \"remap\";\n"
                "remap_pool = \"7000-7099\";\ngetsockname = \"real\";\nunbound_listen = \"refuse\";\n"
                "log = { to = \"file:/tmp/pf.log\"; };\n"
                "rules = ( { ports = \"40000-40009\"; action = \"remap\"; to = 7200; },\n"
                "          { program = \"srv*\"; ports = \"41000-41999\"; action = \"log\"; } );\n");
        char *path = temp_path();
        const struct pf_policy *mapped = NULL;
        struct pf_log_settings log;

        (void)state;
        assert_int_equal(pf_policy_save(p, path), 0);
        assert_int_equal(pf_policy_map(path, &mapped), 0);
        assert_int_equal(pf_policy_hash(mapped), pf_policy_hash(p));
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                for (unsigned port = 0; port <= PF_PORT_MAX; port++) {
                        struct pf_query q = { .proto = proto, .addr.family = PF_IPV4,
                                              .port = (uint16_t)port, .program = "srv1" };
                        struct pf_verdict a, b;

                        pf_decide(p, &q, &a);
                        pf_decide(mapped, &q, &b);
                        assert_memory_equal(&a, &b, sizeof(a));
                }
        }
        assert_string_equal(pf_policy_name(mapped), "test.conf");
        assert_int_equal(pf_policy_getsockname(mapped), PF_GETSOCKNAME_REAL);
        assert_int_equal(pf_policy_unbound_listen(mapped), PF_REFUSE);
        pf_policy_log(mapped, &log);
        assert_string_equal(log.path, "/tmp/pf.log");
        pf_policy_unmap(mapped);
        unlink(path);
        free(path);
        pf_policy_free(p);
}

static void corrupt(const char *path, long offset, const void *bytes, size_t size)
{
        FILE *f = fopen(path, "r+");

        assert_non_null(f);
        assert_int_equal(fseek(f, offset, SEEK_SET), 0);
        assert_int_equal(fwrite(bytes, 1, size, f), size);
        fclose(f);
}

/* A damaged file is refused whole, never half-used. */
static void test_map_rejects_damage(void **state)
{
        struct pf_policy *p = load_text("version = 1;\nephemeral = \"40000-49999\";\n"
                                        "rules = ( { ports = \"8080\"; action = \"allow\"; } );\n");
        const struct pf_policy *mapped = NULL;
        char *path = temp_path();
        uint16_t big = 999;
        uint32_t wrong = 0xdeadbeef;

        (void)state;
        assert_int_equal(pf_policy_save(p, path), 0);
        assert_int_equal(truncate(path, 4096), 0);
        assert_int_equal(pf_policy_map(path, &mapped), -EINVAL);

        assert_int_equal(pf_policy_save(p, path), 0);
        corrupt(path, 0, &wrong, sizeof(wrong));                        /* magic */
        assert_int_equal(pf_policy_map(path, &mapped), -EINVAL);

        assert_int_equal(pf_policy_save(p, path), 0);
        /* The slot of port 8080/tcp names rule 999 of 1: decide() ignores it. */
        corrupt(path, (long)offsetof(struct pf_policy, slots[PF_TCP][8080].rule), &big, sizeof(big));
        assert_int_equal(pf_policy_map(path, &mapped), 0);
        {
                struct pf_query q = { .proto = PF_TCP, .addr.family = PF_IPV4, .port = 8080 };
                struct pf_verdict v;

                pf_decide(mapped, &q, &v);
                assert_int_equal(v.rule, 0);
                assert_int_equal(v.action, PF_ALLOW);
        }
        pf_policy_unmap(mapped);
        mapped = NULL;
        assert_int_equal(pf_policy_map("/nonexistent/policy.pfc", &mapped), -ENOENT);
        assert_null(mapped);
        unlink(path);
        free(path);
        pf_policy_free(p);
}

/* Where learn writes its rules: after the "(" of the list the parser calls
 * 'rules', never one in a comment or a string, across line ends. */
static void test_rules_opening(void **state)
{
        static const struct { const char *text; int found; const char *after; } cases[] = {
                { "version = 1;\n", 0, "" },
                { "version = 1; rules = ( );\n", 1, " );\n" },
                { "# rules = ( no\n/* rules = ( no */\nprograms = \"rules = (\";\nrules\n  =\n  (\n);\n",
                  1, "\n);\n" },
                { "version = 1;\nrules : ( { ports = \"80\"; action = \"allow\"; } );\n", 1,
                  " { ports = \"80\"; action = \"allow\"; } );\n" },
                { "version = 1;\nrules = (\n", -EINVAL, NULL },
        };
        char dir[] = "/tmp/pf-opening-XXXXXX";
        size_t at;

        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                print_message("%zu\n", i);
                at = SIZE_MAX;
                assert_int_equal(pf_policy_rules_opening(cases[i].text, NULL, &at), cases[i].found);
                if (cases[i].after)
                        assert_string_equal(cases[i].text + at, cases[i].after);
        }
        assert_non_null(mkdtemp(dir));
        write_file(dir, "rules.conf", "rules = ( );\n");
        assert_int_equal(pf_policy_rules_opening("version = 1;\n@include \"rules.conf\"\n", dir, &at), -EXDEV);
        {
                char path[512];

                snprintf(path, sizeof(path), "%s/rules.conf", dir);
                unlink(path);
        }
        rmdir(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_broken_policies),
                cmocka_unit_test(test_too_many_rules),
                cmocka_unit_test(test_every_error_reported),
                cmocka_unit_test(test_missing_file),
                cmocka_unit_test(test_not_a_regular_file),
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_all_keys),
                cmocka_unit_test(test_default_pool),
                cmocka_unit_test(test_builtin_default),
                cmocka_unit_test(test_policy_path_order),
                cmocka_unit_test(test_save_and_map),
                cmocka_unit_test(test_include_errors_where_they_are),
                cmocka_unit_test(test_map_rejects_damage),
                cmocka_unit_test(test_rules_opening),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
