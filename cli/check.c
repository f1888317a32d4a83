/* SPDX-License-Identifier: MIT */
/* portfence check: validate a policy, and show what it does to given ports. */
#include <getopt.h>
#include <stdlib.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "host.h"
#ifdef PF_HAVE_BPF
#include "tables.h"
#endif

static void check_help(FILE *f)
{
        fprintf(f, "usage: portfence check [-c FILE] [--json] [--address ADDR] [--program NAME]\n"
                   "                       [--for cgroup|shim|landlock] [--fail-on-guarded]\n"
                   "                       [PORT[-PORT][/tcp|/udp]...]\n\n"
                   "Validate the policy (exit 0, or 2 with every FILE:LINE: error). With ports\n"
                   "(or ranges of them), print the verdict for a bind of each (default tcp,\n"
                   "address 0.0.0.0). The cgroup enforcer has limits of its own (conditions on\n"
                   "the first 1024 rules, two per port, globs HEAD*TAIL): a policy past them is\n"
                   "a note, or with --for cgroup an error; --for shim checks what the shim takes;\n"
                   "--for landlock shows what 'run --landlock' makes of each port for a program\n"
                   "the shim does not reach (no remap: EACCES).\n"
                   "--fail-on-guarded: exit 1 naming each given port the policy guards (a\n"
                   "client may be handed it): a test suite's check that its fixed ports are safe.\n");
}

struct port_arg {
        unsigned lo, hi;        /* one port: lo == hi */
        enum pf_proto proto;
};

/* PORT, or LO-HI, then an optional /tcp or /udp. */
static int parse_port_arg(const char *text, struct port_arg *out)
{
        char number[16], *dash;
        const char *slash = strchr(text, '/');
        size_t len = slash ? (size_t)(slash - text) : strlen(text);

        out->proto = PF_TCP;
        if (slash && pf_proto_parse(slash + 1, &out->proto) < 0)
                return -1;
        if (len == 0 || len >= sizeof(number))
                return -1;
        memcpy(number, text, len);
        number[len] = '\0';
        dash = strchr(number, '-');
        if (dash)
                *dash = '\0';
        if (pf_cli_parse_uint(number, 0, PF_PORT_MAX, &out->lo) < 0)
                return -1;
        out->hi = out->lo;
        if (dash && (pf_cli_parse_uint(dash + 1, 0, PF_PORT_MAX, &out->hi) < 0 || out->hi < out->lo))
                return -1;
        return 0;
}

static void print_verdict(const struct pf_policy *policy, unsigned port, enum pf_proto proto,
                          const struct pf_verdict *v, struct pf_json *json)
{
        char reason[512];

        pf_cli_verdict_reason(policy, port, v, reason, sizeof(reason));
        if (!json) {
                printf("%u/%s %s", port, pf_proto_name(proto), pf_action_name(v->action));
                if (v->action == PF_REMAP)
                        printf(" -> %u", v->target);
                else if (v->action == PF_REFUSE)
                        printf(" %s", pf_errno_name(v->err));
                printf(" (%s)\n", reason);
                return;
        }
        pf_json_object_begin(json);
        pf_json_kv_uint(json, "port", port);
        pf_json_kv_string(json, "proto", pf_proto_name(proto));
        pf_json_decision(json, v->action, v->target, v->err, v->rule);
        pf_json_kv_string(json, "reason", reason);
        pf_json_object_end(json);
}

/* The default wrap-around, said where it happens: ports moved into a pool
 * smaller than they are share its ports, and then fail in turn. */
static void note_pool_sharing(const struct pf_policy *policy)
{
        struct pf_pool_share share;

        if (pf_policy_pool_share(policy, &share) < 0 || share.most < 2)
                return;
        pf_note("check", "the remap pool is shared: %u ports are moved into it and up to %u go to one "
                "pool port (%u and %u both go to %u/%s); while one of their servers holds it, the "
                "other's bind fails. Widen remap_pool, narrow the guarded range, or give rules a "
                "'to' of their own", share.sources, share.most, share.example[0], share.example[1],
                share.target, pf_proto_name(share.proto));
}

/* A remap moves a server where only the clients portfence runs or fences
 * follow it: said wherever the policy moves any. */
