/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "host.h"
#include "profiles.h"

static const char *format(const struct pf_portset *set)
{
        static char buf[8192];

        pf_portset_format(set, buf, sizeof(buf));
        return buf;
}

/* The seed's table, row by row, as the article prints it (with the UDP row's
 * dynamic start widened to 1024 as its text says). */
static void test_table_matches_seed(void **state)
{
        static const struct {
                const char *name;
                unsigned wk_lo, wk_hi, reg_lo, reg_hi, dyn_lo, dyn_hi;
                unsigned protos;
        } seed[] = {
                { "iana", 1, 1023, 1024, 49151, 49152, 65535, PF_PROTO_BOTH },
                { "tcp_os", 1, 1023, 5001, 65535, 1024, 5000, PF_PROTO_BOTH },
                { "stcp-pre-1098", 1, 1023, 1024, 9999, 10000, 65535, PF_PROTO_BIT(PF_TCP) },
                { "stcp", 1, 1023, 1024, 49151, 49152, 65535, PF_PROTO_BIT(PF_TCP) },
                { "stcp-udp-pre-2119", 1, 1024, 0, 0, 1024, 65535, PF_PROTO_BIT(PF_UDP) },
                { "stcp-udp", 1, 1023, 1024, 49151, 49152, 65535, PF_PROTO_BIT(PF_UDP) },
                { "hpux-11", 1, 1023, 1024, 49151, 49152, 65535, PF_PROTO_BOTH },
                { "ftx-3.3", 1, 1023, 6124, 65535, 1024, 6123, PF_PROTO_BOTH },
                { "ftx-3.4", 1, 1023, 1024, 49151, 49152, 65535, PF_PROTO_BOTH },
                { "ftserver", 1, 1024, 5001, 65535, 1024, 5000, PF_PROTO_BOTH },
                { "linux-2.2", 1, 1023, 5000, 65535, 1024, 4999, PF_PROTO_BOTH },
                { "linux-2.4", 1, 1023, 1024, 32767, 32768, 61000, PF_PROTO_BOTH },
        };
        size_t count;

        (void)state;
        const struct pf_profile *table = pf_profiles(&count);
        size_t seed_rows = 0;

        for (size_t i = 0; i < count; i++)
                seed_rows += table[i].seed;
        assert_int_equal(seed_rows, sizeof(seed) / sizeof(seed[0]));
        for (size_t i = 0; i < sizeof(seed) / sizeof(seed[0]); i++) {
                const struct pf_profile *p = pf_profile_find(seed[i].name);

                assert_non_null(p);
                assert_int_equal(p->well_known.lo, seed[i].wk_lo);
                assert_int_equal(p->well_known.hi, seed[i].wk_hi);
                assert_int_equal(p->registered.lo, seed[i].reg_lo);
                assert_int_equal(p->registered.hi, seed[i].reg_hi);
                assert_int_equal(p->dynamic.lo, seed[i].dyn_lo);
                assert_int_equal(p->dynamic.hi, seed[i].dyn_hi);
                assert_int_equal(p->protos, seed[i].protos);
                assert_false(p->live);
                assert_true(p->seed);
        }
        assert_true(pf_profile_find("host")->live);
        assert_null(pf_profile_find("beos"));
}

/* Every row of the seed's table that describes proto. */
static size_t seed_stacks(const struct pf_profile **list, enum pf_proto proto)
{
        size_t count, n = 0;
        const struct pf_profile *table = pf_profiles(&count);

        for (size_t i = 0; i < count; i++)
                if (table[i].seed && (table[i].protos & PF_PROTO_BIT(proto)))
                        list[n++] = &table[i];
        return n;
}

