/* SPDX-License-Identifier: MIT */
/* Shared by the subcommands of the portfence command. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <getopt.h>
#include <stdio.h>
#include <sys/types.h>

#include "policy.h"

/* Exit codes: 0 fine, 1 "found something" (suggest, scan, squat), 2 a usage
 * or policy error, 3 the system failed (out of memory, netlink, the kernel). */
enum { PF_EXIT_OK = 0, PF_EXIT_FOUND = 1, PF_EXIT_USAGE = 2, PF_EXIT_FAILURE = 3 };

/* One table shape for every level of commands; help is made from it. */
struct pf_command {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *usage;              /* the arguments, after the name */
        const char *summary;
};
#define PF_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* "usage: portfence PREFIX NAME USAGE" lines, then "  NAME  SUMMARY" lines. */
void pf_cli_help(FILE *f, const char *prefix, const struct pf_command *table, size_t count);
/* argv[1] names a command of the table: run it with argv + 1. --help, -h
 * and no command print help (to stdout, or stderr with exit 2). */
int pf_cli_dispatch(const char *prefix, const struct pf_command *table, size_t count, int argc,
                    char **argv, void (*help)(FILE *f));

/* "portfence: CMD: message" on stderr (CMD NULL: "portfence: message"); the
 * one way every message of the command is written. A message reads "cannot
 * VERB 'SUBJECT': reason" or "bad WHAT 'SUBJECT': reason". */
__attribute__((format(printf, 2, 3)))
void pf_error(const char *command, const char *fmt, ...);
/* "portfence: CMD: BEFORE'SUBJECT'REST": the subject, data a program or a
 * user gave, escaped (pf_text); the rest formatted. */
__attribute__((format(printf, 4, 5)))
void pf_error_quoting(const char *command, const char *before, const char *subject, const char *fmt, ...);
/* The same with "note: " or "warning: " after "CMD: ". */
__attribute__((format(printf, 2, 3)))
void pf_note(const char *command, const char *fmt, ...);
__attribute__((format(printf, 2, 3)))
void pf_warning(const char *command, const char *fmt, ...);

/* Load the policy for a command; on failure print every problem and return
 * NULL (the command exits PF_EXIT_USAGE). */
struct pf_policy *pf_cli_load_policy(const char *command, const char *explicit_path);

/* All of standard input as a string (free it), refused from max bytes on:
 * its length (it may hold NUL bytes), or a negative errno (-EFBIG past max). */
ssize_t pf_cli_read_stdin(char **out, size_t max);

/* Replace path whole: write() fills a temporary file beside it, which is
 * renamed over it (mode 0644). 0, or a negative errno. */
int pf_cli_replace_file(const char *path, void (*write)(FILE *out, const void *ctx), const void *ctx);

/* Load a policy from text (one this command made): 0, or -1 after printing
 * every problem. */
int pf_cli_check_text(const char *command, const char *text);

/* The absolute path of the policy's file, "" for the built-in default. */
void pf_cli_policy_source(const struct pf_policy *policy, char *out, size_t size);

/* A note on stderr for every rule whose program glob matches otherwise than
 * a reader may think (names keep 15 characters), or the kernel refuses. */
void pf_cli_comm_notes(const char *command, const struct pf_policy *policy);

/* The guardrail against a widened range: the ports the policy gives servers
 * (allowed ports, remap targets, the pool) that this network namespace's
 * kernel may hand a client now (inside its ip_local_port_range, not
 * reserved), named in one warning (or a note: as_note) about `where`. 1 if
 * there are some, 0 if none, -1 if the kernel's settings cannot be read. */
int pf_cli_warn_unreserved(const char *command, const struct pf_policy *policy, const char *where,
                           bool as_note);

/* getopt_long() with the errors as every other message of portfence:
 * "portfence: COMMAND: unknown option '-x'". '?' after printing one. */
int pf_cli_getopt(const char *command, int argc, char **argv, const char *shortopts,
                  const struct option *longopts);

/* Parse a comma-separated --os list into profiles for proto; returns the
 * count or -1 after printing an error. Groups take their rows that describe
 * proto: "all" = every row but "host", "seed" = the seed article's rows. */
int pf_cli_parse_os(const char *command, const char *list, enum pf_proto proto,
                    const struct pf_profile **out, size_t capacity);

/* Why a verdict is what it is: "rule 1, FILE:12", "not guarded"... */
void pf_cli_verdict_reason(const struct pf_policy *policy, unsigned port, const struct pf_verdict *v,
                           char *buf, size_t size);

/* Parse an unsigned number in [min, max]; returns 0 or -1. */
int pf_cli_parse_uint(const char *text, unsigned min, unsigned max, unsigned *out);

