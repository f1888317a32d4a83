/* SPDX-License-Identifier: MIT */
/* Benchmark: ns per pf_decide() for a 10-rule and a 10,000-rule policy, and
 * the load time of the 10,000-rule policy. Prints numbers and ratios; the
 * targets (decide < 20 ns, sizes within 10%, portfence's part of a load
 * <= 2 ms) are checked by reading them (scripts/bench), never by a timed
 * test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libconfig.h>

#include "policy.h"

#define QUERIES 4096
#define ROUNDS 2000
#define LOADS 25        /* best of: a load is one allocation-heavy burst, noisy on a shared host */

static double now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* rules port-only rules over 20000-39999 and 40000-59999 (guarded), with
 * every action, "to" targets below the remap pool 10000-19999. */
static char *policy_text(unsigned rules)
{
        size_t size = 256 + (size_t)rules * 96;
        char *text = malloc(size), *p = text;
        unsigned span = 40000 / rules;

        if (!text) {
                perror("bench-decide");
                exit(1);
        }

        p += sprintf(p, "version = 1;\nephemeral = \"40000-59999\";\ndefault_action = \"remap\";\n"
                        "remap_pool = \"10000-19999\";\nrules = (\n");
        for (unsigned i = 0; i < rules; i++) {
                unsigned lo = 20000 + i * span;
                static const char *const actions[] = { "allow", "log", "refuse", "remap" };

                char to[32] = "";

                if (i % 8 == 3)         /* targets of their own, below the pool */
                        snprintf(to, sizeof(to), " to = %u;", 1024 + i / 8 * span);
                p += sprintf(p, "  { ports = \"%u-%u\"; action = \"%s\";%s }%s\n", lo, lo + span - 1,
                             actions[i % 4], to, i + 1 < rules ? "," : "");
        }
        strcpy(p, ");\n");
        return text;
}

static struct pf_policy *load(const char *text)
{
        struct pf_policy *policy = NULL;
        struct pf_diag diag;

        if (pf_policy_load_text(text, "bench.conf", &policy, &diag) < 0) {
                char line[512];

                for (size_t i = 0; i < diag.count; i++)
                        fprintf(stderr, "%s\n", pf_diag_format(&diag, i, line, sizeof(line)));
                exit(1);
        }
        pf_diag_free(&diag);
        return policy;
}

/* The part of a load that is libconfig's own: parse the text, free it. */
static double libconfig_ns(const char *text)
{
        double best = 1e18;

        for (int i = 0; i < LOADS; i++) {
                double start = now_ns();
                config_t cfg;

                config_init(&cfg);
                if (config_read_string(&cfg, text) != CONFIG_TRUE)
                        exit(1);
                config_destroy(&cfg);
                if (now_ns() - start < best)
                        best = now_ns() - start;
        }
        return best;
}

static double ns_per_decide(const struct pf_policy *policy, const struct pf_query *queries)
{
        volatile unsigned sink = 0;
        double start = now_ns();

        for (unsigned round = 0; round < ROUNDS; round++) {
                for (unsigned i = 0; i < QUERIES; i++) {
                        struct pf_verdict v;

                        pf_decide(policy, &queries[i], &v);
                        sink += v.target + v.action;
                }
        }
        (void)sink;
        return (now_ns() - start) / ((double)ROUNDS * QUERIES);
}

int main(void)
{
        static struct pf_query queries[QUERIES];
        char *small_text = policy_text(10), *large_text = policy_text(10000);
        struct pf_policy *small = load(small_text), *large;
        double load_ns = 1e18, small_ns = 1e18, large_ns = 1e18;
        unsigned seed = 12345;

        for (int i = 0; i < LOADS; i++) {     /* best of LOADS: the least disturbed run */
                double start = now_ns();

                large = load(large_text);
                if (now_ns() - start < load_ns)
                        load_ns = now_ns() - start;
                if (i < LOADS - 1)
                        pf_policy_free(large);
        }
        for (unsigned i = 0; i < QUERIES; i++) {
                seed = seed * 1103515245u + 12345u;
                queries[i] = (struct pf_query){
                        .proto = (seed >> 8) & 1 ? PF_UDP : PF_TCP,
                        .addr.family = PF_IPV4,
                        .port = (uint16_t)(1 + (seed >> 16) % 65535),
                };
        }
        for (int i = 0; i < 5; i++) {
                double s = ns_per_decide(small, queries), l = ns_per_decide(large, queries);

                small_ns = s < small_ns ? s : small_ns;
                large_ns = l < large_ns ? l : large_ns;
        }
        printf("decide, 10 rules:       %6.2f ns\n", small_ns);
        printf("decide, 10000 rules:    %6.2f ns\n", large_ns);
        printf("ratio 10000/10 rules:   %6.3f   (target <= 1.10)\n", large_ns / small_ns);
        double libconfig = libconfig_ns(large_text);

        printf("load, 10000 rules:      %6.2f ms\n", load_ns / 1e6);
        printf("  of which libconfig:   %6.2f ms (parse + destroy of the same text)\n", libconfig / 1e6);
        printf("  portfence's part:     %6.2f ms (target <= 2 ms)\n", (load_ns - libconfig) / 1e6);
        pf_policy_free(small);
        pf_policy_free(large);
        free(small_text);
        free(large_text);
        return 0;
}
