/* SPDX-License-Identifier: MIT */
/* portfence learn: run a command under the shim with every bind recorded and
 * none refused or moved, then propose a policy: the base policy plus one rule
 * per guarded port the command bound, each moved to a distinct safe port. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "host.h"

static void learn_help(FILE *f)
{
        fprintf(f, "usage: portfence learn [-c BASE] [--duration SECONDS] [-o FILE] -- CMD [ARGS...]\n\n"
                   "Run CMD under the shim with every bind let through and recorded, until it\n"
                   "exits, SECONDS pass (then it gets SIGTERM) or SIGINT. Then write a policy: BASE\n"
                   "(the policy portfence would use, see --help) with one rule before its own per\n"
                   "guarded port CMD bound, moving it to a distinct port that is safe here (outside\n"
                   "every guarded range, not in /etc/services, free now, not given to a server by\n"
                   "BASE), with a comment saying what bound it and how often. The policy goes to\n"
                   "FILE (default: stdout) and passes 'portfence check'; a summary goes to stderr.\n");
}


/* The value of "key": in one of the shim's learn lines (its own format). */
static bool field(const char *line, const char *key, char *out, size_t size)
{
        char pattern[32];
        const char *at;
        size_t n;

        snprintf(pattern, sizeof(pattern), "\"%s\": ", key);
        at = strstr(line, pattern);
        if (!at)
                return false;
        at += strlen(pattern);
        if (*at == '"') {       /* a string: up to the closing quote, escapes kept */
                const char *end = at + 1;

                while (*end && *end != '"')
                        end += *end == '\\' && end[1] ? 2 : 1;
                n = (size_t)(end - at - 1);
                at++;
        } else {
                n = strcspn(at, ",}");
        }
        snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), at);
        return true;
}

int pf_learn_add(struct learn_state *st, enum pf_proto proto, unsigned port, unsigned bound,
                 const char *program, const char *address)
{
        struct learned one = { .proto = proto, .port = port, .bound = bound, .times = 1 };

        snprintf(one.program, sizeof(one.program), "%s", program);
        snprintf(one.address, sizeof(one.address), "%s", address);
        for (size_t i = 0; i < st->count; i++) {
                struct learned *l = &st->ports[i];

                if (one.port && l->proto == one.proto && l->port == one.port) {
                        l->times++;
                        return 0;
                }
        }
        if ((st->count & 15) == 0) {
                struct learned *grown = realloc(st->ports, (st->count + 16) * sizeof(*grown));

                if (!grown)
                        return -ENOMEM;
                st->ports = grown;
        }
        st->ports[st->count++] = one;
        return 0;
}

static int record(struct learn_state *st, const char *line)
{
        char proto_name[8], port[8], bound[8], program[64], address[64];
        enum pf_proto proto;

        if (!field(line, PF_LEARN_PROTO, proto_name, sizeof(proto_name)) ||
            !field(line, PF_LEARN_PORT, port, sizeof(port)) || !field(line, PF_LEARN_BOUND, bound, sizeof(bound)) ||
            !field(line, PF_LEARN_PROGRAM, program, sizeof(program)) ||
            !field(line, PF_LEARN_ADDRESS, address, sizeof(address)) || pf_proto_parse(proto_name, &proto) < 0)
                return 0;       /* not a line of ours: a bind cut by a kill */
        return pf_learn_add(st, proto, (unsigned)atoi(port), (unsigned)atoi(bound), program, address);
}

static int read_records(const char *path, struct learn_state *st)
{
        FILE *f = fopen(path, "re");
        char *line = NULL;
        size_t size = 0;
        int r = 0;

        if (!f)
                return -errno;
        while (r == 0 && getline(&line, &size, f) > 0)
                r = record(st, line);
        free(line);
        fclose(f);
        return r;
}

/* ---- running the command --------------------------------------------------- */

static volatile sig_atomic_t child_pid, interrupted;

static void forward(int sig)
{
        interrupted = 1;
        if (child_pid > 0)
                kill(child_pid, sig == SIGALRM ? SIGTERM : sig);
}

