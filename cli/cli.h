/* SPDX-License-Identifier: MIT */
/* Shared by the subcommands of the portfence command. */
#pragma once

#include <stdio.h>

#include "policy.h"

/* Exit codes: 0 fine, 1 "found something" (suggest, scan, squat), 2 a usage
 * or policy error, 3 the system failed (out of memory, netlink, the kernel). */
enum { PF_EXIT_OK = 0, PF_EXIT_FOUND = 1, PF_EXIT_USAGE = 2, PF_EXIT_FAILURE = 3 };

struct pf_command {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *summary;
};

/* "portfence: CMD: message" on stderr; one shape for every error. */
__attribute__((format(printf, 2, 3)))
void pf_error(const char *command, const char *fmt, ...);

/* Load the policy for a command; on failure print every problem and return
 * NULL (the command exits PF_EXIT_USAGE). */
struct pf_policy *pf_cli_load_policy(const char *command, const char *explicit_path);

/* The absolute path of the policy's file, "" for the built-in default. */
void pf_cli_policy_source(const struct pf_policy *policy, char *out, size_t size);

/* A note on stderr for every rule whose program glob the cgroup programs
 * cannot match exactly. */
void pf_cli_comm_notes(const char *command, const struct pf_policy *policy);

/* Parse a comma-separated --os list ("all" = every table row but "host")
 * into profiles; returns the count or -1 after printing an error. */
int pf_cli_parse_os(const char *command, const char *list, const struct pf_profile **out,
                    size_t capacity);

/* Parse an unsigned number in [min, max]; returns 0 or -1. */
int pf_cli_parse_uint(const char *text, unsigned min, unsigned max, unsigned *out);

/* JSON output helpers. */
void pf_json_string(FILE *f, const char *s);
void pf_json_portset(FILE *f, const struct pf_portset *set);    /* ["lo-hi", ...] */

int pf_cmd_check(int argc, char **argv);
int pf_cmd_ranges(int argc, char **argv);
int pf_cmd_suggest(int argc, char **argv);
int pf_cmd_run(int argc, char **argv);
int pf_cmd_cgroup(int argc, char **argv);
int pf_cmd_scan(int argc, char **argv);
int pf_cmd_squat(int argc, char **argv);
int pf_cmd_export(int argc, char **argv);