static void note_unfollowed_clients(const struct pf_policy *policy)
{
        bool moves = pf_policy_moves_servers(policy);

        if (moves && pf_policy_steer(policy))
                pf_note("check", "a cgroup fence steers every new TCP connection and UDP datagram to a moved "
                        "server's port to it, in the network namespace the fence was attached from (other "
                        "hosts, published container ports, Services, unfenced programs); 'portfence run' as "
                        "root does the same in the namespace it starts in. Otherwise a moved server is "
                        "reached at the port it asked for only by clients portfence runs or fences: every "
                        "client the shim does not run of a server an unprivileged 'run' moved, and a fenced "
                        "UDP server's clients behind a DNAT inside its own namespace until a datagram "
                        "addressed to its port arrived, send to that port and are refused. Where that matters, fence the server's cgroup, reserve its port "
                        "('portfence export sysctl') or refuse it");
        else if (moves)
                pf_note("check", "steer = false: a moved server is reached at the port it asked for only by "
                        "clients portfence runs or fences: clients on other hosts, in other network "
                        "namespaces (published container ports, Services) and local programs started "
                        "without portfence connect to that port and are refused. Where that matters, "
                        "reserve its port ('portfence export sysctl') or refuse it");
}

/* Where the shim will log, if it can: a destination it cannot open sends
 * the lines to stderr instead, which is better known now. */
static void warn_log_destination(const struct pf_policy *policy)
{
        struct pf_log_settings log;
        struct stat st;
        char dir[PATH_MAX], *slash;

        pf_policy_log(policy, &log);
        if (log.to == PF_LOG_SYSLOG && (stat("/dev/log", &st) < 0 || !S_ISSOCK(st.st_mode))) {
                pf_warning("check", "log to syslog, but /dev/log is no socket here: the shim will log "
                           "to stderr");
                return;
        }
        if (log.to != PF_LOG_FILE)
                return;
        if (access(log.path, F_OK) == 0) {
                if (access(log.path, W_OK) < 0)
                        pf_warning("check", "log file '%s' cannot be opened: %s; the shim will log to "
                                   "stderr (for users without write access)", log.path, strerror(errno));
                return;
        }
        snprintf(dir, sizeof(dir), "%s", log.path);
        slash = strrchr(dir, '/');
        if (slash)
                slash[slash == dir] = '\0';
        if (slash && stat(dir, &st) < 0)
                pf_warning("check", "log file '%s' cannot be opened: its directory does not exist; the "
                           "shim will log to stderr", log.path);
        else if (access(slash ? dir : ".", W_OK) < 0)
                pf_warning("check", "log file '%s' cannot be created: %s; the shim will log to stderr "
                           "(for users without write access)", log.path, strerror(errno));
}

enum enforcer { FOR_ANY, FOR_SHIM, FOR_CGROUP, FOR_LANDLOCK };

/* What the cgroup programs cannot hold of a valid policy (the shim takes
 * every one): 0, or -1 with why. Built by the very code attach runs. */
static int cgroup_refuses(const struct pf_policy *policy, char *why)
{
#ifdef PF_HAVE_BPF
        struct pf_bpf_span *spans = NULL;
        struct pf_bpf_rule *rules = NULL;
        uint32_t count;
        int r = pf_bpf_build_rules(policy, &rules, &count, why);

        if (r == 0)
                r = pf_bpf_build_spans(policy, &spans, &count, why);
        free(spans);
        free(rules);
        return r < 0 ? -1 : 0;
#else
        (void)policy;
        snprintf(why, PF_WHY_SIZE, "this portfence was built without the cgroup enforcer");
        return -1;
#endif
}

/* 0, or PF_EXIT_USAGE when the enforcer asked for would refuse the policy. */
static int check_enforcer(const struct pf_policy *policy, enum enforcer e)
{
        char why[PF_WHY_SIZE];

        if (e == FOR_SHIM || e == FOR_LANDLOCK || cgroup_refuses(policy, why) == 0)
                return PF_EXIT_OK;
        if (e == FOR_CGROUP) {
                pf_error("check", "the cgroup enforcer would refuse this policy: %s", why);
                return PF_EXIT_USAGE;
        }
#ifdef PF_HAVE_BPF
        pf_note("check", "'portfence cgroup attach' would refuse this policy (the shim takes it): %s", why);
#endif
        return PF_EXIT_OK;
}