static void test_safe_on_every_tcp_stack(void **state)
{
        const struct pf_profile *list[32];
        struct pf_portset dynamic, safe;
        char why[PF_WHY_SIZE];
        size_t n = seed_stacks(list, PF_TCP);

        (void)state;
        assert_int_equal(pf_profiles_combine(list, n, PF_TCP, &dynamic, &safe, why), 0);
        assert_string_equal(format(&dynamic), "1024-6123,10000-65535");
        /* Not the seed's 5001-9999: FTX 3.3's dynamic range runs to 6123. */
        assert_string_equal(format(&safe), "6124-9999");
}

static void test_udp_on_old_stcp_leaves_nothing(void **state)
{
        const struct pf_profile *list[32];
        struct pf_portset dynamic, safe;
        char why[PF_WHY_SIZE];
        size_t n = seed_stacks(list, PF_UDP);

        (void)state;
        assert_int_equal(pf_profiles_combine(list, n, PF_UDP, &dynamic, &safe, why), 0);
        assert_int_equal(pf_portset_find(&safe, 1025, true), PF_PORT_MAX + 1);
        assert_true(pf_portset_empty(&safe));

        /* Without the pre-stcp-2119 row, UDP has the same answer as TCP. */
        list[0] = pf_profile_find("stcp-udp");
        list[1] = pf_profile_find("ftx-3.3");
        list[2] = pf_profile_find("iana");
        assert_int_equal(pf_profiles_combine(list, 3, PF_UDP, &dynamic, &safe, why), 0);
        assert_string_equal(format(&dynamic), "1024-6123,49152-65535");
        assert_string_equal(format(&safe), "6124-49151");
}

static void test_tcp_only_row_asked_for_udp_is_an_error(void **state)
{
        const struct pf_profile *list[] = { pf_profile_find("stcp-pre-1098") };
        struct pf_portset dynamic, safe;
        char why[PF_WHY_SIZE];

        (void)state;
        assert_int_equal(pf_profiles_combine(list, 1, PF_UDP, &dynamic, &safe, why), -EINVAL);
        assert_string_equal(why, "profile 'stcp-pre-1098' describes tcp only; for udp use "
                                 "stcp-udp-pre-2119, stcp-udp");
        assert_int_equal(pf_profiles_combine(list, 1, PF_TCP, &dynamic, &safe, why), 0);
        assert_string_equal(format(&safe), "1024-9999");
}

static void test_well_known_never_safe_and_server_ranges_avoided(void **state)
{
        const struct pf_profile *list[] = { pf_profile_find("kubernetes-nodeport"),
                                            pf_profile_find("docker") };
        struct pf_portset dynamic, safe;
        char why[PF_WHY_SIZE];

        (void)state;
        assert_int_equal(pf_profiles_combine(list, 2, PF_UDP, &dynamic, &safe, why), 0);
        assert_true(pf_portset_empty(&dynamic));
        assert_string_equal(format(&safe), "1024-29999,32768-49152");
}

static void test_todays_stacks(void **state)
{
        static const struct {
                const char *name;
                unsigned lo, hi;
        } rows[] = {
                { "linux", 32768, 60999 }, { "windows", 49152, 65535 }, { "freebsd", 10000, 65535 },
                { "openbsd", 1024, 49151 }, { "netbsd", 49152, 65535 }, { "macos", 49152, 65535 },
                { "solaris", 32768, 65535 }, { "aix", 32768, 65535 },
        };
        size_t count;
        const struct pf_profile *table = pf_profiles(&count);

        (void)state;
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                const struct pf_profile *p = pf_profile_find(rows[i].name);

                assert_non_null(p);
                assert_int_equal(p->dynamic.lo, rows[i].lo);
                assert_int_equal(p->dynamic.hi, rows[i].hi);
                assert_int_equal(p->protos, PF_PROTO_BOTH);
        }
        assert_int_equal(pf_profile_find("kubernetes-nodeport")->servers.lo, 30000);
        assert_int_equal(pf_profile_find("kubernetes-nodeport")->servers.hi, 32767);
        assert_int_equal(pf_profile_find("nomad")->servers.lo, 20000);
        assert_int_equal(pf_profile_find("nomad")->servers.hi, 32000);
        assert_int_equal(pf_profile_find("consul-sidecar")->servers.lo, 21000);
        assert_int_equal(pf_profile_find("consul-sidecar")->servers.hi, 21255);
        assert_int_equal(pf_profile_find("ecs")->servers.lo, 49153);
        assert_int_equal(pf_profile_find("ecs")->servers.hi, 65535);
        for (size_t i = 0; i < count; i++)
                assert_true(table[i].source && table[i].source[0]);
}

