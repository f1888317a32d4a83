/* SPDX-License-Identifier: MIT */
/* portfence scan: the servers on this host that sit in a guarded range, and
 * the clients sitting on a port the policy gives to a server. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"
#include "cli.h"
#include "host.h"
#include "sockets.h"

static void scan_help(FILE *f)
{
        fprintf(f, "usage: portfence scan [-c FILE] [--json] [--all-netns]\n\n"
                   "List what is at risk in this network namespace: TCP listeners in a guarded\n"
                   "range that ip_local_reserved_ports does not protect (server-in-ephemeral),\n"
                   "unconnected UDP sockets there (udp-in-ephemeral: a server, or a client\n"
                   "sending from a kernel-chosen port), and client connections whose local port\n"
                   "the policy gives to a server (client-on-server-port). Each with its owners,\n"
                   "the policy's verdict for a bind of its port and why it is a risk. Exit 1\n"
                   "when anything is found, 0 when clean, 2 on errors.\n"
                   "--all-netns (root): every network namespace a process is in (containers,\n"
                   "pods), each finding with the namespace's inode, a pid in it and its cgroup;\n"
                   "the policy's \"host\" ranges are this namespace's.\n");
}

struct netns;

struct finding {
        const char *kind;
        struct pf_verdict verdict;
        char risk[256];
};

/* A connection accepted by a listener shares its local port: not a client. */
static bool has_listener(const struct pf_socket *list, size_t count, const struct pf_socket *s)
{
        for (size_t i = 0; i < count; i++)
                if (list[i].listening && list[i].proto == s->proto && list[i].port == s->port)
                        return true;
        return false;
}

struct scan {
        const struct pf_policy *policy;
        struct pf_portset server_ports[PF_PROTO_COUNT];
        struct pf_portset reserved;     /* this namespace's ip_local_reserved_ports */
        const struct pf_socket *list;
        size_t count;
};

static void decide_socket(const struct pf_policy *policy, const struct pf_socket *s, struct pf_verdict *v)
{
        struct pf_query q = { .proto = s->proto, .port = s->port,
                              .program = s->owner_count ? s->owners[0].program : NULL };

        if (s->family == AF_INET)
                pf_addr_set_in4(&q.addr, (const struct in_addr *)(const void *)s->addr);
        else
                pf_addr_set_in6(&q.addr, (const struct in6_addr *)(const void *)s->addr);
        pf_decide(policy, &q, v);
}

/* A server in the guarded range: at risk unless the kernel keeps clients
 * off its port; the verdict says whether the policy even wants it there. */
static bool server_risk(const struct pf_socket *s, struct finding *f)
{
        if (f->verdict.action == PF_REFUSE || f->verdict.action == PF_REMAP) {
                snprintf(f->risk, sizeof(f->risk), "the policy would %s this bind: the server runs "
                         "unfenced, and a client can be given its port while it is down",
                         f->verdict.action == PF_REFUSE ? "refuse" : "remap");
                return true;
        }
        snprintf(f->risk, sizeof(f->risk), "a client can be given this port while the server is down "
                 "(reserve it: portfence export sysctl)");
        (void)s;
        return true;
}

static bool classify(const struct scan *sc, const struct pf_socket *s, struct finding *f)
{
        if (s->port == 0 || s->time_wait)
                return false;
        decide_socket(sc->policy, s, &f->verdict);
        if (s->listening) {
                if (!pf_portset_has(pf_policy_guarded(sc->policy, s->proto), s->port) ||
                    pf_portset_has(&sc->reserved, s->port))
                        return false;   /* the kernel never hands its port to a client */
                f->kind = s->proto == PF_TCP ? "server-in-ephemeral" : "udp-in-ephemeral";
                server_risk(s, f);
                if (s->proto == PF_UDP)
                        snprintf(f->risk + strlen(f->risk), sizeof(f->risk) - strlen(f->risk),
                                 "; or a client sending from a kernel-chosen port: no risk (sock_diag "
                                 "cannot tell them apart)");
                return true;
        }
        if (pf_portset_has(&sc->server_ports[s->proto], s->port) && !has_listener(sc->list, sc->count, s)) {
                f->kind = "client-on-server-port";
                snprintf(f->risk, sizeof(f->risk), "the policy gives this port to a server, whose bind "
                         "fails with EADDRINUSE while this client holds it");
                return true;
        }
        return false;
}

static void print_owners_text(const struct pf_socket *s)
{
        if (s->owner_count == 0) {
                printf("owner not visible");
                return;
        }
        for (unsigned i = 0; i < s->owner_count; i++) {
                printf("%spid %d (", i ? ", " : "", (int)s->owners[i].pid);
                pf_text(stdout, s->owners[i].program);
                printf(")");
        }
}

static void print_netns(const struct netns *ns, struct pf_json *json);

