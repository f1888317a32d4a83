/* SPDX-License-Identifier: MIT */
/* portfence export sysctl|systemd: the policy in the kernel's and systemd's
 * own terms, for hosts and units that enforce it themselves. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "host.h"

static void export_help(FILE *f);

/* What systemd allows in a unit name (unit-name.h's VALID_CHARS with '@'). */
#define UNIT_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@"

/* The list as text, or NULL (out of memory, said). */
static char *format_ports(const struct pf_portset *set)
{
        size_t size = pf_portset_format(set, NULL, 0) + 1;
        char *text = malloc(size);

        if (!text)
                pf_error("export", "%s", strerror(ENOMEM));
        else
                pf_portset_format(set, text, size);
        return text;
}

/* Said on stdout as a comment where the output takes one (JSON does not). */
static void say_nothing_to_export(const struct pf_policy *policy, const char *range_text, bool comment)
{
        if (comment) {
                printf("# portfence: nothing to export: every port ");
                pf_text(stdout, pf_policy_name(policy));
                printf(" gives to a server is outside ip_local_port_range (%s) or reserved already\n",
                       range_text);
        }
        pf_note("export", "nothing to export: the kernel never hands a port of this policy's "
                "servers to a client here");
}

/* net.ipv4.ip_local_reserved_ports: the reservations there already, plus
 * every port the policy gives to a server that the kernel could hand to a
 * client (inside ip_local_port_range): a reservation elsewhere protects
 * nothing. The setting is per network namespace. */
static int export_sysctl(const struct pf_policy *policy)
{
        struct pf_portset reserved, range, wanted;
        char *text, why[PF_WHY_SIZE], range_text[32];

        if (pf_host_reserved_read(PF_PROC_RESERVED, &reserved, why) < 0 ||
            pf_host_port_range_read(PF_PROC_PORT_RANGE, &range, why) < 0) {
                pf_error("export", "%s", why);
                return PF_EXIT_FAILURE;
        }
        pf_policy_unreserved_server_ports(policy, &range, &reserved, &wanted);
        pf_portset_format(&range, range_text, sizeof(range_text));
        if (pf_portset_empty(&wanted)) {
                say_nothing_to_export(policy, range_text, true);
                return PF_EXIT_OK;
        }
        pf_portset_union(&reserved, &wanted);
        text = format_ports(&reserved);
        if (!text)
                return PF_EXIT_FAILURE;
        printf("# ip_local_reserved_ports is per network namespace: apply it in each one\n");
        printf("net.ipv4.ip_local_reserved_ports = %s\n", text);
        free(text);
        return PF_EXIT_OK;
}

/* The same reservation inside pods: a pod's network namespace starts with
 * the kernel's default ip_local_port_range and no reservations, whatever
 * the node has. Kubernetes counts this sysctl safe from 1.27 on. */
#define NETNS_DEFAULT_LO 32768
#define NETNS_DEFAULT_HI 60999

/* What a new network namespace must reserve (its range is the kernel's
 * default, with nothing reserved) as text in *text, or NULL when nothing
 * (said). PF_EXIT_OK or PF_EXIT_FAILURE (out of memory, said). */
static int new_namespace_reservation(const struct pf_policy *policy, char range_text[32], bool comment,
                                     char **text)
{
        struct pf_portset range, none, wanted;

        pf_portset_clear(&range);
        pf_portset_clear(&none);
        pf_portset_add_range(&range, NETNS_DEFAULT_LO, NETNS_DEFAULT_HI);
        pf_policy_unreserved_server_ports(policy, &range, &none, &wanted);
        pf_portset_format(&range, range_text, 32);
        *text = NULL;
        if (pf_portset_empty(&wanted)) {
                say_nothing_to_export(policy, range_text, comment);
                return PF_EXIT_OK;
        }
        *text = format_ports(&wanted);
        return *text ? PF_EXIT_OK : PF_EXIT_FAILURE;
}

static int export_kubernetes_sysctls(const struct pf_policy *policy)
{
        char *text, range_text[32];
        int r = new_namespace_reservation(policy, range_text, true, &text);

        if (!text)
                return r;
        printf("# from ");
        pf_text(stdout, pf_policy_name(policy));
        printf(" by 'portfence export kubernetes-sysctls': a pod's server ports kept from\n"
               "# its clients inside the pod's own network namespace (its ip_local_port_range\n"
               "# is the kernel's default, %s). Goes in the pod spec; a 'safe' sysctl\n"
               "# from Kubernetes 1.27 (before: allow it with the kubelet's --allowed-unsafe-sysctls).\n"
               "securityContext:\n"
               "  sysctls:\n"
               "    - name: net.ipv4.ip_local_reserved_ports\n"
               "      value: \"%s\"\n", range_text, text);
        free(text);
        return PF_EXIT_OK;
}

