/* SPDX-License-Identifier: MIT */
/* Facts of this host, read in one place. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "policy.h"

struct inet_diag_msg;

#define PF_PROC_PORT_RANGE "/proc/sys/net/ipv4/ip_local_port_range"
#define PF_PROC_RESERVED "/proc/sys/net/ipv4/ip_local_reserved_ports"

/* The reserved ports in a file like ip_local_reserved_ports, read whole
 * however long. 0, or a negative errno with the reason in why. */
int pf_host_reserved_read(const char *path, struct pf_portset *out, char *why);

/* Write set as the whole content of an ip_local_reserved_ports file (the
 * caller merges what is there). 0, or a negative errno with the reason. */
int pf_host_reserved_write(const char *path, const struct pf_portset *set, char *why);

/* The one check of a file portfence trusts, on its descriptor's stat: of
 * type (S_IFREG, S_IFDIR; 0: any), owned by owner (or root too, with
 * or_root), and with none of the mode bits of others_may_not (0022: no one
 * else writes it; 0077: no one else reads or writes it). */
bool pf_host_trusted(const struct stat *st, mode_t type, uid_t owner, bool or_root, mode_t others_may_not);

/* Is port free now for a server of proto, on every address of both
 * families (a bind to the wildcard succeeds)? */
bool pf_host_port_free(unsigned port, enum pf_proto proto);
/* Is port a named service of proto (/etc/services: getservbyport)? */
bool pf_host_port_named(unsigned port, enum pf_proto proto);

/* Landlock: why a kernel whose Landlock ABI is abi (or the negative errno
 * of asking it) cannot fence TCP binds, NULL if it can (ABI 4, Linux 6.7).
 * UDP rules (ABI 10) are not used: their numbers are not known here. */
#define PF_LANDLOCK_NET_ABI 4
const char *pf_host_landlock_unusable(int abi);

/* The range of an ip_local_port_range file, whole (reserved ports in it). */
int pf_host_port_range_read(const char *range_path, struct pf_portset *out, char *why);

/* This host's ephemeral ports: the ip_local_port_range file minus the
 * ip_local_reserved_ports file (paths given for tests). */
int pf_host_ephemeral_read(const char *range_path, const char *reserved_path,
                           struct pf_portset *out, char *why);

/* This host's addresses, at most PF_HOST_LOCALS per family (IPv4 first):
 * what both enforcers call local. Returns the count. */
#define PF_HOST_LOCALS 16
unsigned pf_host_local_addresses(struct pf_addr *out, unsigned capacity);

/* Is this process in the host's mount namespace, the one whose mounts
 * outlive every command (a bpffs pinned there keeps a fence)? Read below
 * proc (a procfs root; tests give a directory of their own), without
 * needing to read pid 1's namespace, which some inits forbid even root:
 * the kernel's fixed number for the initial namespace (Linux 6.18), else
 * the namespace of pid 1 or of a kernel thread (kthreadd, pid 2, always in
 * the initial one). PF_NS_PRIVATE only where that is proved. */
enum pf_ns_place { PF_NS_UNKNOWN, PF_NS_HOST, PF_NS_PRIVATE };
enum pf_ns_place pf_host_mount_ns(const char *proc);

/* Safe on the shim's call path: async-signal-safe, no allocation. */

/* The TCP or UDP sockets of this network namespace, from sock_diag: each
 * dump checked for sequence, port id, length and interruption (retried).
 * visit() returns 0 to go on or a negative errno to stop with. */
struct pf_socket_query {
        int family;             /* AF_INET or AF_INET6 */
        enum pf_proto proto;
        uint32_t states;        /* 1 << TCP_*; 0: every state */
        uint16_t ports[2];      /* local ports (0: unused); none: every port */
};
typedef int (*pf_socket_visit)(const struct inet_diag_msg *msg, void *ctx);
int pf_host_sockets(const struct pf_socket_query *query, pf_socket_visit visit, void *ctx);

/* A sock_diag socket for pf_host_sockets_at() (close it), or a negative errno. */
int pf_host_diag_open(void);
/* The sockets of this network namespace that receive what is sent to
 * addr:ports[i] (a TCP listener, a UDP socket not connected elsewhere; a
 * dual-stack IPv6 one for an IPv4 address too), found by the kernel's own
 * lookup on the sock_diag socket diag, up to PF_HOST_AT_MAX ports in one
 * exchange: bit i set when ports[i] has one, inodes[i] its inode; or a
 * negative errno. */
#define PF_HOST_AT_MAX 4
int pf_host_sockets_at(int diag, enum pf_proto proto, const struct pf_addr *addr, const uint16_t *ports,
                       unsigned n, uint64_t *inodes);