static void print_finding(const struct scan *sc, const struct pf_socket *s, const struct finding *f,
                          struct pf_json *json, const struct netns *ns)
{
        char text[64], reason[512];

        pf_cli_verdict_reason(sc->policy, s->port, &f->verdict, reason, sizeof(reason));
        if (!json) {
                pf_socket_format(s, text, sizeof(text));
                printf("%s %s ", pf_proto_name(s->proto), text);
                print_owners_text(s);
                printf(": %s: %s", f->kind, pf_action_name(f->verdict.action));
                if (f->verdict.action == PF_REMAP)
                        printf(" -> %u", f->verdict.target);
                printf(" (");
                pf_text(stdout, reason);
                printf("): %s\n", f->risk);
                return;
        }
        pf_socket_address(s, text, sizeof(text));
        pf_json_object_begin(json);
        pf_json_kv_string(json, "proto", pf_proto_name(s->proto));
        pf_json_kv_string(json, "address", text);
        pf_json_kv_uint(json, "port", s->port);
        pf_json_key(json, "pid");       /* the first owner, 0 when none is visible */
        pf_json_int(json, s->owner_count ? s->owners[0].pid : 0);
        pf_json_kv_string(json, "program", s->owner_count ? s->owners[0].program : "?");
        pf_json_key(json, "owners");
        pf_json_array_begin(json);
        for (unsigned i = 0; i < s->owner_count; i++) {
                pf_json_object_begin(json);
                pf_json_key(json, "pid");
                pf_json_int(json, s->owners[i].pid);
                pf_json_kv_string(json, "program", s->owners[i].program);
                pf_json_object_end(json);
        }
        pf_json_array_end(json);
        pf_json_kv_string(json, "kind", f->kind);
        pf_json_key(json, "verdict");
        pf_json_object_begin(json);
        pf_json_decision(json, f->verdict.action, f->verdict.target, f->verdict.err, f->verdict.rule);
        pf_json_kv_string(json, "reason", reason);
        pf_json_object_end(json);
        pf_json_kv_string(json, "risk", f->risk);
        if (ns)
                print_netns(ns, json);
        pf_json_object_end(json);
}

/* The network namespace a finding is in (--all-netns): its inode, and one
 * process living in it with that process's cgroup (a container's name). */
struct netns {
        unsigned long inode;
        pid_t pid;
        char cgroup[256];
};

static void print_netns(const struct netns *ns, struct pf_json *json)
{
        if (json) {
                pf_json_key(json, "netns");
                pf_json_object_begin(json);
                pf_json_kv_uint(json, "inode", ns->inode);
                pf_json_key(json, "pid");
                pf_json_int(json, ns->pid);
                pf_json_kv_string(json, "cgroup", ns->cgroup);
                pf_json_object_end(json);
                return;
        }
        printf("netns %lu (pid %d, cgroup ", ns->inode, (int)ns->pid);
        pf_text(stdout, ns->cgroup);
        printf(") ");
}

/* The guardrail for the current network namespace: the policy's server
 * ports its kernel may hand a client now (a widened range). */
static void warn_unreserved(const struct scan *sc, const struct netns *ns)
{
        char where[128];

        if (ns)
                snprintf(where, sizeof(where), "netns %llu (pid %d)", (unsigned long long)ns->inode,
                         (int)ns->pid);
        else
                snprintf(where, sizeof(where), "this network namespace");
        pf_cli_warn_unreserved("scan", sc->policy, where, false);
}

/* Every finding of the current network namespace; the count, or a negative
 * errno. */
static int scan_namespace(struct scan *sc, const struct netns *ns, struct pf_json *json, bool *hidden_owners)
{
        char why[PF_WHY_SIZE];
        struct pf_socket *list;
        size_t count;
        int r = pf_sockets_read(&list, &count), found = 0;

        if (r < 0)
                return r;
        pf_sockets_owners(list, count);
        sc->list = list;
        sc->count = count;
        if (pf_host_reserved_read(PF_PROC_RESERVED, &sc->reserved, why) < 0)
                pf_portset_clear(&sc->reserved);
        for (size_t i = 0; i < count; i++) {
                struct finding f;

                if (!classify(sc, &list[i], &f))
                        continue;
                if (ns && !json)
                        print_netns(ns, NULL);
                print_finding(sc, &list[i], &f, json, ns);
                *hidden_owners |= list[i].owner_count == 0;
                found++;
        }
        free(list);
        warn_unreserved(sc, ns);
        return found;
}

/* ---- --all-netns: every network namespace a process of this host is in ---- */

static int netns_by_inode(const void *a, const void *b)
{
        const struct netns *x = a, *y = b;

        return x->inode < y->inode ? -1 : x->inode > y->inode;
}