/* The same reservation for every container of a CNI network: an entry for
 * the "plugins" list of its configuration, after the plugin that makes the
 * interface: the tuning plugin (containernetworking-plugins) writes the
 * sysctl in each container's network namespace as it is made, with no
 * privileged writer per container. JSON alone on stdout. */
static int export_cni(const struct pf_policy *policy)
{
        char *text, range_text[32];
        int r = new_namespace_reservation(policy, range_text, false, &text);

        if (!text)
                return r;
        printf("{\n"
               "  \"type\": \"tuning\",\n"
               "  \"sysctl\": {\n"
               "    \"net.ipv4.ip_local_reserved_ports\": \"%s\"\n"
               "  }\n"
               "}\n", text);
        free(text);
        return PF_EXIT_OK;
}

/* "SocketBindDeny=ipv4:tcp:32768-60999" style lines for one set. */
static void print_bind_lines(const char *key, const struct pf_portset *set, enum pf_proto proto)
{
        struct pf_range range = { 0, 0 };

        while (pf_portset_next_range(set, &range)) {
                if (range.lo == range.hi)
                        printf("%s=%s:%u\n", key, pf_proto_name(proto), range.lo);
                else
                        printf("%s=%s:%u-%u\n", key, pf_proto_name(proto), range.lo, range.hi);
        }
}

/* A comment for each rule systemd cannot express as it is. */
static void comment_rules(const struct pf_policy *policy)
{
        for (unsigned rule = 1; rule <= pf_policy_rule_count(policy); rule++) {
                struct pf_conditions c;
                const char *note = NULL;

                pf_policy_conditions(policy, rule, &c);
                if (c.has_family || c.has_cidr || c.program)
                        note = "its family, address or program conditions cannot be expressed: "
                               "its ports are decided as if it never matched";
                else if (pf_policy_rule_action(policy, rule) == PF_REMAP)
                        note = "systemd cannot move a bind: its ports are denied instead";
                else if (pf_policy_rule_action(policy, rule) == PF_LOG)
                        note = "systemd does not log binds: its ports are allowed";
                if (note)
                        printf("# rule %u (%s:%u): %s\n", rule, pf_policy_rule_file(policy, rule),
                               pf_policy_rule_line(policy, rule), note);
        }
}

/* SocketBindDeny= over the guarded ranges and every refused port, and
 * SocketBindAllow= (which takes precedence) for the guarded ports the policy
 * lets through. A remap becomes a deny; conditions are dropped. */
#define SYSTEMD_LIST_MAX 128      /* entries systemd takes per SocketBindAllow=/Deny= list */
#define SYSTEMCTL "/usr/bin/systemctl"

/* Does this host's systemd enforce SocketBind*=? 1 yes, 0 no, -1 unknown:
 * 'systemctl --version' lists +BPF_FRAMEWORK or -BPF_FRAMEWORK. Run from
 * its fixed path, no shell. */
static int systemd_has_bpf_framework(void)
{
        char *argv[] = { SYSTEMCTL, "--version", NULL }, text[4096] = "";
        posix_spawn_file_actions_t actions;
        int pipefd[2], status, r = -1;
        size_t used = 0;
        ssize_t n;
        pid_t pid;

        if (access(SYSTEMCTL, X_OK) < 0 || pipe2(pipefd, O_CLOEXEC) < 0)
                return -1;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDOUT_FILENO);
        if (posix_spawn(&pid, SYSTEMCTL, &actions, NULL, argv, (char *[]){ NULL }) == 0) {
                close(pipefd[1]);
                pipefd[1] = -1;
                while (used < sizeof(text) - 1 && (n = read(pipefd[0], text + used, sizeof(text) - 1 - used)) > 0)
                        used += (size_t)n;
                text[used] = '\0';
                waitpid(pid, &status, 0);
                r = strstr(text, "+BPF_FRAMEWORK") ? 1 : strstr(text, "-BPF_FRAMEWORK") ? 0 : -1;
        }
        posix_spawn_file_actions_destroy(&actions);
        close(pipefd[0]);
        if (pipefd[1] >= 0)
                close(pipefd[1]);
        return r;
}

