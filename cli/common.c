/* SPDX-License-Identifier: MIT */
#include "cli.h"
#include "host.h"

#include <errno.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void message(const char *command, const char *kind, const char *fmt, va_list ap)
{
        fprintf(stderr, "portfence: %s%s%s", command ? command : "", command ? ": " : "", kind);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
}

void pf_error(const char *command, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        message(command, "", fmt, ap);
        va_end(ap);
}

void pf_error_quoting(const char *command, const char *before, const char *subject, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "portfence: %s: %s'", command, before);
        pf_text(stderr, subject);
        fputc('\'', stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

void pf_note(const char *command, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        message(command, "note: ", fmt, ap);
        va_end(ap);
}

void pf_warning(const char *command, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        message(command, "warning: ", fmt, ap);
        va_end(ap);
}

#define PF_STDIN_NAME "(stdin)"
#define PF_STDIN_MAX (16u << 20)

ssize_t pf_cli_read_stdin(char **out, size_t max)
{
        size_t used = 0, size = 4096;
        char *text = malloc(size);
        ssize_t n;

        while (text && (n = read(STDIN_FILENO, text + used, size - used - 1)) != 0) {
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 || used + (size_t)n >= max) {
                        int r = n < 0 ? -errno : -EFBIG;

                        free(text);
                        return r;
                }
                used += (size_t)n;
                if (used + 1 == size) {
                        char *grown = realloc(text, size *= 2);

                        if (!grown)
                                free(text);
                        text = grown;
                }
        }
        if (!text)
                return -ENOMEM;
        text[used] = '\0';
        *out = text;
        return (ssize_t)used;
}

struct pf_policy *pf_cli_load_policy(const char *command, const char *explicit_path)
{
        const char *path = pf_policy_path(explicit_path);
        struct pf_policy *policy = NULL;
        struct pf_diag diag = { 0 };
        char line[1024], *text = NULL;
        int r;

        if (explicit_path && !*explicit_path) {
                pf_error(command, "-c '': an empty policy path (an unset variable?)");
                return NULL;
        }
        if (explicit_path && strcmp(explicit_path, "-") == 0) {
                path = PF_STDIN_NAME;
                ssize_t n = pf_cli_read_stdin(&text, PF_STDIN_MAX);

                r = n < 0 ? (int)n : pf_policy_load_text(text, PF_STDIN_NAME, &policy, &diag);
                free(text);
        } else {
                r = pf_policy_load(path, &policy, &diag);
        }

        if (r == -EINVAL) {
                for (size_t i = 0; i < diag.count; i++)
                        fprintf(stderr, "%s\n", pf_diag_format(&diag, i, line, sizeof(line)));
        } else if (r < 0) {
                pf_error(command, "cannot read '%s': %s", path, strerror(-r));
        }
        pf_diag_free(&diag);
        return r < 0 ? NULL : policy;
}