/* CMD's exit status as a shell gives it (128 + signal). */
static int run_and_wait(char **command, unsigned duration)
{
        struct sigaction sa = { .sa_handler = forward };
        int status;
        pid_t pid = fork();

        if (pid < 0)
                return -errno;
        if (pid == 0) {
                execvp(command[0], command);
                pf_error("learn", "cannot run '%s': %s", command[0], strerror(errno));
                _exit(errno == ENOENT ? 127 : 126);
        }
        child_pid = pid;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGALRM, &sa, NULL);
        if (duration)
                alarm(duration);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        alarm(0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- the proposal ------------------------------------------------------------ */

/* Where suggest looks first: the ports safe on every stack of the seed's
 * table and on this host (outside every dynamic and well-known range).
 * Today's stacks together leave none (OpenBSD picks from 1024-49151). */
static void safe_everywhere(enum pf_proto proto, struct pf_portset *safe)
{
        const struct pf_profile *list[64];
        struct pf_portset dynamic;
        char why[PF_WHY_SIZE];
        int n = pf_cli_parse_os("learn", "seed,host", proto, list, 64);

        pf_portset_clear(safe);
        if (n > 0 && pf_profiles_combine(list, (size_t)n, proto, &dynamic, safe, why) < 0)
                pf_portset_clear(safe);
}

/* A port from the candidates that is safe for a server here and not yet
 * taken: outside every guarded range, not given to a server by the base, not
 * in /etc/services, free now. 0 when none is left. */
static unsigned pick(const struct pf_policy *base, enum pf_proto proto, const struct pf_portset *from,
                     struct pf_portset *taken)
{
        struct pf_portset servers;

        pf_policy_server_ports(base, proto, &servers);
        for (unsigned port = pf_portset_find(from, 1024, true); port <= PF_PORT_MAX;
             port = pf_portset_find(from, port + 1, true)) {
                if (pf_portset_has(pf_policy_guarded(base, PF_TCP), port) ||
                    pf_portset_has(pf_policy_guarded(base, PF_UDP), port) ||
                    pf_portset_has(&servers, port) || pf_portset_has(taken, port) ||
                    pf_host_port_named(port, proto) ||
                    !pf_host_port_free(port, proto))
                        continue;
                pf_portset_add(taken, port);
                return port;
        }
        return 0;
}

/* First where suggest would look, then anywhere from 1024 up. */
static unsigned next_safe_port(const struct pf_policy *base, enum pf_proto proto,
                               struct pf_portset *taken)
{
        struct pf_portset candidates;
        unsigned port;

        safe_everywhere(proto, &candidates);
        port = pick(base, proto, &candidates, taken);
        if (port)
                return port;
        pf_portset_fill(&candidates);
        return pick(base, proto, &candidates, taken);
}

static char *read_text(const char *path)
{
        FILE *f = fopen(path, "re");
        char *text = NULL;
        size_t size = 0;

        if (!f)
                return NULL;
        if (getdelim(&text, &size, '\0', f) < 0) {
                free(text);
                text = strdup("");
        }
        fclose(f);
        return text;
}

/* The rules, one per guarded port, each with its comment. */
static int write_rules(FILE *out, const struct pf_policy *base, const struct learn_state *st,
                       bool more_follow, unsigned *written)
{
        struct pf_portset taken;
        unsigned left = 0;

        pf_portset_clear(&taken);
        for (size_t i = 0; i < st->count; i++)
                left += st->ports[i].port && pf_portset_has(pf_policy_guarded(base, st->ports[i].proto),
                                                            st->ports[i].port);
        *written = 0;
        for (size_t i = 0; i < st->count; i++) {
                const struct learned *l = &st->ports[i];
                unsigned to;

                if (!l->port || !pf_portset_has(pf_policy_guarded(base, l->proto), l->port))
                        continue;
                to = next_safe_port(base, l->proto, &taken);
                if (!to)
                        return -ENOSPC;
                fprintf(out, "\n  # learned: '%s' bound %s %u/%s %u time%s\n", l->program, l->address,
                        l->port, pf_proto_name(l->proto), l->times, l->times == 1 ? "" : "s");
                fprintf(out, "  { ports = \"%u\"; proto = \"%s\"; action = \"remap\"; to = %u; }%s",
                        l->port, pf_proto_name(l->proto), to, --left || more_follow ? "," : "");
                (*written)++;
        }
        return 0;
}

/* The directory of path, for its @include files; NULL for a bare name. */
static char *directory_of(const char *path)
{
        const char *slash = strrchr(path, '/');

        return slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : NULL;
}

/* The base's text with the learned rules in it, first in its rules list
 * (the policy's parser says where that list opens), in *result; a negative
 * errno after an error: -EXDEV when an @include'd file holds the list. */
static int propose(const char *base_path, const struct pf_policy *base, const struct learn_state *st,
                   unsigned *written, char **result)
{
        bool builtin = strcmp(base_path, PF_POLICY_BUILTIN) == 0;
        char *text = builtin ? strdup("# portfence's built-in default\nversion = 1;\nephemeral = \"host\";\n")
                             : read_text(base_path);
        char *dir = builtin ? NULL : directory_of(base_path);
        size_t size = 0, at = 0;
        int has_rules, r;
        FILE *out;

        *result = NULL;
        has_rules = text ? pf_policy_rules_opening(text, dir, &at) : -errno;
        free(dir);
        if (has_rules < 0) {
                free(text);
                return has_rules;
        }
        out = open_memstream(result, &size);
        if (!out) {
                free(text);
                return -errno;
        }
        fprintf(out, "%.*s", (int)at, text);
        if (!has_rules)
                fprintf(out, "\n# Learned by 'portfence learn'.\nrules = (");
        r = write_rules(out, base, st, has_rules && pf_policy_rule_count(base) > 0, written);
        fprintf(out, "%s%s", has_rules ? "\n" : "\n);\n", text + at);
        fclose(out);
        free(text);
        if (r < 0) {
                free(*result);
                *result = NULL;
        }
        return r;
}

static void summary(const char *command, const struct learn_state *st, const struct pf_policy *base,
                    unsigned written, const char *where)
{
        unsigned kernel = 0, unguarded = 0;

        for (size_t i = 0; i < st->count; i++) {
                if (!st->ports[i].port)
                        kernel++;
                else if (!pf_portset_has(pf_policy_guarded(base, st->ports[i].proto), st->ports[i].port))
                        unguarded++;
        }
        pf_note(command, "%u guarded port%s moved by the proposal, %u unguarded left alone, %u chosen "
                "by the kernel; policy written to %s", written, written == 1 ? "" : "s", unguarded,
                kernel, where);
}

static void put_text(FILE *out, const void *text)
{
        fputs(text, out);
}

static int write_proposal(const char *path, const char *text)
{
        if (!path) {
                fputs(text, stdout);
                return 0;
        }
        return pf_cli_replace_file(path, put_text, text);
}

struct learn_args {
        const char *config, *output;
        unsigned duration;
        char **command;
};

static int parse_learn_args(int argc, char **argv, struct learn_args *a)
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "duration", required_argument, NULL, 'd' },
                { "output", required_argument, NULL, 'o' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        int opt;

        while ((opt = pf_cli_getopt("learn", argc, argv, "+c:o:h", options)) != -1) {
                switch (opt) {
                case 'c': a->config = optarg; break;
                case 'o': a->output = optarg; break;
                case 'd':
                        if (pf_cli_parse_uint(optarg, 1, 86400 * 365, &a->duration) < 0) {
                                pf_error("learn", "bad --duration '%s': expected seconds", optarg);
                                return -1;
                        }
                        break;
                case 'h': learn_help(stdout); return 1;
                default: learn_help(stderr); return -1;
                }
        }
        if (optind >= argc) {
                pf_error("learn", "no command given (portfence learn -- CMD [ARGS...])");
                return -1;
        }
        a->command = argv + optind;
        return 0;
}

