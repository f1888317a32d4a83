/* SPDX-License-Identifier: MIT */
/* libFuzzer target: any bytes given to the policy loader either load a
 * policy that decide() can answer for every port, or fail with messages. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *text = malloc(size + 1);
        struct pf_policy *policy = NULL;
        struct pf_diag diag;

        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';
        if (pf_policy_load_text(text, "fuzz.conf", &policy, &diag) == 0) {
                struct pf_query q = { .addr.family = PF_IPV4, .program = "fuzz" };
                struct pf_verdict v;

                for (unsigned port = 0; port <= PF_PORT_MAX; port += 97) {
                        q.port = (uint16_t)port;
                        q.proto = port & 1 ? PF_UDP : PF_TCP;
                        pf_decide(policy, &q, &v);
                        if (v.action == PF_REMAP && v.target == 0)
                                abort();        /* a remap always has a target */
                }
                pf_policy_free(policy);
        }
        pf_diag_free(&diag);
        free(text);
        return 0;
}
