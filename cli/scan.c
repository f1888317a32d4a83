/* SPDX-License-Identifier: MIT */
/* portfence scan: the servers on this host that sit in a guarded range, and
 * the clients sitting on a port the policy gives to a server. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sockets.h"

static void scan_help(FILE *f)
{
        fprintf(f, "usage: portfence scan [-c FILE] [--json]\n\n"
                   "List the listening TCP and bound UDP sockets of this network namespace whose\n"
                   "port the policy guards (server-in-ephemeral), and the client connections whose\n"
                   "local port the policy gives to a server (client-on-server-port), with pid and\n"
                   "program. Exit 1 when anything is found, 0 when clean, 2 on errors.\n");
}

/* A connection accepted by a listener shares its local port: not a client. */
static bool has_listener(const struct pf_socket *list, size_t count, const struct pf_socket *s)
{
        for (size_t i = 0; i < count; i++)
                if (list[i].listening && list[i].proto == s->proto && list[i].port == s->port)
                        return true;
        return false;
}

static const char *classify(const struct pf_policy *policy, const struct pf_portset server_ports[],
                            const struct pf_socket *list, size_t count, const struct pf_socket *s)
{
        if (s->port == 0)
                return NULL;
        if (s->listening)
                return pf_portset_has(pf_policy_guarded(policy, s->proto), s->port) ?
                       "server-in-ephemeral" : NULL;
        if (pf_portset_has(&server_ports[s->proto], s->port) && !has_listener(list, count, s))
                return "client-on-server-port";
        return NULL;
}

static void print_finding(const struct pf_socket *s, const char *kind, struct pf_json *json)
{
        char text[64];

        if (!json) {
                pf_socket_format(s, text, sizeof(text));
                printf("%s %s pid %d (", pf_proto_name(s->proto), text, (int)s->pid);
                pf_text(stdout, s->program);
                printf("): %s\n", kind);
                return;
        }
        pf_socket_address(s, text, sizeof(text));
        pf_json_object_begin(json);
        pf_json_kv_string(json, "proto", pf_proto_name(s->proto));
        pf_json_kv_string(json, "address", text);
        pf_json_kv_uint(json, "port", s->port);
        pf_json_key(json, "pid");
        pf_json_int(json, s->pid);
        pf_json_kv_string(json, "program", s->program);
        pf_json_kv_string(json, "kind", kind);
        pf_json_object_end(json);
}

int pf_cmd_scan(int argc, char **argv)
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        struct pf_portset server_ports[PF_PROTO_COUNT];
        const char *config = NULL;
        struct pf_socket *list;
        struct pf_policy *policy;
        size_t count, found = 0;
        bool json = false;
        struct pf_json writer;
        int opt, r;

        while ((opt = pf_cli_getopt("scan", argc, argv, "c:h", options)) != -1) {
                switch (opt) {
                case 'c': config = optarg; break;
                case 'j': json = true; break;
                case 'h': scan_help(stdout); return PF_EXIT_OK;
                default: scan_help(stderr); return PF_EXIT_USAGE;
                }
        }
        if (optind != argc) {
                pf_error("scan", "unexpected argument '%s'", argv[optind]);
                return PF_EXIT_USAGE;
        }
        policy = pf_cli_load_policy("scan", config);
        if (!policy)
                return PF_EXIT_USAGE;
        r = pf_sockets_read(&list, &count);
        if (r < 0) {
                pf_error("scan", "cannot read this host's sockets (sock_diag): %s", strerror(-r));
                pf_policy_free(policy);
                return PF_EXIT_FAILURE;
        }
        pf_sockets_owners(list, count);
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++)
                pf_policy_server_ports(policy, proto, &server_ports[proto]);
        pf_json_init(&writer, stdout);
        if (json)
                pf_json_array_begin(&writer);
        for (size_t i = 0; i < count; i++) {
                const char *kind = classify(policy, server_ports, list, count, &list[i]);

                if (kind) {
                        print_finding(&list[i], kind, json ? &writer : NULL);
                        found++;
                }
        }
        if (json)
                pf_json_array_end(&writer);
        free(list);
        pf_policy_free(policy);
        return found ? PF_EXIT_FOUND : PF_EXIT_OK;
}
