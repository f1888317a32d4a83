/* SPDX-License-Identifier: MIT */
/* The loader of portfence's cgroup programs: open -> load -> fill maps from
 * the compiled policy -> attach with bpf_links -> pin, and the way back.
 * Every function returns 0 or a negative errno with a reason in why, a
 * buffer of PF_WHY_SIZE bytes. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "policy.h"

#define PF_BPF_PIN_ROOT "/sys/fs/bpf/portfence"
#define PF_WHY_SIZE 512

struct pf_cgroup {
        char path[4096];        /* the cgroup's directory */
        char relative[4096];    /* its path below the v2 mount, "/" for the root */
        uint64_t id;            /* the cgroup id: the directory's inode */
};

/* The cgroup v2 mount point, from /proc/self/mountinfo. */
int pf_cgroup_mount(char *out, size_t size, char *why);
/* Warn-worthy: net_cls or net_prio v1 controllers are mounted (they turn off
 * cgroup v2 socket matching for processes placed in them). */
bool pf_cgroup_v1_net_controllers(void);
/* A cgroup given as a v2 directory, a path below the v2 mount, or pid:N. */
int pf_cgroup_resolve(const char *arg, struct pf_cgroup *out, char *why);

int pf_bpf_attach(const struct pf_policy *policy, const char *policy_path,
                  const struct pf_cgroup *cgroup, bool verbose, char *why);
int pf_bpf_reload(const struct pf_policy *policy, const char *policy_path,
                  const struct pf_cgroup *cgroup, char *why);
int pf_bpf_detach(const struct pf_cgroup *cgroup, char *why);
/* One line (or JSON object) per fenced cgroup, or just the one given. */
int pf_bpf_status(FILE *out, const struct pf_cgroup *only, bool json, char *why);
/* Print decisions as they happen until interrupted or count events. */
int pf_bpf_events(FILE *out, const struct pf_cgroup *cgroup, bool json, unsigned count,
                  char *why);
