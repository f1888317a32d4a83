/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "portset.h"

static const char *format(const struct pf_portset *set)
{
        static char buf[8192];

        pf_portset_format(set, buf, sizeof(buf));
        return buf;
}

static void test_parse_valid(void **state)
{
        static const struct { const char *text, *formatted; unsigned count; } cases[] = {
                { "1", "1", 1 },
                { "65535", "65535", 1 },
                { "1-65535", "1-65535", 65535 },
                { "80", "80", 1 },
                { "1024-5000", "1024-5000", 3977 },
                { " 1024 - 5000 , 49152-65535 ", "1024-5000,49152-65535", 3977 + 16384 },
                { "10,11,12,13", "10-13", 4 },                 /* merged */
                { "5,5,5", "5", 1 },                           /* duplicates */
                { "100-200,150-250", "100-250", 151 },         /* overlap */
                { "9,3-4,1", "1,3-4,9", 4 },                   /* sorted */
                { "63-65,127-128", "63-65,127-128", 5 },       /* word edges */
                { "7-7", "7", 1 },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct pf_portset set;
                char why[PF_WHY_SIZE];

                assert_int_equal(pf_portset_parse(cases[i].text, &set, why), 0);
                assert_string_equal(format(&set), cases[i].formatted);
                assert_int_equal(pf_portset_count(&set), cases[i].count);
                assert_false(pf_portset_has(&set, 0));
        }
}

static void test_parse_invalid(void **state)
{
        static const struct { const char *text, *why; } cases[] = {
                { "", "empty port list" },
                { "   ", "empty port list" },
                { "0", "port outside 1-65535" },
                { "0-10", "port outside 1-65535" },
                { "65536", "port outside 1-65535" },
                { "1-65536", "port outside 1-65535" },
                { "99999999999999999999", "port outside 1-65535" },
                { "5000-1024", "range reversed" },
                { "80,", "expected a port number" },
                { ",80", "expected a port number" },
                { "80-", "expected a port number" },
                { "-80", "expected a port number" },
                { "80 90", "expected ',' or '-' between ports" },
                { "http", "expected a port number" },
                { "80;90", "expected ',' or '-' between ports" },
                { "+80", "expected a port number" },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct pf_portset set;
                char why[PF_WHY_SIZE] = "";

                pf_portset_clear(&set);
                pf_portset_add(&set, 4242);
                assert_int_equal(pf_portset_parse(cases[i].text, &set, why), -EINVAL);
                assert_string_equal(why, cases[i].why);
                /* Out-param untouched on failure. */
                assert_string_equal(format(&set), "4242");
        }
}

static void test_set_algebra(void **state)
{
        struct pf_portset a, b, c;
        char why[PF_WHY_SIZE];

        (void)state;
        assert_int_equal(pf_portset_parse("1-100,200-300", &a, why), 0);
        assert_int_equal(pf_portset_parse("50-250", &b, why), 0);
        c = a;
        pf_portset_union(&c, &b);
        assert_string_equal(format(&c), "1-300");
        c = a;
        pf_portset_intersect(&c, &b);
        assert_string_equal(format(&c), "50-100,200-250");
        c = a;
        pf_portset_subtract(&c, &b);
        assert_string_equal(format(&c), "1-49,251-300");
        pf_portset_clear(&c);
        assert_true(pf_portset_empty(&c));
        assert_string_equal(format(&c), "");
        pf_portset_fill(&c);
        assert_int_equal(pf_portset_count(&c), 65535);
        assert_false(pf_portset_has(&c, 0));
        assert_string_equal(format(&c), "1-65535");
}

static void test_find_and_ranges(void **state)
{
        struct pf_portset set;
        struct pf_range range = { 0, 0 };
        char why[PF_WHY_SIZE];

        (void)state;
        assert_int_equal(pf_portset_parse("1,64,65535", &set, why), 0);
        assert_int_equal(pf_portset_find(&set, 1, true), 1);
        assert_int_equal(pf_portset_find(&set, 2, true), 64);
        assert_int_equal(pf_portset_find(&set, 65, true), 65535);
        assert_int_equal(pf_portset_find(&set, 1, false), 2);
        assert_true(pf_portset_next_range(&set, &range));
        assert_int_equal(range.lo, 1);
        assert_true(pf_portset_next_range(&set, &range));
        assert_int_equal(range.lo, 64);
        assert_true(pf_portset_next_range(&set, &range));
        assert_int_equal(range.hi, 65535);
        assert_false(pf_portset_next_range(&set, &range));
}

static void test_format_truncates_like_snprintf(void **state)
{
        struct pf_portset set;
        char small[8];
        char why[PF_WHY_SIZE];

        (void)state;
        assert_int_equal(pf_portset_parse("1024-5000,49152-65535", &set, why), 0);
        assert_int_equal(pf_portset_format(&set, small, sizeof(small)), strlen("1024-5000,49152-65535"));
        assert_string_equal(small, "");        /* the first item did not fit */
        assert_int_equal(pf_portset_format(&set, NULL, 0), 21);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_valid),
                cmocka_unit_test(test_parse_invalid),
                cmocka_unit_test(test_set_algebra),
                cmocka_unit_test(test_find_and_ranges),
                cmocka_unit_test(test_format_truncates_like_snprintf),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