static void print_summary(const struct pf_policy *policy)
{
        char tcp[512], udp[512], pool[512];

        pf_portset_format(pf_policy_guarded(policy, PF_TCP), tcp, sizeof(tcp));
        pf_portset_format(pf_policy_guarded(policy, PF_UDP), udp, sizeof(udp));
        pf_portset_format(pf_policy_pool(policy), pool, sizeof(pool));
        printf("%s: valid, %u rule%s\n", pf_policy_name(policy), pf_policy_rule_count(policy),
               pf_policy_rule_count(policy) == 1 ? "" : "s");
        printf("guarded tcp: %s\nguarded udp: %s\nremap pool: %s\n", *tcp ? tcp : "none",
               *udp ? udp : "none", *pool ? pool : "none");
}

/* Every port argument checked before the policy is read: PF_EXIT_OK and
 * *out, or the exit code of the error (printed). */
static int parse_ports(int count, char **args, struct port_arg **out)
{
        struct port_arg *ports = calloc((size_t)count + 1, sizeof(*ports));

        if (!ports) {
                pf_error("check", "%s", strerror(ENOMEM));
                return PF_EXIT_FAILURE;
        }
        for (int i = 0; i < count; i++) {
                if (parse_port_arg(args[i], &ports[i]) < 0) {
                        pf_error("check", "bad port '%s': expected PORT[-PORT][/tcp|/udp], PORT 0-65535",
                                 args[i]);
                        free(ports);
                        return PF_EXIT_USAGE;
                }
        }
        *out = ports;
        return PF_EXIT_OK;
}

/* What Landlock makes of a verdict, for a program the shim does not reach:
 * a TCP port it leaves open is bound as asked (Landlock knows no remap),
 * any other is refused with EACCES; UDP is not covered. */
static void as_landlock(const struct pf_portset *open, const struct pf_query *query, struct pf_verdict *v)
{
        if (query->proto != PF_TCP || query->port == 0)
                return;
        if (pf_portset_has(open, query->port))
                *v = (struct pf_verdict){ .action = PF_ALLOW, .rule = v->action == PF_ALLOW ? v->rule : 0,
                                          .guarded = v->guarded };
        else
                *v = (struct pf_verdict){ .action = PF_REFUSE, .err = EACCES, .rule = v->rule,
                                          .guarded = v->guarded };
}

/* Each port of the arguments, decided: visit(port, proto, verdict, ctx). */
static void each_verdict(const struct pf_policy *policy, struct pf_query *query, const struct port_arg *ports,
                         int count, void (*visit)(unsigned port, const struct pf_query *query,
                                                  struct pf_verdict *v, void *ctx), void *ctx)
{
        for (int i = 0; i < count; i++) {
                for (unsigned port = ports[i].lo; port <= ports[i].hi; port++) {
                        struct pf_verdict verdict;

                        query->proto = ports[i].proto;
                        query->port = (uint16_t)port;
                        pf_decide(policy, query, &verdict);
                        visit(port, query, &verdict, ctx);
                }
        }
}

struct verdict_printer {
        const struct pf_policy *policy;
        struct pf_json *json;           /* NULL: text */
        bool landlock;
        struct pf_portset open;         /* landlock: the ports it leaves open */
};

static void print_one(unsigned port, const struct pf_query *query, struct pf_verdict *v, void *ctx)
{
        struct verdict_printer *p = ctx;

        if (p->landlock)
                as_landlock(&p->open, query, v);
        print_verdict(p->policy, port, query->proto, v, p->json);
}

static void print_verdicts(const struct pf_policy *policy, struct pf_query *query,
                           const struct port_arg *ports, int count, bool json, bool landlock)
{
        struct verdict_printer printer = { .policy = policy, .landlock = landlock };
        struct pf_json writer;

        if (landlock)
                pf_policy_landlock_tcp(policy, &printer.open);
        pf_json_init(&writer, stdout);
        printer.json = json ? &writer : NULL;
        if (json)
                pf_json_array_begin(&writer);
        each_verdict(policy, query, ports, count, print_one, &printer);
        if (json)
                pf_json_array_end(&writer);
}