static char *write_temp(const char *text)
{
        char *path = strdup("/tmp/pf-test-XXXXXX");
        int fd = mkstemp(path);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        return path;
}

static void test_host_files(void **state)
{
        static const struct { const char *range, *reserved, *expect, *error; } cases[] = {
                { "32768\t60999\n", "\n", "32768-60999", NULL },
                { "32768\t60999\n", "40000,50000-50009\n", "32768-39999,40001-49999,50010-60999", NULL },
                { "1024 65535\n", "", "1024-65535", NULL },
                { "60999 32768\n", "\n", NULL, "expected two ports 'LOW HIGH'" },
                { "32768\n", "\n", NULL, "expected two ports 'LOW HIGH'" },
                { "0 100\n", "\n", NULL, "expected two ports 'LOW HIGH'" },
                { "32768 70000\n", "\n", NULL, "expected two ports 'LOW HIGH'" },
                { "32768 60999\n", "abc\n", NULL, "expected a port number in 'abc'" },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *range = write_temp(cases[i].range), *reserved = write_temp(cases[i].reserved);
                struct pf_portset set;
                char why[PF_WHY_SIZE] = "";
                int r = pf_host_ephemeral_read(range, reserved, &set, why);

                if (cases[i].expect) {
                        assert_int_equal(r, 0);
                        assert_string_equal(format(&set), cases[i].expect);
                } else {
                        assert_int_equal(r, -EINVAL);
                        assert_non_null(strstr(why, cases[i].error));
                }
                unlink(range);
                unlink(reserved);
                free(range);
                free(reserved);
        }
}

/* A reserved list longer than any fixed buffer: every other port. */
static void test_host_long_reserved_list(void **state)
{
        char *text = malloc(200000), *p = text;
        char *range, *reserved, why[512];
        struct pf_portset set;

        (void)state;
        for (unsigned port = 32769; port <= 60999; port += 2)
                p += sprintf(p, "%s%u", p == text ? "" : ",", port);
        strcpy(p, "\n");
        range = write_temp("32768\t60999\n");
        reserved = write_temp(text);
        assert_int_equal(pf_host_ephemeral_read(range, reserved, &set, why), 0);
        assert_int_equal(pf_portset_count(&set), (60999 - 32768) / 2 + 1);
        assert_true(pf_portset_has(&set, 32768));
        assert_false(pf_portset_has(&set, 60999));
        unlink(range);
        unlink(reserved);
        free(range);
        free(reserved);
        free(text);
}

static void test_host_file_missing(void **state)
{
        struct pf_portset set;
        char why[PF_WHY_SIZE];

        (void)state;
        assert_int_equal(pf_host_ephemeral_read("/nonexistent/range", "/nonexistent/reserved", &set,
                                                why), -ENOENT);
        assert_string_equal(why, "cannot read '/nonexistent/range': No such file or directory");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_table_matches_seed),
                cmocka_unit_test(test_safe_on_every_tcp_stack),
                cmocka_unit_test(test_udp_on_old_stcp_leaves_nothing),
                cmocka_unit_test(test_tcp_only_row_asked_for_udp_is_an_error),
                cmocka_unit_test(test_well_known_never_safe_and_server_ranges_avoided),
                cmocka_unit_test(test_todays_stacks),
                cmocka_unit_test(test_host_files),
                cmocka_unit_test(test_host_long_reserved_list),
                cmocka_unit_test(test_host_file_missing),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
