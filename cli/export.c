/* SPDX-License-Identifier: MIT */
/* portfence export sysctl|systemd: the policy in the kernel's and systemd's
 * own terms, for hosts and units that enforce it themselves. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "host.h"

static void export_help(FILE *f);

/* net.ipv4.ip_local_reserved_ports: the reservations there already, plus
 * every port the policy gives to a server that the kernel could hand to a
 * client (inside ip_local_port_range): a reservation elsewhere protects
 * nothing. The setting is per network namespace. */
static int export_sysctl(const struct pf_policy *policy)
{
        struct pf_portset reserved, range, wanted, one;
        char *text, why[PF_WHY_SIZE], range_text[32];
        size_t size;

        if (pf_host_reserved_read(PF_PROC_RESERVED, &reserved, why) < 0 ||
            pf_host_port_range_read(PF_PROC_PORT_RANGE, &range, why) < 0) {
                pf_error("export", "%s", why);
                return PF_EXIT_FAILURE;
        }
        /* One list for both protocols: the kernel's reservations are too. */
        pf_policy_server_ports(policy, PF_TCP, &wanted);
        pf_policy_server_ports(policy, PF_UDP, &one);
        pf_portset_union(&wanted, &one);
        pf_portset_intersect(&wanted, &range);
        pf_portset_subtract(&wanted, &reserved);
        pf_portset_format(&range, range_text, sizeof(range_text));
        if (pf_portset_empty(&wanted)) {
                printf("# portfence: nothing to export: every port ");
                pf_text(stdout, pf_policy_name(policy));
                printf(" gives to a server is outside ip_local_port_range (%s) or reserved already\n",
                       range_text);
                pf_note("export", "nothing to export: the kernel never hands a port of this policy's "
                        "servers to a client here");
                return PF_EXIT_OK;
        }
        pf_portset_union(&reserved, &wanted);
        size = pf_portset_format(&reserved, NULL, 0) + 1;
        text = malloc(size);
        if (!text) {
                pf_error("export", "%s", strerror(ENOMEM));
                return PF_EXIT_FAILURE;
        }
        pf_portset_format(&reserved, text, size);
        printf("# ip_local_reserved_ports is per network namespace: apply it in each one\n");
        printf("net.ipv4.ip_local_reserved_ports = %s\n", text);
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
static int export_systemd(const struct pf_policy *policy)
{
        printf("# from %s by 'portfence export systemd'\n[Service]\n", pf_policy_name(policy));
        comment_rules(policy);
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                const struct pf_portset *guarded = pf_policy_guarded(policy, proto);
                struct pf_portset deny = *guarded, allow;

                pf_portset_clear(&allow);
                for (unsigned port = 1; port <= PF_PORT_MAX; port++) {
                        struct pf_step verdict;

                        pf_policy_fallback(policy, proto, port, &verdict);
                        if (verdict.action == PF_REFUSE || verdict.action == PF_REMAP)
                                pf_portset_add(&deny, port);
                        else if (pf_portset_has(guarded, port))
                                pf_portset_add(&allow, port);
                }
                print_bind_lines("SocketBindAllow", &allow, proto);
                print_bind_lines("SocketBindDeny", &deny, proto);
        }
        return PF_EXIT_OK;
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

static const struct pf_command subcommands[] = {
        { "sysctl", export_sysctl_cmd, "[-c FILE]",
          "net.ipv4.ip_local_reserved_ports: the ports the policy gives servers" },
        { "systemd", export_systemd_cmd, "[-c FILE]", "SocketBindAllow=/SocketBindDeny= for a unit" },
};

static void export_help(FILE *f)
{
        pf_cli_help(f, "export", subcommands, PF_COUNT(subcommands));
        fprintf(f, "\nsysctl: every port the policy gives to servers, merged with this host's\n"
                   "reservations: the kernel never hands them to clients. systemd: lines for a\n"
                   "unit, with a comment for each rule systemd cannot express.\n");
}

int pf_cmd_export(int argc, char **argv)
{
        return pf_cli_dispatch("export", subcommands, PF_COUNT(subcommands), argc, argv, export_help);
}
