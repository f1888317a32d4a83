/* SPDX-License-Identifier: MIT */
/* The loader of portfence's cgroup programs: open -> load -> fill maps from
 * the compiled policy -> attach with bpf_links -> pin, and the way back.
 * Every function returns 0 or a negative errno with a reason in why, a
 * buffer of PF_WHY_SIZE bytes; none prints: the command formats. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cgroup.h"
#include "policy.h"
#include "portfence-api.bpf.h"

#define PF_BPF_PIN_ROOT "/sys/fs/bpf/portfence"

/* The kernel's tc attach points of bpf_link_create() (Linux 6.6), which
 * older UAPI headers do not name. */
#define PF_BPF_TCX_INGRESS 46
#define PF_BPF_TCX_EGRESS 47

/* prog_fd (a tc program) linked at attach_type to every interface of this
 * thread's network namespace with an Ethernet header or loopback (that
 * wanted() wants, if given); keep() takes each link's descriptor (and
 * closes it) or fails with why. -EOPNOTSUPP: the kernel links no tc
 * programs (before Linux 6.6), nothing was linked. */
typedef bool (*pf_wire_wanted)(unsigned ifindex, void *ctx);
typedef int (*pf_wire_keep)(int link_fd, unsigned ifindex, void *ctx, char *why);
int pf_bpf_link_interfaces(int prog_fd, int attach_type, pf_wire_wanted wanted, pf_wire_keep keep, void *ctx,
                           char *why);

/* The bpffs fences are pinned in, mounted at /sys/fs/bpf if it is not and
 * this is the host's mount namespace (pins in a private one would end with
 * it): 0; 1 when it was mounted where that could not be told (why holds the
 * note to show); a negative errno where the namespace is provably private.
 * pf_bpf_attach() calls it; a command calls it first to show the note. */
int pf_bpf_ready(char *why);

int pf_bpf_attach(const struct pf_policy *policy, const char *policy_path,
                  const struct pf_cgroup *cgroup, bool verbose, char *why);
int pf_bpf_reload(const struct pf_policy *policy, const char *policy_path,
                  const struct pf_cgroup *cgroup, char *why);
/* 0; 1 when what was removed was an attach that never committed (it decided
 * nothing); or a negative errno. */
int pf_bpf_detach(const struct pf_cgroup *cgroup, char *why);
/* What a fence says of itself. */
#define PF_FENCE_COUNTERS 8     /* one per enum pf_action, then redirects, errors, lost events, moves refused */
struct pf_fence_status {
        uint64_t cgroup_id;
        char cgroup[4096];      /* its directory, "" when the cgroup is gone */
        char policy[256];       /* the policy file, "" for the built-in default */
        uint64_t policy_hash;
        uint64_t counters[PF_FENCE_COUNTERS];
        bool defunct;           /* its cgroup is gone: 'portfence cgroup prune' removes it */
        bool broken;            /* pins missing: only cgroup_id is known */
        bool unfinished;        /* an attach killed before its commit left it: inert */
};
typedef int (*pf_fence_visit)(const struct pf_fence_status *status, void *ctx);
/* Every fence (only NULL), or the one given, to visit(). A fence being
 * attached or detached meanwhile is left out; any other that cannot be read
 * is reported in why once the rest are visited. */
int pf_bpf_status(const struct pf_cgroup *only, pf_fence_visit visit, void *ctx, char *why);

/* Does cgroup have a fence of its own? */
bool pf_bpf_is_fenced(const struct pf_cgroup *cgroup);
/* Did an attach of cgroup die before its commit, leaving what decides
 * nothing (detach removes it, attach replaces it)? */
bool pf_bpf_attach_unfinished(const struct pf_cgroup *cgroup);
/* Are the fence's tc programs linked, so that it steers UDP (Linux 6.6)? */
bool pf_bpf_fence_steers_datagrams(const struct pf_cgroup *cgroup);
/* The nearest ancestor of cgroup (by path) that is fenced, whose programs
 * run for cgroup too: 0 and *ancestor, or -ENOENT. */
int pf_bpf_fencing_ancestor(const struct pf_cgroup *cgroup, struct pf_cgroup *ancestor);

/* Remove every fence whose cgroup is gone (removed() told each id); the
 * count removed, or a negative errno. attach runs it first. */
int pf_bpf_prune(void (*removed)(uint64_t id, void *ctx), void *ctx, char *why);

/* Every map a fence holds (its own and those it shares), to visit() with
 * the kernel's id and the memory it charges for it (fdinfo's memlock). */
typedef void (*pf_map_visit)(uint32_t id, const char *name, uint64_t memlock, void *ctx);
int pf_bpf_fence_maps(const struct pf_cgroup *cgroup, pf_map_visit visit, void *ctx, char *why);

/* One decision of a fence, as it happened. */
struct pf_fence_event {
        uint64_t cgroup_id;
        uint32_t pid;
        char comm[17];          /* the kernel's comm of the caller: any bytes */
        const char *call;       /* "bind", "connect", "sendmsg" */
        enum pf_proto proto;
        struct pf_addr addr;
        uint16_t port, target, rule;
        enum pf_action action;
        int err;                /* PF_REFUSE: the errno returned */
};
typedef void (*pf_event_visit)(const struct pf_fence_event *event, void *ctx);
/* Decisions to visit() as they happen, until interrupted (SIGINT, SIGTERM,
 * or SIGALRM from the caller's alarm()) or count events. */
int pf_bpf_events(const struct pf_cgroup *cgroup, unsigned count, pf_event_visit visit, void *ctx,
                  char *why);

/* Steering for 'portfence run' as root: a program attached to this thread's
 * network namespace gives every new TCP connection to a port a wrapped
 * server asked for to the listener the shim moved and put in the map
 * (struct pf_bpf_steer_key: the port it asked for, the listener's family
 * and address, netns and fence 0); tc programs on the namespace's
 * interfaces do the same for datagrams to a UDP socket the shim moved and
 * described (its storage, its port). Every descriptor is inheritable (not
 * close-on-exec): nothing is pinned, and steering ends when the last
 * process holding them exits. The shim is told the maps, in this order, as
 * PORTFENCE_STEER ("FD:ID" for each of enum pf_run_map, joined by ':'). */
struct pf_run_steering {
        int map_fd[PF_RUN_MAPS];
        uint32_t map_id[PF_RUN_MAPS];   /* the shim checks the descriptors name these maps */
        int *link_fds;                  /* the sk_lookup link, then one per interface and direction */
        size_t links;
};
/* 0, 1 when UDP is not steered (the note in why), or -errno. */
int pf_bpf_run_steering(struct pf_run_steering *out, char *why);
/* Every descriptor of it closed. */
void pf_bpf_run_steering_close(struct pf_run_steering *s);