static int export_systemd(const struct pf_policy *policy)
{
        struct pf_portset allow[PF_PROTO_COUNT], deny[PF_PROTO_COUNT];
        unsigned allow_entries = 0, deny_entries = 0;
        int framework;

        for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                const struct pf_portset *guarded = pf_policy_guarded(policy, proto);

                deny[proto] = *guarded;
                pf_portset_clear(&allow[proto]);
                for (unsigned port = 1; port <= PF_PORT_MAX; port++) {
                        struct pf_step verdict;

                        pf_policy_fallback(policy, proto, port, &verdict);
                        if (verdict.action == PF_REFUSE || verdict.action == PF_REMAP)
                                pf_portset_add(&deny[proto], port);
                        else if (pf_portset_has(guarded, port))
                                pf_portset_add(&allow[proto], port);
                }
                allow_entries += pf_portset_range_count(&allow[proto]);
                deny_entries += pf_portset_range_count(&deny[proto]);
        }
        /* Nothing printed unless all of it can be used: the output is appended to units. */
        if (allow_entries > SYSTEMD_LIST_MAX || deny_entries > SYSTEMD_LIST_MAX) {
                pf_error("export", "systemd takes at most %d entries per list; this policy needs %u "
                         "SocketBindAllow= and %u SocketBindDeny= entries (merge its rules' ranges)",
                         SYSTEMD_LIST_MAX, allow_entries, deny_entries);
                return PF_EXIT_USAGE;
        }
        framework = systemd_has_bpf_framework();
        if (framework == 0)
                pf_warning("export", "this host's systemd is built without BPF_FRAMEWORK ('systemctl "
                           "--version' shows -BPF_FRAMEWORK): it accepts these lines and does not enforce "
                           "them; fence the unit's cgroup instead (portfence cgroup attach)");
        else if (framework < 0)
                pf_note("export", "SocketBindAllow=/SocketBindDeny= are enforced only by a systemd built with "
                        "BPF framework support: 'systemctl --version' must show +BPF_FRAMEWORK");
        printf("# from ");
        pf_text(stdout, pf_policy_name(policy));
        printf(" by 'portfence export systemd'\n"
               "# enforced only by a systemd built with +BPF_FRAMEWORK (see 'systemctl --version')\n"
               "[Service]\n");
        comment_rules(policy);
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                print_bind_lines("SocketBindAllow", &allow[proto], proto);
                print_bind_lines("SocketBindDeny", &deny[proto], proto);
        }
        return PF_EXIT_OK;
}

/* A drop-in fencing UNIT's own cgroup: ExecStartPre= runs in it before the
 * main process exists, so the first bind of the unit's server is fenced;
 * '+' runs it with full privileges whatever the unit's sandboxing. */
static void print_systemd_dropin(const char *unit, const char *policy_path)
{
        printf("# /etc/systemd/system/%s.d/portfence.conf, by 'portfence export systemd-dropin':\n"
               "# fences the unit's own cgroup before its first process runs, and removes\n"
               "# the fence when it stops. A fence that fails keeps the unit from starting.\n"
               "[Service]\n"
               "ExecStartPre=+%s/portfence cgroup attach -c %s pid:self\n"
               "ExecStopPost=-+%s/portfence cgroup detach pid:self\n",
               unit, PF_BINDIR, policy_path, PF_BINDIR);
}

/* A unit name as systemd spells them: the drop-in's path is made of it. */
static int check_unit_name(const char *command, const char *unit)
{
        size_t len = strlen(unit);

        if (len == 0 || len > 255 || strspn(unit, UNIT_CHARS) != len || !strchr(unit, '.')) {
                pf_error_quoting(command, "bad unit ", unit, ": expected a unit name such as nginx.service");
                return -1;
        }
        return 0;
}

/* -c FILE, then the policy for one export. */
static int run_export(const char *command, int argc, char **argv,
                      int (*print)(const struct pf_policy *policy))
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        const char *config = NULL;
        struct pf_policy *policy;
        int opt, r;

        while ((opt = pf_cli_getopt(command, argc, argv, "c:h", options)) != -1) {
                switch (opt) {
                case 'c': config = optarg; break;
                case 'h': export_help(stdout); return PF_EXIT_OK;
                default: export_help(stderr); return PF_EXIT_USAGE;
                }
        }
        if (optind != argc) {
                pf_error(command, "unexpected argument '%s'", argv[optind]);
                return PF_EXIT_USAGE;
        }
        policy = pf_cli_load_policy(command, config);
        if (!policy)
                return PF_EXIT_USAGE;
        r = print(policy);
        pf_policy_free(policy);
        return r;
}

