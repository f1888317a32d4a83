/* SPDX-License-Identifier: MIT */
/* cgroup v2 on this host: where it is mounted, and the cgroup a user names. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portset.h"

struct pf_cgroup {
        char path[4096];        /* the cgroup's directory; "" when given as id:N */
        uint64_t id;            /* the cgroup id: the directory's inode */
        bool root;              /* the root of cgroup v2: every process of the host */
};

/* The cgroup v2 mount point, from /proc/self/mountinfo. */
int pf_cgroup_mount(char *out, size_t size, char *why);
/* Warn-worthy: net_cls or net_prio v1 controllers are mounted (they turn off
 * cgroup v2 socket matching for processes placed in them). */
bool pf_cgroup_v1_net_controllers(void);
/* The cgroup v2 path of a process ("self" or a pid) as its /proc/PID/cgroup
 * names it (in the reader's cgroup namespace): 0, or a negative errno. */
int pf_cgroup_of_pid(const char *pid, char *out, size_t size, char *why);
/* A cgroup given as a v2 directory, a path below the v2 mount, pid:N,
 * pid:self (the caller's; systemd's .control subgroup of a delegated unit
 * means the unit's), or id:N (the id 'portfence cgroup status' shows, for a cgroup that may be
 * gone). An empty argument (an unset variable?) is an error. */
int pf_cgroup_resolve(const char *arg, struct pf_cgroup *out, char *why);
/* The cgroup above cgroup (path, id, root), or -ENOENT at the v2 mount's
 * root, for a cgroup given as id:N, or one gone. */
int pf_cgroup_parent(const struct pf_cgroup *cgroup, struct pf_cgroup *parent);
/* The directory of the cgroup whose id is id, found below the v2 mount as
 * this process sees it: 0, or -ENOENT (out "") when it is gone. */
int pf_cgroup_path_of_id(uint64_t id, char *out, size_t size);
/* The pod root of a Kubernetes node below the v2 mount: kubepods.slice with
 * the systemd cgroup driver, kubepods with cgroupfs, in this process's
 * cgroup namespace (an agent in a pod must enter the host's first): 0, or
 * a negative errno and why (neither, or both). */
int pf_cgroup_kubepods(char *out, size_t size, char *why);