/* The learn file: in the run cache, this user's alone. */
static int make_learn_file(const char *cache, char *path, size_t size)
{
        int fd;

        if (snprintf(path, size, "%s/learn-XXXXXX", cache) >= (int)size)
                return -ENAMETOOLONG;
        fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        close(fd);
        return 0;
}

int pf_learn_finish(const char *command, const struct pf_policy *base, const struct learn_state *st,
                    const char *output)
{
        unsigned written = 0;
        char *text;
        int r = propose(pf_policy_name(base), base, st, &written, &text);

        if (r == -EXDEV) {
                pf_error(command, "the rules of %s are in an @include'd file: learn writes its rules "
                         "into the policy's own list; move the list there, or add them by hand",
                         pf_policy_name(base));
                return PF_EXIT_USAGE;
        }
        if (r == -EINVAL) {
                pf_error(command, "cannot find where the rules list of %s opens (is a comment between "
                         "'rules =' and its '('?)", pf_policy_name(base));
                return PF_EXIT_USAGE;
        }
        if (r < 0) {
                pf_error(command, "cannot make the policy: %s", strerror(-r));
                return PF_EXIT_FAILURE;
        }
        if (pf_cli_check_text(command, text) < 0) {
                r = PF_EXIT_FAILURE;    /* a proposal that does not load is never written */
        } else if ((r = write_proposal(output, text)) < 0) {
                pf_error(command, "cannot write '%s': %s", output, strerror(-r));
                r = PF_EXIT_FAILURE;
        } else {
                summary(command, st, base, written, output ? output : "stdout");
                r = PF_EXIT_OK;
        }
        free(text);
        return r;
}

int pf_cmd_learn(int argc, char **argv)
{
        struct learn_args a = { 0 };
        struct learn_state st = { 0 };
        char cache[PATH_MAX], learn_path[PATH_MAX];
        struct pf_policy *base;
        int r = parse_learn_args(argc, argv, &a), status;

        if (r)
                return r > 0 ? PF_EXIT_OK : PF_EXIT_USAGE;
        base = pf_cli_load_policy("learn", a.config);
        if (!base)
                return PF_EXIT_USAGE;
        r = pf_run_environment("learn", base, cache, sizeof(cache));
        if (r == PF_EXIT_OK && (status = make_learn_file(cache, learn_path, sizeof(learn_path))) < 0) {
                pf_error("learn", "cannot create a learn file in '%s': %s", cache, strerror(-status));
                r = PF_EXIT_FAILURE;
        }
        if (r != PF_EXIT_OK) {
                pf_policy_free(base);
                return r;
        }
        setenv("PORTFENCE_LEARN", learn_path, 1);
        status = run_and_wait(a.command, a.duration);
        unsetenv("PORTFENCE_LEARN");
        r = read_records(learn_path, &st);
        unlink(learn_path);
        if (r < 0) {
                pf_error("learn", "cannot read what was learned: %s", strerror(-r));
                r = PF_EXIT_FAILURE;
        } else {
                r = pf_learn_finish("learn", base, &st, a.output);
                if (r == PF_EXIT_OK && status < 0)
                        r = PF_EXIT_FAILURE;
        }
        free(st.ports);
        pf_policy_free(base);
        return r;
}