static int export_sysctl_cmd(int argc, char **argv)
{
        return run_export("export sysctl", argc, argv, export_sysctl);
}

static int export_systemd_cmd(int argc, char **argv)
{
        return run_export("export systemd", argc, argv, export_systemd);
}

static int export_kubernetes_cmd(int argc, char **argv)
{
        return run_export("export kubernetes-sysctls", argc, argv, export_kubernetes_sysctls);
}

static int export_cni_cmd(int argc, char **argv)
{
        return run_export("export cni", argc, argv, export_cni);
}

/* The drop-in names the policy; it is checked now, not at the unit's start. */
static int export_dropin_cmd(int argc, char **argv)
{
        const char *command = "export systemd-dropin";
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        const char *config = PF_POLICY_SYSTEM;
        struct pf_policy *policy;
        char source[PATH_MAX];
        int opt;

        while ((opt = pf_cli_getopt(command, argc, argv, "c:h", options)) != -1) {
                switch (opt) {
                case 'c': config = optarg; break;
                case 'h': export_help(stdout); return PF_EXIT_OK;
                default: export_help(stderr); return PF_EXIT_USAGE;
                }
        }
        if (optind + 1 != argc) {
                pf_error(command, optind == argc ? "no UNIT given" : "unexpected argument '%s'",
                         argv[optind + 1 < argc ? optind + 1 : 0]);
                return PF_EXIT_USAGE;
        }
        if (check_unit_name(command, argv[optind]) < 0)
                return PF_EXIT_USAGE;
        if (strcmp(config, "-") == 0) {
                pf_error(command, "-c -: the unit reads its policy from a file");
                return PF_EXIT_USAGE;
        }
        policy = pf_cli_load_policy(command, config);
        if (!policy)
                return PF_EXIT_USAGE;
        pf_cli_policy_source(policy, source, sizeof(source));
        pf_policy_free(policy);
        if (strpbrk(source, " \t\n\\\"'%$;")) {
                pf_error(command, "cannot name '%s' in a unit: move the policy to a path without "
                         "spaces, quotes, '%%', '$', ';' or '\\'", source);
                return PF_EXIT_USAGE;
        }
        print_systemd_dropin(argv[optind], source);
        return PF_EXIT_OK;
}

static const struct pf_command subcommands[] = {
        { "sysctl", export_sysctl_cmd, "[-c FILE]",
          "net.ipv4.ip_local_reserved_ports: the ports the policy gives servers" },
        { "systemd", export_systemd_cmd, "[-c FILE]", "SocketBindAllow=/SocketBindDeny= for a unit" },
        { "systemd-dropin", export_dropin_cmd, "[-c FILE] UNIT",
          "a drop-in that fences UNIT's cgroup from before its first process" },
        { "kubernetes-sysctls", export_kubernetes_cmd, "[-c FILE]",
          "a pod's securityContext.sysctls reserving its server ports" },
        { "cni", export_cni_cmd, "[-c FILE]",
          "a CNI tuning plugin entry reserving the server ports in every container" },
};

static void export_help(FILE *f)
{
        pf_cli_help(f, "export", subcommands, PF_COUNT(subcommands));
        fprintf(f, "\nsysctl: every port the policy gives to servers, merged with this host's\n"
                   "reservations: the kernel never hands them to clients. systemd: lines for a\n"
                   "unit, with a comment for each rule systemd cannot express (enforced only by\n"
                   "a systemd built with +BPF_FRAMEWORK). systemd-dropin: the unit's cgroup\n"
                   "fenced by portfence itself. kubernetes-sysctls: the sysctl reservation\n"
                   "inside a pod's network namespace. cni: the same for every container of a CNI\n"
                   "network: add the entry to the \"plugins\" list of its configuration, after\n"
                   "the plugin that makes the interface.\n");
}

int pf_cmd_export(int argc, char **argv)
{
        return pf_cli_dispatch("export", subcommands, PF_COUNT(subcommands), argc, argv, export_help);
}