/* The cgroup of pid, "?" when it cannot be read (the process left). */
static void pid_cgroup_name(pid_t pid, char *out, size_t size)
{
        char text[16], why[PF_WHY_SIZE];

        snprintf(text, sizeof(text), "%d", (int)pid);
        if (pf_cgroup_of_pid(text, out, size, why) < 0)
                snprintf(out, size, "?");
}

/* One entry per namespace (the lowest pid in it), sorted by inode. */
static int list_namespaces(struct netns **out, size_t *count)
{
        DIR *proc = opendir("/proc");
        struct dirent *d;
        struct netns *list = NULL;
        size_t n = 0, capacity = 0;

        if (!proc)
                return -errno;
        while ((d = readdir(proc))) {
                char path[64];
                struct stat st;
                pid_t pid;
                size_t i;

                if (strspn(d->d_name, "0123456789") != strlen(d->d_name))
                        continue;
                pid = (pid_t)atoi(d->d_name);
                snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
                if (stat(path, &st) < 0)
                        continue;       /* gone, or a kernel thread */
                for (i = 0; i < n && list[i].inode != st.st_ino; i++)
                        ;
                if (i < n) {
                        if (pid < list[i].pid)
                                list[i].pid = pid;
                        continue;
                }
                if (n == capacity) {
                        struct netns *grown = realloc(list, (capacity = capacity * 2 + 16) * sizeof(*list));

                        if (!grown) {
                                free(list);
                                closedir(proc);
                                return -ENOMEM;
                        }
                        list = grown;
                }
                list[n++] = (struct netns){ .inode = st.st_ino, .pid = pid };
        }
        closedir(proc);
        for (size_t i = 0; i < n; i++)
                pid_cgroup_name(list[i].pid, list[i].cgroup, sizeof(list[i].cgroup));
        qsort(list, n, sizeof(*list), netns_by_inode);
        *out = list;
        *count = n;
        return 0;
}

/* Enter each namespace in turn (setns), scan it, come back. A namespace
 * whose last process exits meanwhile is skipped. */
static int scan_all_namespaces(struct scan *sc, struct pf_json *json, bool *hidden_owners)
{
        struct netns *list = NULL;
        size_t count = 0;
        int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC), found = 0, r;

        if (home < 0)
                return -errno;
        r = list_namespaces(&list, &count);
        for (size_t i = 0; r >= 0 && i < count; i++) {
                char path[64];
                int fd;

                snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)list[i].pid);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                r = setns(fd, CLONE_NEWNET);
                close(fd);
                if (r < 0) {
                        r = -errno;
                        break;
                }
                r = scan_namespace(sc, &list[i], json, hidden_owners);
                found += r > 0 ? r : 0;
                if (setns(home, CLONE_NEWNET) < 0 && r >= 0)
                        r = -errno;
        }
        free(list);
        close(home);
        return r < 0 ? r : found;
}

int pf_cmd_scan(int argc, char **argv)
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "json", no_argument, NULL, 'j' },
                { "all-netns", no_argument, NULL, 'A' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        struct scan sc = { .policy = NULL };
        const char *config = NULL;
        bool hidden_owners = false, json = false, all = false;
        struct pf_policy *policy;
        struct pf_json writer;
        int opt, found;

        while ((opt = pf_cli_getopt("scan", argc, argv, "c:h", options)) != -1) {
                switch (opt) {
                case 'c': config = optarg; break;
                case 'j': json = true; break;
                case 'A': all = true; break;
                case 'h': scan_help(stdout); return PF_EXIT_OK;
                default: scan_help(stderr); return PF_EXIT_USAGE;
                }
        }
        if (optind != argc) {
                pf_error("scan", "unexpected argument '%s'", argv[optind]);
                return PF_EXIT_USAGE;
        }
        if (all && geteuid() != 0) {
                pf_error("scan", "--all-netns needs root (entering a namespace takes CAP_SYS_ADMIN)");
                return PF_EXIT_USAGE;
        }
        policy = pf_cli_load_policy("scan", config);
        if (!policy)
                return PF_EXIT_USAGE;
        sc.policy = policy;
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++)
                pf_policy_server_ports(policy, proto, &sc.server_ports[proto]);
        pf_json_init(&writer, stdout);
        if (json)
                pf_json_array_begin(&writer);
        found = all ? scan_all_namespaces(&sc, json ? &writer : NULL, &hidden_owners)
                    : scan_namespace(&sc, NULL, json ? &writer : NULL, &hidden_owners);
        if (json)
                pf_json_array_end(&writer);
        pf_policy_free(policy);
        if (found < 0) {
                pf_error("scan", "cannot read %s sockets (sock_diag, setns): %s",
                         all ? "every network namespace's" : "this host's", strerror(-found));
                return PF_EXIT_FAILURE;
        }
        if (hidden_owners && geteuid() != 0)
                pf_note("scan", "the owners of other users' sockets are shown to root only");
        return found ? PF_EXIT_FOUND : PF_EXIT_OK;
}