/* The one JSON writer (json.c): strings escaped by pf_json_escape(), so
 * every output is valid JSON whatever bytes a program name holds. */
#define PF_JSON_DEPTH 8
struct pf_json {
        FILE *out;
        unsigned depth;
        bool pending_key;               /* a key was written: its value comes next */
        bool array[PF_JSON_DEPTH];
        unsigned count[PF_JSON_DEPTH];  /* values written at each level */
};
void pf_json_init(struct pf_json *j, FILE *out);
void pf_json_object_begin(struct pf_json *j);
void pf_json_object_end(struct pf_json *j);
void pf_json_array_begin(struct pf_json *j);
void pf_json_array_end(struct pf_json *j);
void pf_json_key(struct pf_json *j, const char *key);
void pf_json_string(struct pf_json *j, const char *s);
void pf_json_uint(struct pf_json *j, uint64_t value);
void pf_json_int(struct pf_json *j, int64_t value);
void pf_json_number(struct pf_json *j, const char *text);      /* already a JSON number */
void pf_json_bool(struct pf_json *j, bool value);
void pf_json_portset(struct pf_json *j, const struct pf_portset *set);  /* ["lo-hi", ...] */
void pf_json_kv_string(struct pf_json *j, const char *key, const char *value); /* NULL: null */
void pf_json_kv_uint(struct pf_json *j, const char *key, uint64_t value);
/* "action", "target", "errno" and "rule" of a decision, as every command
 * and the shim's log write them. */
void pf_json_decision(struct pf_json *j, enum pf_action action, uint16_t target, int err,
                      unsigned rule);
/* Text a program controls, on a text line: pf_text_escape()d. */
void pf_text(FILE *out, const char *s);
/* The same into out (size bytes, cut before an escape that does not fit). */
void pf_text_copy(char *out, size_t size, const char *s);

/* probe.c: a process placed in cgroup binds a port that the policy of the
 * fence deciding there refuses or moves; one line says what happened. 0 as
 * the policy says, 1 not (the fence decides nothing, or otherwise), or a
 * negative errno with why. */
struct pf_cgroup;
int pf_cgroup_probe(const struct pf_cgroup *cgroup, char *why);

/* cgroup.c: the bpffs fences are pinned in, ready (pf_bpf_ready()), with
 * its note shown: 0, or -1 after an error. */
int pf_cli_bpffs_ready(const char *command);

/* The environment of a program run under the shim with policy: compiled
 * into the run cache (its directory in cache, if given), PORTFENCE_* and
 * LD_PRELOAD set. PF_EXIT_OK, or the exit code of the error (printed). */
int pf_run_environment(const char *command, const struct pf_policy *policy, char *cache,
                       size_t cache_size);

/* landlock.c: Landlock's network rules for what the shim cannot see. */
/* The kernel's Landlock ABI version, or a negative errno. */
int pf_landlock_abi(void);
/* This process and every child it starts may bind only the TCP ports
 * pf_policy_landlock_tcp() gives, and port 0; *rules: how many ports. 0, or
 * a negative errno with why (-EOPNOTSUPP: the kernel has no such rules). */
int pf_landlock_restrict(const struct pf_policy *policy, unsigned *rules, char *why);

/* What 'learn' and 'cgroup learn' saw: one entry per port asked for, by
 * protocol (port 0: the kernel chose, each kept). */
struct learned {
        enum pf_proto proto;
        unsigned port;          /* as asked; 0: the kernel chose */
        unsigned bound;         /* the port it got */
        unsigned times;
        char program[64];       /* escaped as JSON strings are */
        char address[64];
};
struct learn_state {
        struct learned *ports;
        size_t count;
};
int pf_learn_add(struct learn_state *st, enum pf_proto proto, unsigned port, unsigned bound,
                 const char *program, const char *address);
/* Write the proposal (base with the learned rules) to output (NULL: stdout),
 * checked first, with a summary on stderr. An exit code. */
int pf_learn_finish(const char *command, const struct pf_policy *base, const struct learn_state *st,
                    const char *output);

int pf_cmd_check(int argc, char **argv);
int pf_cmd_learn(int argc, char **argv);
int pf_cmd_ranges(int argc, char **argv);
int pf_cmd_suggest(int argc, char **argv);
int pf_cmd_run(int argc, char **argv);
int pf_cmd_cgroup(int argc, char **argv);
int pf_cmd_oci_hook(int argc, char **argv);
int pf_cmd_scan(int argc, char **argv);
int pf_cmd_squat(int argc, char **argv);
int pf_cmd_export(int argc, char **argv);
