/* SPDX-License-Identifier: MIT */
/* portfence ranges / suggest: what the profile table implies. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>     /* endservent */
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"
#include "host.h"

#define MAX_OS 64

struct os_args {
        const struct pf_profile *list[MAX_OS];
        int count;
        enum pf_proto proto;
        bool proto_given;
        bool json;
        unsigned n;
        const char *key;        /* suggest --key: a stable choice per name */
        bool random;            /* suggest --random */
};

static void ranges_help(FILE *f)
{
        fprintf(f, "usage: portfence ranges [--os NAME,...|all|seed] [--proto tcp|udp] [--json]\n\n"
                   "Without --os: the profile table (the rows for --proto, if given), this\n"
                   "host's live ranges and where each row's numbers come from. With --os:\n"
                   "the union of their dynamic ranges and the ports safe on all of them for a\n"
                   "server (never well-known, on none dynamic or a platform's server range).\n"
                   "'all' is every row but host, 'seed' the seed article's rows.\n");
}

static void suggest_help(FILE *f)
{
        fprintf(f, "usage: portfence suggest [--os NAME,...|all|seed] [--proto tcp|udp] [-n N]\n"
                   "                         [--key NAME|--random] [--json]\n\n"
                   "Print N server ports (default 1) safe on the named stacks (default host),\n"
                   "not listed in /etc/services and not bound on this host now. Exit 1 if\n"
                   "fewer than N exist. The lowest first, or from a place in the safe set\n"
                   "given by --key NAME (the same NAME, the same place: one per CI job) or\n"
                   "chosen at --random.\n");
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
                { "key", required_argument, NULL, 'k' },
                { "random", no_argument, NULL, 'r' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        bool suggest = strcmp(command, "suggest") == 0;
        const char *os = NULL;
        int opt;

        a->proto = PF_TCP;
        a->n = 1;
        while ((opt = pf_cli_getopt(command, argc, argv, suggest ? "n:h" : "h", options)) != -1) {
                switch (opt) {
                case 'o': os = optarg; break;
                case 'p':
                        if (pf_proto_parse(optarg, &a->proto) < 0) {
                                pf_error(command, "unknown proto '%s' (tcp or udp)", optarg);
                                return -1;
                        }
                        a->proto_given = true;
                        break;
                case 'n':
                        if (pf_cli_parse_uint(optarg, 1, PF_PORT_MAX, &a->n) < 0) {
                                pf_error(command, "bad -n '%s': expected 1-65535", optarg);
                                return -1;
                        }
                        break;
                case 'k':
                case 'r':
                        if (!suggest) {
                                pf_error(command, "--%s is an option of 'suggest'", opt == 'k' ? "key" : "random");
                                return -1;
                        }
                        if (opt == 'k' && !*optarg) {
                                pf_error(command, "empty --key (an unset variable?)");
                                return -1;
                        }
                        a->key = opt == 'k' ? optarg : a->key;
                        a->random |= opt == 'r';
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
        if (a->key && a->random) {
                pf_error(command, "--key and --random contradict each other: choose one");
                return -1;
        }
        if (os && (a->count = pf_cli_parse_os(command, os, a->proto, a->list, MAX_OS)) < 0)
                return -1;
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

static void json_row(struct pf_json *j, const struct pf_profile *p, enum pf_proto proto,
                     const struct pf_portset *dynamic)
{
        struct pf_portset set;

        pf_json_object_begin(j);
        pf_json_kv_string(j, "name", p->name);
        pf_json_kv_string(j, "stack", p->stack);
        pf_json_kv_string(j, "proto", protos_name(p->protos));
        pf_json_kv_string(j, "ranges_for", pf_proto_name(proto));
        pf_json_key(j, "well_known");
        range_set(&p->well_known, &set);
        pf_json_portset(j, &set);
        pf_json_key(j, "registered");
        range_set(&p->registered, &set);
        pf_json_portset(j, &set);
        pf_json_key(j, "dynamic");
        pf_json_portset(j, dynamic);
        pf_json_key(j, "servers");
        range_set(&p->servers, &set);
        pf_json_portset(j, &set);
        pf_json_kv_string(j, "source", p->source);
        pf_json_object_end(j);
}

/* The table: every row, or those that describe proto (--proto given), each
 * with its ranges for that protocol; in text the sources follow. */
static int print_table(const struct os_args *a)
{
        size_t count;
        const struct pf_profile *table = pf_profiles(&count);
        struct pf_json writer;

        pf_json_init(&writer, stdout);
        if (!a->json)
                printf("%-19s %-8s %-11s %-12s %-18s %-12s %s\n", "profile", "proto", "well-known",
                       "registered", "dynamic", "servers", "stack");
        else
                pf_json_array_begin(&writer);
        for (size_t i = 0; i < count; i++) {
                const struct pf_profile *p = &table[i];
                enum pf_proto proto = a->proto_given ? a->proto :
                                      p->protos & PF_PROTO_BIT(PF_TCP) ? PF_TCP : PF_UDP;
                char wk[16], reg[16], srv[16], dyn[PF_WHY_SIZE];
                struct pf_portset set;

                if (!(p->protos & PF_PROTO_BIT(proto)))
                        continue;
                format_range(&p->well_known, wk, sizeof(wk));
                format_range(&p->registered, reg, sizeof(reg));
                format_range(&p->servers, srv, sizeof(srv));
                if (pf_profile_dynamic(p, proto, &set, dyn) < 0) {
                        pf_error("ranges", "%s", dyn);
                        return PF_EXIT_FAILURE;
                }
                if (a->json) {
                        json_row(&writer, p, proto, &set);
                        continue;
                }
                pf_portset_format(&set, dyn, sizeof(dyn));
                printf("%-19s %-8s %-11s %-12s %-18s %-12s %s\n", p->name, protos_name(p->protos),
                       wk, reg, *dyn ? dyn : "none", srv, p->stack);
        }
        if (a->json) {
                pf_json_array_end(&writer);
                return PF_EXIT_OK;
        }
        printf("\nsources:\n");
        for (size_t i = 0; i < count; i++)
                if (!a->proto_given || (table[i].protos & PF_PROTO_BIT(a->proto)))
                        printf("  %s: %s\n", table[i].name, table[i].source);
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
                return print_table(&a);
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

/* Where in the safe set the search starts: its lowest port, the place NAME
 * hashes to (FNV-1a, so every host and run agrees), or a random one. */
static unsigned first_candidate(const struct os_args *a, const struct pf_portset *safe)
{
        unsigned count = pf_portset_count(safe), nth, port;
        uint64_t hash = 0xcbf29ce484222325u;

        if (count == 0 || (!a->key && !a->random))
                return pf_portset_find(safe, 1, true);
        for (const char *c = a->key; c && *c; c++)
                hash = (hash ^ (unsigned char)*c) * 0x100000001b3u;
        if (a->random && getrandom(&hash, sizeof(hash), 0) != sizeof(hash))
                hash = (uint64_t)getpid() * 0x9e3779b97f4a7c15u;
        nth = (unsigned)(hash % count);
        for (port = pf_portset_find(safe, 1, true); nth > 0; nth--)
                port = pf_portset_find(safe, port + 1, true);
        return port;
}

/* The safe port after port, round to the lowest after the highest. */
static unsigned next_candidate(const struct pf_portset *safe, unsigned port)
{
        unsigned next = pf_portset_find(safe, port + 1, true);

        return next <= PF_PORT_MAX ? next : pf_portset_find(safe, 1, true);
}

int pf_cmd_suggest(int argc, char **argv)
{
        struct os_args a = { .count = 0 };
        struct pf_portset dynamic, safe;
        unsigned found = 0, port, left;
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
        /* Every safe port once, from the first candidate round. */
        port = first_candidate(&a, &safe);
        for (left = pf_portset_count(&safe); left > 0 && found < a.n; left--, port = next_candidate(&safe, port)) {
                if (pf_host_port_named(port, a.proto))
                        continue;
                if (!pf_host_port_free(port, a.proto))
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
