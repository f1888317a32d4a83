/* SPDX-License-Identifier: MIT */
/* The OCI state reader of portfence oci-hook: what it keeps from valid
 * states, and that every malformed one is refused with where and why. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "ocistate.h"
#include "portset.h"

static int parse(const char *text, struct pf_oci_state *st, char *why)
{
        return pf_oci_state_parse(text, strlen(text), st, why);
}

static void test_keeps_what_the_hook_needs(void **unused)
{
        struct pf_oci_state st;
        char why[PF_WHY_SIZE];
        const char *text =
                " {\"ociVersion\":\"1.0.2-dev\",\"id\":\"5f83ef\",\"status\":\"creating\",\"pid\":26617,"
                "\"bundle\":\"/var/lib/x\",\"extra\":[1,-2.5e3,true,false,null,{\"a\":[]}],"
                "\"annotations\":{\"io.container.manager\":\"libpod\",\"io.portfence.policy\":\"w\\u00e9b\\/1\"}}\n";

        (void)unused;
        assert_int_equal(parse(text, &st, why), 0);
        assert_string_equal(st.id, "5f83ef");
        assert_string_equal(st.status, "creating");
        assert_int_equal(st.pid, 26617);
        assert_true(st.has_policy);
        assert_string_equal(st.policy, "w\xc3\xa9" "b/1");
}

static void test_optional_members(void **unused)
{
        struct pf_oci_state st;
        char why[PF_WHY_SIZE];

        (void)unused;
        assert_int_equal(parse("{\"status\":\"stopped\",\"annotations\":null}", &st, why), 0);
        assert_int_equal(st.pid, 0);
        assert_false(st.has_policy);
        assert_string_equal(st.id, "");
        /* a surrogate pair decodes to one code point */
        assert_int_equal(parse("{\"status\":\"x\",\"id\":\"\\ud83d\\ude00\"}", &st, why), 0);
        assert_string_equal(st.id, "\xf0\x9f\x98\x80");
}

static void test_malformed_states_are_refused(void **unused)
{
        static const struct { const char *text, *why; } cases[] = {
                { "", "empty" },
                { "   ", "empty" },
                { "[]", "an object expected at byte 0" },
                { "{\"status\":\"x\"", "',' or '}' expected at byte 13" },
                { "{\"status\":\"x\",}", "a string expected at byte 14" },
                { "{\"status\":\"x\"} {}", "text after the object at byte 15" },
                { "{\"status\":\"x\",\"pid\":01}", "leading zero" },
                { "{\"status\":\"x\",\"pid\":1e3}", "'pid' is not a process id" },
                { "{\"status\":\"x\",\"pid\":99999999999999999999}", "'pid' is not a process id" },
                { "{\"status\":\"x\",\"pid\":\"1\"}", "a value expected" },
                { "{\"status\":\"x\",\"pid\":1,\"pid\":2}", "'pid' given twice" },
                { "{\"status\":\"x\",\"status\":\"y\"}", "'status' given twice" },
                { "{\"status\":\"x\",\"annotations\":{\"io.portfence.policy\":\"a\",\"io.portfence.policy\":\"b\"}}",
                  "'io.portfence.policy' given twice" },
                { "{\"status\":\"a\tb\"}", "a control character" },
                { "{\"status\":\"\\x\"}", "a bad escape" },
                { "{\"status\":\"\\u00\"}", "a bad \\u escape" },
                { "{\"status\":\"\\u0000\"}", "a NUL character" },
                { "{\"status\":\"\\ud800\"}", "a lone high surrogate" },
                { "{\"status\":\"\\udc00\"}", "a lone low surrogate" },
                { "{\"status\":\"x\",\"a\":tru}", "a value expected" },
                { "{\"status\":\"x\",\"a\":[1,]}", "a value expected" },
                { "{\"status\":\"x\",\"a\":1.}", "a bad number" },
                { "{\"status\":\"x\",\"a\":-}", "a value expected" },
                { "{\"id\":\"x\"}", "no 'status'" },
                { "{\"status\":\"" "0123456789012345678901234567890123456789" "\"}", "longer than 31 bytes" },
                { "{\"status\":\"x\",\"a\":\"unterminated}", "an unterminated string" },
        };
        struct pf_oci_state st = { .pid = 7 };
        char why[PF_WHY_SIZE];

        (void)unused;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                why[0] = '\0';
                if (parse(cases[i].text, &st, why) != -EINVAL || !strstr(why, cases[i].why))
                        fail_msg("'%s': got '%s', expected '%s'", cases[i].text, why, cases[i].why);
                assert_int_equal(st.pid, 7);    /* written on success only */
        }
}

static void test_depth_is_bounded(void **unused)
{
        char text[512] = "{\"status\":\"x\",\"a\":", why[PF_WHY_SIZE];
        struct pf_oci_state st;

        (void)unused;
        for (int i = 0; i < 100; i++)
                strcat(text, "[");
        assert_int_equal(parse(text, &st, why), -EINVAL);
        assert_non_null(strstr(why, "nested deeper than 64"));
}

static void test_bytes_past_a_nul_are_read(void **unused)
{
        static const char text[] = "{\"status\":\"x\"}\0garbage";
        struct pf_oci_state st;
        char why[PF_WHY_SIZE];

        (void)unused;
        assert_int_equal(pf_oci_state_parse(text, sizeof(text) - 1, &st, why), -EINVAL);
        assert_non_null(strstr(why, "text after the object"));
}

static void test_policy_names(void **unused)
{
        static const char *const good[] = { "web", "a.b-c_d", "X1", "default" };
        static const char *const bad[] = { "", ".", "..", "../x", "a/b", "/etc/x", ".hidden", "a b",
                                           "a\nb", "\xc3\xa9",
                                           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" };
        char why[PF_WHY_SIZE];

        (void)unused;
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                assert_int_equal(pf_oci_policy_name_check(good[i], why), 0);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_int_equal(pf_oci_policy_name_check(bad[i], why), -EINVAL);
                assert_non_null(strstr(why, "never a path"));
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_keeps_what_the_hook_needs),
                cmocka_unit_test(test_optional_members),
                cmocka_unit_test(test_malformed_states_are_refused),
                cmocka_unit_test(test_depth_is_bounded),
                cmocka_unit_test(test_bytes_past_a_nul_are_read),
                cmocka_unit_test(test_policy_names),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
