/* SPDX-License-Identifier: MIT */
/* portfence cgroup attach|detach|reload|status|events: the policy enforced by
 * BPF programs for every process of a cgroup v2. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "loader.h"

static void cgroup_help(FILE *f);

struct cgroup_args {
        const char *config;
        const char *path;
        const char *textfile;   /* status: a directory for node_exporter's textfile collector */
        const char *output;     /* learn: where the proposal goes */
        unsigned duration;      /* learn: seconds */
        bool prometheus;
        bool whole_host;        /* the root cgroup may be fenced: every process of the host */
        bool json;
        bool verbose;
        bool kubepods;          /* guard: the node's pod root, found */
        bool keep;              /* guard: the fence stays when the guard stops */
        bool probe;             /* status: a bind in the cgroup, checked against the policy */
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
                { "prometheus", no_argument, NULL, 'P' },
                { "whole-host", no_argument, NULL, 'W' },
                { "textfile", required_argument, NULL, 'T' },
                { "output", required_argument, NULL, 'o' },
                { "duration", required_argument, NULL, 'd' },
                { "kubepods", no_argument, NULL, 'K' },
                { "keep", no_argument, NULL, 'k' },
                { "probe", no_argument, NULL, 'p' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        int opt;

        while ((opt = pf_cli_getopt(command, argc, argv, "c:o:vh", options)) != -1) {
                switch (opt) {
                case 'c': a->config = optarg; break;
                case 'j': a->json = true; break;
                case 'v': a->verbose = true; break;
                case 'P': a->prometheus = true; break;
                case 'W': a->whole_host = true; break;
                case 'T': a->textfile = optarg; break;
                case 'o': a->output = optarg; break;
                case 'K': a->kubepods = true; break;
                case 'k': a->keep = true; break;
                case 'p': a->probe = true; break;
                case 'd':
                        if (pf_cli_parse_uint(optarg, 1, 86400 * 365, &a->duration) < 0) {
                                pf_error(command, "bad --duration '%s': expected seconds", optarg);
                                return -1;
                        }
                        break;
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

/* A cgroup fenced already or not fenced is the caller's mistake (2); a
 * kernel or system that fails is not (3). */
static int pf_cgroup_exit(int r)
{
        return r == -EEXIST || r == -ENOENT || r == -ENOTDIR || r == -EINVAL ? PF_EXIT_USAGE
                                                                          : PF_EXIT_FAILURE;
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

int pf_cli_bpffs_ready(const char *command)
{
        char why[PF_WHY_SIZE];
        int r = pf_bpf_ready(why);

        if (r < 0)
                pf_error(command, "%s", why);
        else if (r > 0)
                pf_note(command, "%s", why);
        return r < 0 ? -1 : 0;
}

/* A fence is made only on a cgroup that exists, and on the root cgroup
 * (every process of the host) only when the caller says so. */
static int check_new_fence(const char *command, const struct cgroup_args *a,
                           const struct pf_cgroup *cgroup)
{
        if (!cgroup->path[0]) {
                pf_error(command, "bad cgroup '%s': a fence needs the cgroup's path", a->path);
                return -1;
        }
        if (cgroup->root && !a->whole_host) {
                pf_error(command, "'%s' is the root cgroup: every process of this host would be "
                         "fenced; say --whole-host to mean it", a->path);
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
        if (!*source && strcmp(pf_policy_name(policy), PF_POLICY_BUILTIN) != 0)
                snprintf(source, size, "%s", pf_policy_name(policy));    /* "(stdin)": a name to show */
        return policy;
}

/* What attach, reload and learn share: options, the checks of a new fence,
 * the policy. NULL with *status the exit code after --help or an error. */
static struct pf_policy *fence_setup(const char *command, int argc, char **argv, struct cgroup_args *a,
                                     struct pf_cgroup *cgroup, char *source, size_t size, int *status)
{
        struct pf_policy *policy = NULL;
        int r = parse_args(command, argc, argv, a, false);

        *status = r > 0 ? PF_EXIT_OK : PF_EXIT_USAGE;
        if (r == 0 && prepare(command, a, cgroup) == 0 && check_new_fence(command, a, cgroup) == 0)
                policy = load_for_kernel(command, a->config, source, size);
        return policy;
}

/* A fence whose policy moves servers, on a kernel that links no tc
 * programs: its UDP servers are not steered to, which is said. */
static void note_unsteered_datagrams(const char *command, const struct pf_policy *policy,
                                     const struct pf_cgroup *cgroup)
{
        if (pf_policy_steer(policy) && pf_policy_moves_servers(policy) && !pf_bpf_fence_steers_datagrams(cgroup))
                pf_note(command, "this kernel links no tc programs (Linux 6.6 or later does): a UDP server the "
                        "fence moves is reached at the port it asked for by fenced clients alone");
}

static int cgroup_attach(int argc, char **argv, bool reload)
{
        const char *command = reload ? "cgroup reload" : "cgroup attach";
        struct cgroup_args a = { 0 };
        struct pf_cgroup cgroup;
        struct pf_policy *policy;
        char why[PF_WHY_SIZE], source[PATH_MAX];
        int r;

        policy = fence_setup(command, argc, argv, &a, &cgroup, source, sizeof(source), &r);
        if (!policy)
                return r;
        if (!reload && pf_cli_bpffs_ready(command) < 0) {
                pf_policy_free(policy);
                return PF_EXIT_FAILURE;
        }
        if (!reload && pf_cgroup_v1_net_controllers())
                pf_warning(command, "net_cls/net_prio v1 controllers are mounted: sockets of "
                           "processes placed in their cgroups are not matched to cgroup v2 programs");
        r = reload ? pf_bpf_reload(policy, source, &cgroup, why)
                   : pf_bpf_attach(policy, source, &cgroup, a.verbose, why);
        if (r == 0)
                note_unsteered_datagrams(command, policy, &cgroup);
        pf_policy_free(policy);
        if (r < 0) {
                pf_error(command, "%s", why);
                return pf_cgroup_exit(r);
        }
        printf("%s: %s%s with %s\n", cgroup.path, reload ? "policy reloaded" : "fenced",
               cgroup.root ? " (the whole host: every process)" : "", source[0] ? source : PF_POLICY_BUILTIN);
        return PF_EXIT_OK;
}

static int do_detach(const struct cgroup_args *a, const struct pf_cgroup *cgroup, char *why)
{
        int r = pf_bpf_detach(cgroup, why);

        (void)a;
        if (r < 0)
                return r;
        if (cgroup->path[0])
                pf_text(stdout, cgroup->path);
        else
                printf("cgroup id %llu", (unsigned long long)cgroup->id);
        printf(r ? ": removed what an unfinished attach left (it decided nothing)\n" : ": detached\n");
        return 0;
}

static const char *const counter_names[PF_FENCE_COUNTERS] = {
        "allow", "log", "refuse", "remap", "redirect", "errors", "lost_events", "moves_refused",
};

struct status_print {
        struct pf_json *json;           /* NULL: text */
        unsigned unfinished;
        uint64_t warned[32];            /* policies whose guardrail was said */
        unsigned warned_count;
};

/* The guardrail, once per policy: the ports it gives servers that this
 * network namespace may hand a client now (someone widened the range). */
static void warn_unreserved_once(struct status_print *out, const struct pf_fence_status *st)
{
        const char *path = st->policy[0] ? st->policy : PF_POLICY_BUILTIN;
        struct pf_policy *policy;
        char where[320];

        for (unsigned i = 0; i < out->warned_count; i++)
                if (out->warned[i] == st->policy_hash)
                        return;
        if (out->warned_count < PF_COUNT(out->warned))
                out->warned[out->warned_count++] = st->policy_hash;
        policy = pf_cli_load_policy("cgroup status", path);
        if (!policy)
                return;
        snprintf(where, sizeof(where), "fences of %.300s", path);
        pf_cli_warn_unreserved("cgroup status", policy, where, false);
        pf_policy_free(policy);
}

static int print_status(const struct pf_fence_status *st, void *ctx)
{
        struct status_print *out = ctx;
        struct pf_json *json = out->json;
        char hash[17];

        out->unfinished += st->unfinished;
        snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)st->policy_hash);
        if (json) {
                pf_json_object_begin(json);
                pf_json_kv_string(json, "cgroup", st->cgroup[0] ? st->cgroup : NULL);
                pf_json_kv_uint(json, "cgroup_id", st->cgroup_id);
                pf_json_key(json, "defunct");
                pf_json_bool(json, st->defunct);
                pf_json_key(json, "broken");
                pf_json_bool(json, st->broken && !st->unfinished);
                pf_json_key(json, "unfinished");
                pf_json_bool(json, st->unfinished);
                pf_json_kv_string(json, "policy", st->policy[0] ? st->policy : PF_POLICY_BUILTIN);
                pf_json_kv_string(json, "hash", hash);
                for (int k = 0; k < PF_FENCE_COUNTERS; k++)
                        pf_json_kv_uint(json, counter_names[k], st->counters[k]);
                pf_json_object_end(json);
                return 0;
        }
        if (st->unfinished) {
                pf_text(stdout, st->cgroup[0] ? st->cgroup : "(cgroup)");
                printf(" (id %llu): attach unfinished: inert, decides nothing ('portfence cgroup detach "
                       "id:%llu' removes it)\n", (unsigned long long)st->cgroup_id,
                       (unsigned long long)st->cgroup_id);
                return 0;
        }
        if (st->broken) {
                printf("(cgroup id %llu): broken: pins are missing ('portfence cgroup detach id:%llu' "
                       "removes it)\n", (unsigned long long)st->cgroup_id, (unsigned long long)st->cgroup_id);
                return 0;
        }
        pf_text(stdout, st->cgroup[0] ? st->cgroup : st->defunct ? "(cgroup removed: defunct, "
                                                                   "'portfence cgroup prune' removes it)"
                                                                 : "(cgroup not found)");
        printf(" (id %llu): policy ", (unsigned long long)st->cgroup_id);
        pf_text(stdout, st->policy[0] ? st->policy : PF_POLICY_BUILTIN);
        printf(" (hash %s):", hash);
        for (int k = 0; k < PF_FENCE_COUNTERS; k++)
                printf(" %s %llu", counter_names[k], (unsigned long long)st->counters[k]);
        printf("\n");
        fflush(stdout);
        warn_unreserved_once(out, st);
        return 0;
}

/* ---- metrics: the Prometheus text exposition format ---------------------- */

struct fences {
        struct pf_fence_status *list;
        size_t count;
};

static int collect_status(const struct pf_fence_status *st, void *ctx)
{
        struct fences *f = ctx;

        if (st->broken)
                return 0;       /* no counters to read */
        struct pf_fence_status *grown = realloc(f->list, (f->count + 1) * sizeof(*grown));

        if (!grown)
                return -ENOMEM;
        f->list = grown;
        f->list[f->count++] = *st;
        return 0;
}

/* A label value: '\', '"' and newline escaped, as the format asks. */
static void put_label(FILE *out, const char *value)
{
        for (; *value; value++) {
                if (*value == '\\' || *value == '"')
                        fputc('\\', out);
                if (*value == '\n')
                        fputs("\\n", out);
                else
                        fputc(*value, out);
        }
}

static void put_labels(FILE *out, const struct pf_fence_status *st, const char *action)
{
        fputs("{cgroup=\"", out);
        put_label(out, st->cgroup[0] ? st->cgroup : "(removed)");
        fprintf(out, "\",cgroup_id=\"%llu\",policy_hash=\"%016llx\"", (unsigned long long)st->cgroup_id,
                (unsigned long long)st->policy_hash);
        if (action)
                fprintf(out, ",action=\"%s\"", action);
        fputc('}', out);
}

static void print_metrics(FILE *out, const struct fences *f)
{
        static const struct {
                const char *name, *help;
                int first, last;        /* counters summed into it, one sample per action */
        } families[] = {
                { "portfence_binds_total", "Binds a cgroup fence decided, by action.", 0, 3 },
                { "portfence_redirects_total", "Connects and sends a cgroup fence sent to a moved server.", 4, 4 },
                { "portfence_errors_total", "Binds a cgroup fence refused because its maps were not filled.", 5, 5 },
                { "portfence_lost_events_total", "Events a cgroup fence dropped: its ring buffer was full.", 6, 6 },
                { "portfence_moves_refused_total",
                  "Binds a cgroup fence refused because the registry of moves had no room for them.", 7, 7 },
        };

        for (size_t m = 0; m < PF_COUNT(families); m++) {
                fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", families[m].name, families[m].help,
                        families[m].name);
                for (size_t i = 0; i < f->count; i++) {
                        for (int k = families[m].first; k <= families[m].last; k++) {
                                fputs(families[m].name, out);
                                put_labels(out, &f->list[i], families[m].first == families[m].last ? NULL
                                                                                                   : counter_names[k]);
                                fprintf(out, " %llu\n", (unsigned long long)f->list[i].counters[k]);
                        }
                }
        }
}

/* DIR/portfence.prom, replaced whole (a temporary file, then rename). */
static void put_metrics(FILE *out, const void *fences)
{
        print_metrics(out, fences);
}

static int write_textfile(const char *dir, const struct fences *f, char *why)
{
        char path[4200];
        int r;

        snprintf(path, sizeof(path), "%s/portfence.prom", dir);
        r = pf_cli_replace_file(path, put_metrics, f);
        if (r < 0)
                snprintf(why, PF_WHY_SIZE, "cannot write '%.400s': %s", path, strerror(-r));
        return r;
}

static int do_metrics(const struct cgroup_args *a, const struct pf_cgroup *cgroup, char *why)
{
        struct fences f = { 0 };
        int r = pf_bpf_status(a->path ? cgroup : NULL, collect_status, &f, why);

        if (r == 0 && a->textfile)
                r = write_textfile(a->textfile, &f, why);
        else if (r == 0)
                print_metrics(stdout, &f);
        free(f.list);
        return r;
}

/* A cgroup without a fence of its own may be fenced through an ancestor,
 * whose programs run for every cgroup below it. */
static int status_by_ancestor(const struct cgroup_args *a, const struct pf_cgroup *cgroup,
                              const struct pf_cgroup *ancestor)
{
        struct pf_json json;

        if (a->json) {
                pf_json_init(&json, stdout);
                pf_json_array_begin(&json);
                pf_json_object_begin(&json);
                pf_json_kv_string(&json, "cgroup", cgroup->path);
                pf_json_kv_uint(&json, "cgroup_id", cgroup->id);
                pf_json_kv_string(&json, "fenced_by", ancestor->path);
                pf_json_kv_uint(&json, "fenced_by_id", ancestor->id);
                pf_json_object_end(&json);
                pf_json_array_end(&json);
                return 0;
        }
        pf_text(stdout, cgroup->path);
        printf(" (id %llu): not fenced itself; fenced by ancestor ", (unsigned long long)cgroup->id);
        pf_text(stdout, ancestor->path);
        printf(" (id %llu)\n", (unsigned long long)ancestor->id);
        return 0;
}

static int do_status(const struct cgroup_args *a, const struct pf_cgroup *cgroup, char *why)
{
        struct pf_cgroup ancestor;
        struct pf_json json;
        struct status_print out = { .json = a->json ? &json : NULL };
        int r;

        if (a->probe && (!a->path || a->json || a->prometheus || a->textfile)) {
                snprintf(why, PF_WHY_SIZE, "--probe takes a PATH and no other output option");
                return -EINVAL;
        }
        if (a->probe)
                return pf_cgroup_probe(cgroup, why);
        if (a->prometheus || a->textfile)
                return do_metrics(a, cgroup, why);
        if (a->path && !pf_bpf_is_fenced(cgroup) && pf_bpf_fencing_ancestor(cgroup, &ancestor) == 0)
                return status_by_ancestor(a, cgroup, &ancestor);
        pf_json_init(&json, stdout);
        if (a->json)
                pf_json_array_begin(&json);
        r = pf_bpf_status(a->path ? cgroup : NULL, print_status, &out, why);
        if (a->json)
                pf_json_array_end(&json);
        return r < 0 ? r : out.unfinished > 0;
}

static void format_addr(const struct pf_addr *addr, char *buf, size_t size)
{
        if (!inet_ntop(addr->family == PF_IPV6 ? AF_INET6 : AF_INET, &addr->v6, buf, (socklen_t)size))
                snprintf(buf, size, "?");
}

static void print_event_json(const struct pf_fence_event *e, struct pf_json *json)
{
        struct timespec now;
        char addr[INET6_ADDRSTRLEN], time[32];

        clock_gettime(CLOCK_REALTIME, &now);
        snprintf(time, sizeof(time), "%lld.%03ld", (long long)now.tv_sec, now.tv_nsec / 1000000);
        format_addr(&e->addr, addr, sizeof(addr));
        pf_json_object_begin(json);
        pf_json_key(json, "time");
        pf_json_number(json, time);     /* seconds with their milliseconds */
        pf_json_kv_uint(json, "pid", e->pid);
        pf_json_kv_string(json, "program", e->comm);
        pf_json_kv_uint(json, "cgroup_id", e->cgroup_id);
        pf_json_kv_string(json, "call", e->call);
        pf_json_kv_string(json, "proto", pf_proto_name(e->proto));
        pf_json_kv_string(json, "family", e->addr.family == PF_IPV6 ? "ipv6" : "ipv4");
        pf_json_kv_string(json, "address", addr);
        pf_json_kv_uint(json, "port", e->port);
        pf_json_decision(json, e->action, e->target, e->err, e->rule);
        pf_json_object_end(json);
}

static void print_event(const struct pf_fence_event *e, void *ctx)
{
        struct pf_json *json = ctx;
        char addr[INET6_ADDRSTRLEN];

        if (json) {
                print_event_json(e, json);
        } else {
                format_addr(&e->addr, addr, sizeof(addr));
                pf_text(stdout, e->comm);
                printf("[%u]: %s %s%s%s:%u/%s: %s", e->pid, e->call, e->addr.family == PF_IPV6 ? "[" : "",
                       addr, e->addr.family == PF_IPV6 ? "]" : "", e->port, pf_proto_name(e->proto),
                       pf_action_name(e->action));
                if (e->action == PF_REMAP)
                        printf(" -> %u", e->target);
                if (e->action == PF_REFUSE)
                        printf(" (%s)", pf_errno_name(e->err));
                printf("\n");
        }
        fflush(stdout);
}

static int do_events(const struct cgroup_args *a, const struct pf_cgroup *cgroup, char *why)
{
        struct pf_json json;

        pf_json_init(&json, stdout);
        return pf_bpf_events(cgroup, a->count, print_event, a->json ? &json : NULL, why);
}

static int do_root(const struct cgroup_args *a, const struct pf_cgroup *cgroup, char *why)
{
        char mount[4096];
        int r = pf_cgroup_mount(mount, sizeof(mount), why);

        (void)a;
        (void)cgroup;
        if (r < 0)
                return r;
        printf("%s\n", mount);
        return 0;
}

/* detach, status, events: options, the root and cgroup checks, one call. */
/* What a simple subcommand takes: a PATH, maybe one, or none; root or not. */
enum path_rule { PATH_REQUIRED, PATH_OPTIONAL, PATH_NONE };

/* detach, status, events, prune, root: options, the checks, one call. */
static int cgroup_simple(const char *command, int argc, char **argv, enum path_rule path, bool root,
                         int (*action)(const struct cgroup_args *, const struct pf_cgroup *, char *))
{
        struct cgroup_args a = { 0 };
        struct pf_cgroup cgroup = { .root = false };
        char why[PF_WHY_SIZE];
        int r = parse_args(command, argc, argv, &a, path != PATH_REQUIRED);

        if (r)
                return r > 0 ? PF_EXIT_OK : PF_EXIT_USAGE;
        if (path == PATH_NONE && a.path) {
                pf_error(command, "takes no PATH");
                return PF_EXIT_USAGE;
        }
        if (root && prepare(command, &a, &cgroup) < 0)
                return PF_EXIT_USAGE;
        r = action(&a, &cgroup, why);
        if (r < 0) {
                pf_error(command, "%s", why);
                return pf_cgroup_exit(r);
        }
        return r > 0 ? PF_EXIT_FOUND : PF_EXIT_OK;
}

static int cgroup_attach_cmd(int argc, char **argv) { return cgroup_attach(argc, argv, false); }
static int cgroup_reload_cmd(int argc, char **argv) { return cgroup_attach(argc, argv, true); }
static int cgroup_detach_cmd(int argc, char **argv)
{
        return cgroup_simple("cgroup detach", argc, argv, PATH_REQUIRED, true, do_detach);
}
static int cgroup_status_cmd(int argc, char **argv)
{
        return cgroup_simple("cgroup status", argc, argv, PATH_OPTIONAL, true, do_status);
}
static int cgroup_events_cmd(int argc, char **argv)
{
        return cgroup_simple("cgroup events", argc, argv, PATH_REQUIRED, true, do_events);
}

/* ---- learn: a fence that only logs, its events, a proposal ----------------- */

/* The base's guarded ports, logged and nothing else: nothing is refused or
 * moved while learning, and every guarded bind is an event. */
static struct pf_policy *learning_policy(const struct pf_policy *base)
{
        struct pf_policy *policy = NULL;

        return pf_policy_log_only(base, &policy) == 0 ? policy : NULL;
}

static void learn_event(const struct pf_fence_event *e, void *ctx)
{
        char addr[INET6_ADDRSTRLEN], program[sizeof(e->comm) * 4 + 1] = "";
        FILE *f;

        if (strcmp(e->call, "bind") != 0)
                return;
        f = fmemopen(program, sizeof(program), "w");   /* escaped: kept safe for the comment */
        if (f) {
                pf_text(f, e->comm);
                fclose(f);
        }
        format_addr(&e->addr, addr, sizeof(addr));
        pf_learn_add(ctx, e->proto, e->port, e->port, program, addr);
}

static int cgroup_learn_cmd(int argc, char **argv)
{
        const char *command = "cgroup learn";
        struct cgroup_args a = { 0 };
        struct learn_state st = { 0 };
        struct pf_policy *base, *learning;
        struct pf_cgroup cgroup;
        char why[PF_WHY_SIZE], source[PATH_MAX];
        int r;

        base = fence_setup(command, argc, argv, &a, &cgroup, source, sizeof(source), &r);
        if (!base)
                return r;
        if (pf_cli_bpffs_ready(command) < 0) {
                pf_policy_free(base);
                return PF_EXIT_FAILURE;
        }
        learning = learning_policy(base);
        if (!learning) {
                pf_error(command, "the policy guards no port: nothing to learn");
                pf_policy_free(base);
                return PF_EXIT_USAGE;
        }
        r = pf_bpf_attach(learning, "(learning)", &cgroup, false, why);
        pf_policy_free(learning);
        if (r < 0) {
                pf_error(command, "%s", why);
                pf_policy_free(base);
                return pf_cgroup_exit(r);
        }
        pf_note(command, "learning %s%s", cgroup.path, a.duration ? "" : " until interrupted");
        if (a.duration)
                alarm(a.duration);
        r = pf_bpf_events(&cgroup, 0, learn_event, &st, why);
        alarm(0);
        if (pf_bpf_detach(&cgroup, why) < 0 || r < 0) {
                pf_error(command, "%s", why);
                r = PF_EXIT_FAILURE;
        } else {
                r = pf_learn_finish(command, base, &st, a.output);
        }
        free(st.ports);
        pf_policy_free(base);
        return r;
}

/* ---- guard: one fence held for the life of a node agent ------------------ */

/* The node's pod root (pf_cgroup_kubepods()), or -1 after saying why not. */
static int find_kubepods(char *out, size_t size)
{
        char why[PF_WHY_SIZE];

        if (pf_cgroup_kubepods(out, size, why) == 0)
                return 0;
        pf_error("cgroup guard", "%s", why);
        return -1;
}

/* Attach, or take over the fence a killed guard left (its policy replaced
 * in one step, so the cgroup is never unfenced). */
static int guard_fence(const struct pf_policy *policy, const char *source, const struct pf_cgroup *cgroup,
                       bool reload, char *why)
{
        const char *done = reload ? "policy reloaded" : "fenced";
        int r;

        if (!reload && pf_bpf_is_fenced(cgroup) && !pf_bpf_attach_unfinished(cgroup)) {
                reload = true;
                done = "fence taken over";
        }
        r = reload ? pf_bpf_reload(policy, source, cgroup, why) : pf_bpf_attach(policy, source, cgroup, false, why);
        if (r == 0)
                note_unsteered_datagrams("cgroup guard", policy, cgroup);
        if (r == 0) {
                pf_text(stdout, cgroup->path);
                printf(": %s with %s\n", done, source[0] ? source : PF_POLICY_BUILTIN);
                fflush(stdout);
        }
        return r;
}

/* SIGHUP: the policy read again and switched at once (a broken one is
 * reported and the fence keeps the one it has). */
static void guard_reload(const struct cgroup_args *a, const struct pf_cgroup *cgroup)
{
        char source[PATH_MAX], why[PF_WHY_SIZE];
        struct pf_policy *policy = load_for_kernel("cgroup guard", a->config, source, sizeof(source));

        if (policy && guard_fence(policy, source, cgroup, true, why) < 0)
                pf_error("cgroup guard", "%s", why);
        pf_policy_free(policy);
}

static int cgroup_guard_cmd(int argc, char **argv)
{
        const char *command = "cgroup guard";
        struct cgroup_args a = { 0 };
        struct pf_cgroup cgroup;
        struct pf_policy *policy;
        char why[PF_WHY_SIZE], source[PATH_MAX], pods[4096];
        sigset_t signals;
        int r = parse_args(command, argc, argv, &a, true), sig;

        if (r)
                return r > 0 ? PF_EXIT_OK : PF_EXIT_USAGE;
        if (!a.path == !a.kubepods) {
                pf_error(command, "give a cgroup PATH or --kubepods (one of them)");
                return PF_EXIT_USAGE;
        }
        if (a.kubepods) {
                if (find_kubepods(pods, sizeof(pods)) < 0)
                        return PF_EXIT_USAGE;
                a.path = pods;
        }
        if (prepare(command, &a, &cgroup) < 0 || check_new_fence(command, &a, &cgroup) < 0)
                return PF_EXIT_USAGE;
        policy = load_for_kernel(command, a.config, source, sizeof(source));
        if (!policy)
                return PF_EXIT_USAGE;
        if (pf_cli_bpffs_ready(command) < 0) {
                pf_policy_free(policy);
                return PF_EXIT_FAILURE;
        }
        /* Blocked before the fence exists: a SIGTERM during the attach is
         * taken by sigwait below and undoes it. */
        sigemptyset(&signals);
        sigaddset(&signals, SIGTERM);
        sigaddset(&signals, SIGINT);
        sigaddset(&signals, SIGHUP);
        sigprocmask(SIG_BLOCK, &signals, NULL);
        r = guard_fence(policy, source, &cgroup, false, why);
        pf_policy_free(policy);
        if (r < 0) {
                pf_error(command, "%s", why);
                return pf_cgroup_exit(r);
        }
        while (sigwait(&signals, &sig) == 0 && sig == SIGHUP)
                guard_reload(&a, &cgroup);
        if (a.keep) {
                pf_text(stdout, cgroup.path);
                printf(": fence kept (--keep)\n");
                return PF_EXIT_OK;
        }
        if (pf_bpf_detach(&cgroup, why) < 0) {
                pf_error(command, "%s", why);
                return PF_EXIT_FAILURE;
        }
        pf_text(stdout, cgroup.path);
        printf(": detached\n");
        return PF_EXIT_OK;
}

static void say_pruned(uint64_t id, void *ctx)
{
        (void)ctx;
        printf("cgroup id %llu: defunct fence removed\n", (unsigned long long)id);
}

/* Fences whose cgroup is gone (pods and units are deleted all day). */
static int do_prune(const struct cgroup_args *a, const struct pf_cgroup *cgroup, char *why)
{
        int r = pf_bpf_prune(say_pruned, NULL, why);

        (void)a;
        (void)cgroup;
        return r < 0 ? r : 0;
}

static int cgroup_prune_cmd(int argc, char **argv)
{
        return cgroup_simple("cgroup prune", argc, argv, PATH_NONE, true, do_prune);
}

/* Where cgroup v2 is mounted (no root needed): for scripts and tests. */
static int cgroup_root_cmd(int argc, char **argv)
{
        return cgroup_simple("cgroup root", argc, argv, PATH_NONE, false, do_root);
}

static const struct pf_command subcommands[] = {
        { "attach", cgroup_attach_cmd, "[-c FILE] [-v] [--whole-host] PATH", "fence PATH with the policy" },
        { "reload", cgroup_reload_cmd, "[-c FILE] PATH", "switch PATH's fence to the policy at once" },
        { "guard", cgroup_guard_cmd, "[-c FILE] [--keep] PATH|--kubepods",
          "fence PATH until SIGTERM (SIGHUP reloads): a node agent" },
        { "detach", cgroup_detach_cmd, "PATH|id:N", "remove PATH's fence, leaving nothing behind" },
        { "status", cgroup_status_cmd, "[--json | --prometheus | --textfile DIR | --probe] [PATH]",
          "every fence (or PATH's): policy, counters; --probe: is a bind in PATH decided?" },
        { "events", cgroup_events_cmd, "[--json] [--count N] PATH", "decisions as they happen" },
        { "learn", cgroup_learn_cmd, "[-c BASE] [--duration SECONDS] [-o FILE] PATH",
          "log every guarded bind of PATH for a while, then propose a policy" },
        { "prune", cgroup_prune_cmd, "", "remove the fences whose cgroup is gone" },
        { "root", cgroup_root_cmd, "", "print where cgroup v2 is mounted" },
};

static void cgroup_help(FILE *f)
{
        pf_cli_help(f, "cgroup", subcommands, PF_COUNT(subcommands));
        fprintf(f, "\nFence every process of a cgroup v2 with BPF programs (root). PATH is a cgroup\n"
                   "directory, a path below the cgroup v2 mount, pid:N (that process's cgroup) or\n"
                   "id:N (the id status shows, for a cgroup that is gone). The root cgroup is\n"
                   "fenced only with --whole-host.\n"
                   "Programs and maps are pinned below %s/<cgroup id>/.\n", PF_BPF_PIN_ROOT);
}

int pf_cmd_cgroup(int argc, char **argv)
{
        return pf_cli_dispatch("cgroup", subcommands, PF_COUNT(subcommands), argc, argv, cgroup_help);
}
