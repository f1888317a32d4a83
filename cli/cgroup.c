/* SPDX-License-Identifier: MIT */
/* portfence cgroup attach|detach|reload|status|events: the policy enforced by
 * BPF programs for every process of a cgroup v2. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "loader.h"

static void cgroup_help(FILE *f)
{
        fprintf(f, "usage: portfence cgroup attach [-c FILE] [-v] PATH\n"
                   "       portfence cgroup reload [-c FILE] PATH\n"
                   "       portfence cgroup detach PATH\n"
                   "       portfence cgroup status [--json] [PATH]\n"
                   "       portfence cgroup events [--json] [--count N] PATH\n\n"
                   "Fence every process of a cgroup v2 with BPF programs (root). PATH is a cgroup\n"
                   "directory, a path below the cgroup v2 mount, or pid:N (that process's cgroup).\n"
                   "Programs and maps are pinned below %s/<cgroup id>/.\n", PF_BPF_PIN_ROOT);
}

struct cgroup_args {
        const char *config;
        const char *path;
        bool json;
        bool verbose;
        unsigned count;
};

/* Options and the one PATH; returns 1 after --help, -1 after an error. */
static int parse_args(const char *command, int argc, char **argv, struct cgroup_args *a,
                      bool path_optional)
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "json", no_argument, NULL, 'j' },
                { "count", required_argument, NULL, 'n' },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        int opt;

        while ((opt = getopt_long(argc, argv, "c:vh", options, NULL)) != -1) {
                switch (opt) {
                case 'c': a->config = optarg; break;
                case 'j': a->json = true; break;
                case 'v': a->verbose = true; break;
                case 'n':
                        if (pf_cli_parse_uint(optarg, 1, UINT_MAX, &a->count) < 0) {
                                pf_error(command, "bad --count '%s'", optarg);
                                return -1;
                        }
                        break;
                case 'h': cgroup_help(stdout); return 1;
                default: cgroup_help(stderr); return -1;
                }
        }
        if (optind < argc)
                a->path = argv[optind++];
        if (optind < argc) {
                pf_error(command, "unexpected argument '%s'", argv[optind]);
                return -1;
        }
        if (!a->path && !path_optional) {
                pf_error(command, "no cgroup given (see 'portfence cgroup --help')");
                return -1;
        }
        return 0;
}

/* The checks every subcommand needs before touching the kernel. */
static int prepare(const char *command, const struct cgroup_args *a, struct pf_cgroup *cgroup)
{
        char why[PF_WHY_SIZE];

        if (geteuid() != 0) {
                pf_error(command, "needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)");
                return -1;
        }
        if (a->path && pf_cgroup_resolve(a->path, cgroup, why) < 0) {
                pf_error(command, "%s", why);
                return -1;
        }
        return 0;
}

/* The policy, with a note for every program glob the kernel cannot match
 * exactly. */
static struct pf_policy *load_for_kernel(const char *command, const char *config, char *source,
                                         size_t size)
{
        struct pf_policy *policy = pf_cli_load_policy(command, config);

        if (!policy)
                return NULL;
        pf_cli_comm_notes(command, policy);
        pf_cli_policy_source(policy, source, size);
        return policy;
}

static int cgroup_attach(int argc, char **argv, bool reload)
{
        const char *command = reload ? "cgroup reload" : "cgroup attach";
        struct cgroup_args a = { 0 };
        struct pf_cgroup cgroup;
        struct pf_policy *policy;
        char why[PF_WHY_SIZE], source[PATH_MAX];
        int r = parse_args(command, argc, argv, &a, false);

        if (r)
                return r > 0 ? PF_EXIT_OK : PF_EXIT_USAGE;
        if (prepare(command, &a, &cgroup) < 0)
                return PF_EXIT_USAGE;
        policy = load_for_kernel(command, a.config, source, sizeof(source));
        if (!policy)
                return PF_EXIT_USAGE;
        if (!reload && pf_cgroup_v1_net_controllers())
                fprintf(stderr, "portfence: %s: warning: net_cls/net_prio v1 controllers are mounted: "
                        "sockets of processes placed in their cgroups are not matched to cgroup v2 "
                        "programs\n", command);
        r = reload ? pf_bpf_reload(policy, source, &cgroup, why)
                   : pf_bpf_attach(policy, source, &cgroup, a.verbose, why);
        pf_policy_free(policy);
        if (r < 0) {
                pf_error(command, "%s", why);
                return PF_EXIT_USAGE;
        }
        printf("%s: %s with %s\n", cgroup.path, reload ? "policy reloaded" : "fenced",
               source[0] ? source : PF_POLICY_BUILTIN);
        return PF_EXIT_OK;
}

static int do_detach(const struct cgroup_args *a, const struct pf_cgroup *cgroup, char *why)
{
        (void)a;
        if (pf_bpf_detach(cgroup, why) < 0)
                return -1;
        printf("%s: detached\n", cgroup->path);
        return 0;
}

static int do_status(const struct cgroup_args *a, const struct pf_cgroup *cgroup, char *why)
{
        return pf_bpf_status(stdout, a->path ? cgroup : NULL, a->json, why);
}

static int do_events(const struct cgroup_args *a, const struct pf_cgroup *cgroup, char *why)
{
        return pf_bpf_events(stdout, cgroup, a->json, a->count, why);
}

/* detach, status, events: options, the root and cgroup checks, one call. */
static int cgroup_simple(const char *command, int argc, char **argv, bool path_optional,
                         int (*action)(const struct cgroup_args *, const struct pf_cgroup *, char *))
{
        struct cgroup_args a = { 0 };
        struct pf_cgroup cgroup;
        char why[PF_WHY_SIZE];
        int r = parse_args(command, argc, argv, &a, path_optional);

        if (r)
                return r > 0 ? PF_EXIT_OK : PF_EXIT_USAGE;
        if (prepare(command, &a, &cgroup) < 0)
                return PF_EXIT_USAGE;
        if (action(&a, &cgroup, why) < 0) {
                pf_error(command, "%s", why);
                return PF_EXIT_USAGE;
        }
        return PF_EXIT_OK;
}

int pf_cmd_cgroup(int argc, char **argv)
{
        if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                cgroup_help(argc < 2 ? stderr : stdout);
                return argc < 2 ? PF_EXIT_USAGE : PF_EXIT_OK;
        }
        if (strcmp(argv[1], "attach") == 0)
                return cgroup_attach(argc - 1, argv + 1, false);
        if (strcmp(argv[1], "reload") == 0)
                return cgroup_attach(argc - 1, argv + 1, true);
        if (strcmp(argv[1], "detach") == 0)
                return cgroup_simple("cgroup detach", argc - 1, argv + 1, false, do_detach);
        if (strcmp(argv[1], "status") == 0)
                return cgroup_simple("cgroup status", argc - 1, argv + 1, true, do_status);
        if (strcmp(argv[1], "events") == 0)
                return cgroup_simple("cgroup events", argc - 1, argv + 1, false, do_events);
        pf_error("cgroup", "unknown subcommand '%s' (attach, reload, detach, status, events)", argv[1]);
        return PF_EXIT_USAGE;
}
