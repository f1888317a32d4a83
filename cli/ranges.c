/* SPDX-License-Identifier: MIT */
/* portfence ranges / suggest: what the profile table implies. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"

#define MAX_OS 64

struct os_args {
        const struct pf_profile *list[MAX_OS];
        int count;
        enum pf_proto proto;
        bool json;
        unsigned n;
};

static void ranges_help(FILE *f)
{
        fprintf(f, "usage: portfence ranges [--os NAME,...|all] [--proto tcp|udp] [--json]\n\n"
                   "Without --os: the profile table and this host's live ranges. With --os:\n"
                   "the union of their dynamic ranges and the ports safe on all of them\n"
                   "(well-known on none, dynamic on none). 'all' is every table row but host.\n");
}

static void suggest_help(FILE *f)
{
        fprintf(f, "usage: portfence suggest [--os NAME,...|all] [--proto tcp|udp] [-n N] [--json]\n\n"
                   "Print N server ports (default 1) safe on the named stacks (default host),\n"
                   "not listed in /etc/services and not bound on this host now. Exit 1 if\n"
                   "fewer than N exist.\n");
}

/* Options shared by ranges and suggest; returns -1 on a usage error, 1 on
 * --help, 0 to go on. */
static int parse_os_args(const char *command, int argc, char **argv, struct os_args *a,
                         void (*help)(FILE *))
{
        static const struct option options[] = {
                { "os", required_argument, NULL, 'o' },
                { "proto", required_argument, NULL, 'p' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        int opt;

        a->proto = PF_TCP;
        a->n = 1;
        while ((opt = getopt_long(argc, argv, "n:h", options, NULL)) != -1) {
                switch (opt) {
                case 'o':
                        a->count = pf_cli_parse_os(command, optarg, a->list, MAX_OS);
                        if (a->count < 0)
                                return -1;
                        break;
                case 'p':
                        if (pf_proto_parse(optarg, &a->proto) < 0) {
                                pf_error(command, "unknown proto '%s' (tcp or udp)", optarg);
                                return -1;
                        }
                        break;
                case 'n':
                        if (strcmp(command, "suggest") != 0 ||
                            pf_cli_parse_uint(optarg, 1, PF_PORT_MAX, &a->n) < 0) {
                                pf_error(command, "bad -n '%s': expected 1-65535", optarg);
                                return -1;
                        }
                        break;
                case 'j': a->json = true; break;
                case 'h': help(stdout); return 1;
                default: help(stderr); return -1;
                }
        }
        if (optind != argc) {
                pf_error(command, "unexpected argument '%s'", argv[optind]);
                return -1;
        }
        return 0;
}

static void format_range(const struct pf_range *r, char *buf, size_t size)
{
        if (r->lo == 0)
                snprintf(buf, size, "none");
        else
                snprintf(buf, size, "%u-%u", r->lo, r->hi);
}

static const char *protos_name(unsigned protos)
{
        return protos == PF_PROTO_BOTH ? "tcp,udp" : protos == PF_PROTO_BIT(PF_UDP) ? "udp" : "tcp";
}

/* A table range as a one-range set, empty for {0, 0}. */
static void range_set(const struct pf_range *range, struct pf_portset *out)
{
        pf_portset_clear(out);
        if (range->lo)
                pf_portset_add_range(out, range->lo, range->hi);
}

static void json_row(struct pf_json *j, const struct pf_profile *p, const struct pf_portset *dynamic)
{
        struct pf_portset set;

        pf_json_object_begin(j);
        pf_json_kv_string(j, "name", p->name);
        pf_json_kv_string(j, "stack", p->stack);
        pf_json_kv_string(j, "proto", protos_name(p->protos));
        pf_json_key(j, "well_known");
        range_set(&p->well_known, &set);
        pf_json_portset(j, &set);
        pf_json_key(j, "registered");
        range_set(&p->registered, &set);
        pf_json_portset(j, &set);
        pf_json_key(j, "dynamic");
        pf_json_portset(j, dynamic);
        pf_json_object_end(j);
}

static int print_table(bool json)
{
        size_t count;
        const struct pf_profile *table = pf_profiles(&count);
        struct pf_json writer;

        pf_json_init(&writer, stdout);
        if (!json)
                printf("%-18s %-8s %-11s %-12s %-24s %s\n", "profile", "proto", "well-known",
                       "registered", "dynamic", "stack");
        else
                pf_json_array_begin(&writer);
        for (size_t i = 0; i < count; i++) {
                const struct pf_profile *p = &table[i];
                /* Each row's ranges for its own protocol (UDP-only rows too). */
                enum pf_proto proto = p->protos & PF_PROTO_BIT(PF_TCP) ? PF_TCP : PF_UDP;
                char wk[16], reg[16], dyn[PF_WHY_SIZE];
                struct pf_portset set;

                format_range(&p->well_known, wk, sizeof(wk));
                format_range(&p->registered, reg, sizeof(reg));
                if (pf_profile_dynamic(p, proto, &set, dyn) < 0) {
                        pf_error("ranges", "%s", dyn);
                        return PF_EXIT_FAILURE;
                }
                if (json) {
                        json_row(&writer, p, &set);
                        continue;
                }
                if (p->live)
                        pf_portset_format(&set, dyn, sizeof(dyn));
                else
                        format_range(&p->dynamic, dyn, sizeof(dyn));
                printf("%-18s %-8s %-11s %-12s %-24s %s\n", p->name, protos_name(p->protos),
                       wk, reg, dyn, p->stack);
        }
        if (json)
                pf_json_array_end(&writer);
        return PF_EXIT_OK;
}

static int combine(const char *command, const struct os_args *a, struct pf_portset *dynamic,
                   struct pf_portset *safe)
{
        char why[PF_WHY_SIZE];

        if (pf_profiles_combine(a->list, (size_t)a->count, a->proto, dynamic, safe, why) < 0) {
                pf_error(command, "%s", why);
                return -1;
        }
        return 0;
}

int pf_cmd_ranges(int argc, char **argv)
{
        struct os_args a = { .count = 0 };
        struct pf_portset dynamic, safe;
        char text[4096];
        int r = parse_os_args("ranges", argc, argv, &a, ranges_help);

        if (r)
                return r > 0 ? PF_EXIT_OK : PF_EXIT_USAGE;
        if (a.count == 0)
                return print_table(a.json);
        if (combine("ranges", &a, &dynamic, &safe) < 0)
                return PF_EXIT_USAGE;
        if (a.json) {
                struct pf_json j;

                pf_json_init(&j, stdout);
                pf_json_object_begin(&j);
                pf_json_key(&j, "os");
                pf_json_array_begin(&j);
                for (int i = 0; i < a.count; i++)
                        pf_json_string(&j, a.list[i]->name);
                pf_json_array_end(&j);
                pf_json_kv_string(&j, "proto", pf_proto_name(a.proto));
                pf_json_key(&j, "dynamic");
                pf_json_portset(&j, &dynamic);
                pf_json_key(&j, "safe");
                pf_json_portset(&j, &safe);
                pf_json_object_end(&j);
                return PF_EXIT_OK;
        }
        printf("os: ");
        for (int i = 0; i < a.count; i++)
                printf("%s%s", i ? "," : "", a.list[i]->name);
        pf_portset_format(&dynamic, text, sizeof(text));
        printf("\nproto: %s\ndynamic: %s\n", pf_proto_name(a.proto), *text ? text : "none");
        pf_portset_format(&safe, text, sizeof(text));
        printf("safe: %s\n", *text ? text : "none");
        return PF_EXIT_OK;
}

int pf_cmd_suggest(int argc, char **argv)
{
        struct os_args a = { .count = 0 };
        struct pf_portset dynamic, safe;
        unsigned found = 0;
        struct pf_json writer;
        int r = parse_os_args("suggest", argc, argv, &a, suggest_help);

        if (r)
                return r > 0 ? PF_EXIT_OK : PF_EXIT_USAGE;
        if (a.count == 0) {
                a.list[0] = pf_profile_find("host");
                a.count = 1;
        }
        if (combine("suggest", &a, &dynamic, &safe) < 0)
                return PF_EXIT_USAGE;
        pf_json_init(&writer, stdout);
        if (a.json)
                pf_json_array_begin(&writer);
        for (unsigned port = pf_portset_find(&safe, 1, true); port <= PF_PORT_MAX && found < a.n;
             port = pf_portset_find(&safe, port + 1, true)) {
                if (getservbyport(htons((uint16_t)port), pf_proto_name(a.proto)))
                        continue;
                if (!pf_cli_port_free(port, a.proto))
                        continue;
                if (a.json)
                        pf_json_uint(&writer, port);
                else
                        printf("%u\n", port);
                found++;
        }
        if (a.json)
                pf_json_array_end(&writer);
        endservent();
        if (found < a.n) {
                pf_error("suggest", "only %u safe free port%s, %u asked", found,
                         found == 1 ? "" : "s", a.n);
                return PF_EXIT_FOUND;
        }
        return PF_EXIT_OK;
}