/* --for landlock: what the policy becomes for what the shim cannot see. */
static void note_landlock(const struct pf_policy *policy)
{
        const char *unusable = pf_host_landlock_unusable(pf_landlock_abi());
        struct pf_portset open;

        pf_policy_landlock_tcp(policy, &open);
        pf_note("check", "under Landlock ('portfence run --landlock'), a program the shim does not reach may "
                "bind %u TCP ports and port 0; any other TCP bind gets EACCES, a remapped port included "
                "(Landlock knows no remap), whatever errno the policy names; UDP is not covered%s%s",
                pf_portset_count(&open), unusable ? ". Here: " : "", unusable ? unusable : "");
}

/* --fail-on-guarded: each port a client may be handed, named; 1 if any. */
static void name_if_guarded(unsigned port, const struct pf_query *query, struct pf_verdict *v, void *ctx)
{
        if (!v->guarded)
                return;
        fprintf(stderr, "portfence: check: %u/%s is guarded: inside the ephemeral range of this policy, a "
                "client may be handed it\n", port, pf_proto_name(query->proto));
        *(int *)ctx = 1;
}

static int name_guarded(const struct pf_policy *policy, struct pf_query *query, const struct port_arg *ports,
                        int count)
{
        int guarded = 0;

        each_verdict(policy, query, ports, count, name_if_guarded, &guarded);
        return guarded;
}

int pf_cmd_check(int argc, char **argv)
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "json", no_argument, NULL, 'j' },
                { "address", required_argument, NULL, 'a' },
                { "program", required_argument, NULL, 'p' },
                { "for", required_argument, NULL, 'f' },
                { "fail-on-guarded", no_argument, NULL, 'g' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        enum enforcer enforcer = FOR_ANY;
        char comm[16];
        const char *config = NULL;
        struct pf_query query = { .addr.family = PF_IPV4 };
        struct pf_policy *policy;
        struct port_arg *ports;
        bool json = false, fail_on_guarded = false;
        int opt, r;

        while ((opt = pf_cli_getopt("check", argc, argv, "c:h", options)) != -1) {
                switch (opt) {
                case 'c': config = optarg; break;
                case 'j': json = true; break;
                case 'g': fail_on_guarded = true; break;
                case 'p':       /* the thread name a process of that name has: 15 characters */
                        snprintf(comm, sizeof(comm), "%s", optarg);
                        query.program = comm;
                        if (strlen(optarg) >= sizeof(comm))
                                pf_note("check", "--program '%s' is seen as '%s': a name keeps 15 characters",
                                        optarg, comm);
                        break;
                case 'f':
                        if (strcmp(optarg, "cgroup") != 0 && strcmp(optarg, "shim") != 0 &&
                            strcmp(optarg, "landlock") != 0) {
                                pf_error("check", "unknown enforcer '%s' (cgroup, shim or landlock)", optarg);
                                return PF_EXIT_USAGE;
                        }
                        enforcer = optarg[0] == 'c' ? FOR_CGROUP : optarg[0] == 's' ? FOR_SHIM : FOR_LANDLOCK;
                        break;
                case 'a':
                        if (pf_addr_parse(optarg, &query.addr) < 0) {
                                pf_error("check", "bad address '%s'", optarg);
                                return PF_EXIT_USAGE;
                        }
                        break;
                case 'h': check_help(stdout); return PF_EXIT_OK;
                default: check_help(stderr); return PF_EXIT_USAGE;
                }
        }
        if (fail_on_guarded && optind == argc) {
                pf_error("check", "--fail-on-guarded: no ports given");
                return PF_EXIT_USAGE;
        }
        r = parse_ports(argc - optind, argv + optind, &ports);
        if (r != PF_EXIT_OK)
                return r;
        policy = pf_cli_load_policy("check", config);
        r = policy ? check_enforcer(policy, enforcer) : PF_EXIT_USAGE;
        if (r == PF_EXIT_OK) {
                if (optind == argc && !json)
                        print_summary(policy);
                pf_cli_comm_notes("check", policy);
                note_pool_sharing(policy);
                if (optind == argc) {   /* the summary's, not every query's */
                        note_unfollowed_clients(policy);
                        pf_cli_warn_unreserved("check", policy, "this host", true);
                }
                warn_log_destination(policy);
                if (enforcer == FOR_LANDLOCK)
                        note_landlock(policy);
                print_verdicts(policy, &query, ports, argc - optind, json, enforcer == FOR_LANDLOCK);
                if (fail_on_guarded && name_guarded(policy, &query, ports, argc - optind))
                        r = PF_EXIT_FOUND;
        }
        pf_policy_free(policy);
        free(ports);
        return r;
}