int pf_cli_replace_file(const char *path, void (*write)(FILE *out, const void *ctx), const void *ctx)
{
        char tmp[PATH_MAX];
        FILE *out;
        int fd, r = 0;

        if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp))
                return -ENAMETOOLONG;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        out = fdopen(fd, "w");
        if (!out) {
                r = -errno;
                close(fd);
                unlink(tmp);
                return r;
        }
        write(out, ctx);
        if (fchmod(fd, 0644) < 0 || ferror(out))
                r = errno ? -errno : -EIO;
        if (fclose(out) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

int pf_cli_check_text(const char *command, const char *text)
{
        struct pf_policy *policy = NULL;
        struct pf_diag diag;
        char line[1024];
        int r = pf_policy_load_text(text, "(proposal)", &policy, &diag);

        for (size_t i = 0; r == -EINVAL && i < diag.count; i++)
                pf_error(command, "the policy made is broken: %s", pf_diag_format(&diag, i, line, sizeof(line)));
        if (r < 0 && r != -EINVAL)
                pf_error(command, "cannot check the policy made: %s", strerror(-r));
        pf_diag_free(&diag);
        pf_policy_free(policy);
        return r < 0 ? -1 : 0;
}

void pf_cli_policy_source(const struct pf_policy *policy, char *out, size_t size)
{
        const char *name = pf_policy_name(policy);
        char real[PATH_MAX];

        if (strcmp(name, PF_POLICY_BUILTIN) == 0 || strcmp(name, PF_STDIN_NAME) == 0)
                snprintf(out, size, "%s", "");  /* nothing to read again */
        else
                snprintf(out, size, "%s", realpath(name, real) ? real : name);
}

void pf_cli_comm_notes(const char *command, const struct pf_policy *policy)
{
        for (unsigned rule = 1; rule <= pf_policy_rule_count(policy); rule++) {
                struct pf_conditions c;
                const char *note;

                pf_policy_conditions(policy, rule, &c);
                if (!c.program || !(note = pf_program_glob_note(c.program)))
                        continue;
                pf_note(command, "rule %u (%s:%u), program '%s': %s", rule, pf_policy_rule_file(policy, rule),
                        pf_policy_rule_line(policy, rule), c.program, note);
        }
}

int pf_cli_warn_unreserved(const char *command, const struct pf_policy *policy, const char *where,
                           bool as_note)
{
        struct pf_portset range, reserved, exposed;
        char why[PF_WHY_SIZE], range_text[32], ports[192];

        if (pf_host_port_range_read(PF_PROC_PORT_RANGE, &range, why) < 0 ||
            pf_host_reserved_read(PF_PROC_RESERVED, &reserved, why) < 0)
                return -1;
        pf_policy_unreserved_server_ports(policy, &range, &reserved, &exposed);
        if (pf_portset_empty(&exposed))
                return 0;
        pf_portset_format(&range, range_text, sizeof(range_text));
        pf_portset_format(&exposed, ports, sizeof(ports));
        (as_note ? pf_note : pf_warning)(command, "%s: ports this policy gives servers are inside "
                                         "ip_local_port_range (%s) and not reserved: %s%s: a client may be "
                                         "handed one before its server binds it ('portfence export sysctl' "
                                         "reserves them)", where, range_text, ports,
                                         pf_portset_format(&exposed, NULL, 0) >= sizeof(ports) ? "..." : "");
        return 1;
}

/* Does opt (a short option's letter or a long option's val) exist? */
static bool known_option(int opt, const char *shortopts, const struct option *longopts)
{
        const char *at = opt > 0 && opt != ':' && opt != '+' ? strchr(shortopts, opt) : NULL;

        if (at)
                return true;
        for (const struct option *o = longopts; o && o->name; o++)
                if (!o->flag && o->val == opt)
                        return true;
        return false;
}

int pf_cli_getopt(const char *command, int argc, char **argv, const char *shortopts,
                  const struct option *longopts)
{
        const char *word;
        int opt;

        opterr = 0;
        opt = getopt_long(argc, argv, shortopts, longopts, NULL);
        if (opt != '?')
                return opt;
        word = optind - 1 > 0 && optind - 1 < argc ? argv[optind - 1] : "";
        if (optopt == 0)        /* an unknown long option: its word */
                pf_error(command, "unknown option '%.*s'", (int)strcspn(word, "="), word);
        else if (!known_option(optopt, shortopts, longopts))
                pf_error(command, "unknown option '-%c'", optopt);
        else if (strncmp(word, "--", 2) == 0)
                pf_error(command, "option '%s' needs an argument", word);
        else
                pf_error(command, "option '-%c' needs an argument", optopt);
        return '?';
}

int pf_cli_parse_os(const char *command, const char *list, enum pf_proto proto,
                    const struct pf_profile **out, size_t capacity)
{
        size_t table_count, n = 0;
        const struct pf_profile *table = pf_profiles(&table_count);
        char *copy = strdup(list), *save = NULL;

        if (!copy) {
                pf_error(command, "%s", strerror(ENOMEM));
                return -1;
        }
        for (char *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
                if (strcmp(name, "all") == 0 || strcmp(name, "seed") == 0) {
                        bool seed_only = name[0] == 's';

                        for (size_t i = 0; i < table_count && n < capacity; i++)
                                if (!table[i].live && (table[i].seed || !seed_only) &&
                                    (table[i].protos & PF_PROTO_BIT(proto)))
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
        pf_error(prefix, "unknown command '%s' (see 'portfence%s%s --help')", name, prefix ? " " : "",
                 prefix ? prefix : "");
        return PF_EXIT_USAGE;
}

/* Whether a server could bind port now, on the IPv4 and IPv6 wildcards. */
void pf_cli_verdict_reason(const struct pf_policy *policy, unsigned port, const struct pf_verdict *v,
                           char *buf, size_t size)
{
        if (port == 0)
                snprintf(buf, size, "port 0: the kernel chooses");
        else if (v->rule)
                snprintf(buf, size, "rule %u, %s:%u", v->rule, pf_policy_rule_file(policy, v->rule),
                         pf_policy_rule_line(policy, v->rule));
        else if (v->guarded)
                snprintf(buf, size, "default_action for guarded ports");
        else
                snprintf(buf, size, "not guarded");
}
