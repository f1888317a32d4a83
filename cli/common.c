/* SPDX-License-Identifier: MIT */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void pf_error(const char *command, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "portfence: %s: ", command);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

struct pf_policy *pf_cli_load_policy(const char *command, const char *explicit_path)
{
        const char *path = pf_policy_path(explicit_path);
        struct pf_policy *policy = NULL;
        struct pf_diag diag;
        char line[1024];
        int r = pf_policy_load(path, &policy, &diag);

        if (r == -EINVAL) {
                for (size_t i = 0; i < diag.count; i++)
                        fprintf(stderr, "%s\n", pf_diag_format(&diag, i, line, sizeof(line)));
        } else if (r < 0) {
                pf_error(command, "cannot read '%s': %s", path, strerror(-r));
        }
        pf_diag_free(&diag);
        return r < 0 ? NULL : policy;
}

void pf_cli_policy_source(const struct pf_policy *policy, char *out, size_t size)
{
        const char *name = pf_policy_name(policy);
        char real[PATH_MAX];

        if (strcmp(name, PF_POLICY_BUILTIN) == 0)
                snprintf(out, size, "%s", "");
        else
                snprintf(out, size, "%s", realpath(name, real) ? real : name);
}

void pf_cli_comm_notes(const char *command, const struct pf_policy *policy)
{
        for (unsigned rule = 1; rule <= pf_policy_rule_count(policy); rule++) {
                struct pf_conditions c;
                enum pf_comm_glob form;

                pf_policy_conditions(policy, rule, &c);
                if (!c.program || (form = pf_glob_comm_form(c.program)) == PF_COMM_EXACT)
                        continue;
                fprintf(stderr, "portfence: %s: note: rule %u (%s:%u), program '%s': %s\n", command,
                        rule, pf_policy_name(policy), pf_policy_rule_line(policy, rule), c.program,
                        pf_comm_glob_note(form));
        }
}

int pf_cli_parse_os(const char *command, const char *list, const struct pf_profile **out,
                    size_t capacity)
{
        size_t table_count, n = 0;
        const struct pf_profile *table = pf_profiles(&table_count);
        char *copy = strdup(list), *save = NULL;

        if (!copy) {
                pf_error(command, "%s", strerror(ENOMEM));
                return -1;
        }
        for (char *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
                if (strcmp(name, "all") == 0) {
                        for (size_t i = 0; i < table_count && n < capacity; i++)
                                if (!table[i].live)
                                        out[n++] = &table[i];
                        continue;
                }
                const struct pf_profile *profile = pf_profile_find(name);

                if (!profile) {
                        pf_error(command, "unknown os '%s' (see 'portfence ranges')", name);
                        free(copy);
                        return -1;
                }
                if (n < capacity)
                        out[n++] = profile;
        }
        free(copy);
        if (n == 0) {
                pf_error(command, "empty --os list");
                return -1;
        }
        return (int)n;
}

int pf_cli_parse_uint(const char *text, unsigned min, unsigned max, unsigned *out)
{
        char *end;
        unsigned long value;

        if (*text < '0' || *text > '9')
                return -1;
        errno = 0;
        value = strtoul(text, &end, 10);
        if (errno || *end || value < min || value > max)
                return -1;
        *out = (unsigned)value;
        return 0;
}

void pf_cli_help(FILE *f, const char *prefix, const struct pf_command *table, size_t count)
{
        for (size_t i = 0; i < count; i++)
                fprintf(f, "%s portfence %s %s%s%s\n", i ? "      " : "usage:", prefix, table[i].name,
                        table[i].usage[0] ? " " : "", table[i].usage);
        fprintf(f, "\n");
        for (size_t i = 0; i < count; i++)
                fprintf(f, "  %-10s %s\n", table[i].name, table[i].summary);
}

int pf_cli_dispatch(const char *prefix, const struct pf_command *table, size_t count, int argc,
                    char **argv, void (*help)(FILE *f))
{
        char *help_argv[] = { "help", NULL, "--help", NULL };
        const char *name = argc >= 2 ? argv[1] : NULL;

        if (!name) {
                help(stderr);
                return PF_EXIT_USAGE;
        }
        if (strcmp(name, "help") == 0 && argc >= 3) {   /* "help COMMAND": COMMAND --help */
                name = argv[2];
                help_argv[1] = argv[2];
                argc = 3;
                argv = help_argv;
        } else if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
                help(stdout);
                return PF_EXIT_OK;
        }
        for (size_t i = 0; i < count; i++)
                if (strcmp(name, table[i].name) == 0)
                        return table[i].run(argc - 1, argv + 1);
        if (prefix)
                pf_error(prefix, "unknown command '%s' (see 'portfence %s --help')", name, prefix);
        else
                fprintf(stderr, "portfence: unknown command '%s' (see 'portfence --help')\n", name);
        return PF_EXIT_USAGE;
}
