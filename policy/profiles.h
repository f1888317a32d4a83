/* SPDX-License-Identifier: MIT */
/* The port ranges of the TCP/UDP stacks named in the seed article
 * ("Selecting TCP Port Numbers for Fun, Profit, and Reliability"), the
 * stacks people run today, the server ranges of platforms that listen in
 * ranges of their own (Kubernetes NodePorts, Docker's published ports), and
 * this host's live ephemeral range. */
#pragma once

#include <stddef.h>

#include "portset.h"

enum pf_proto { PF_TCP, PF_UDP, PF_PROTO_COUNT };

#define PF_PROTO_BIT(proto) (1u << (proto))
#define PF_PROTO_BOTH (PF_PROTO_BIT(PF_TCP) | PF_PROTO_BIT(PF_UDP))

struct pf_profile {
        const char *name;               /* as used in policies and --os */
        const char *stack;              /* the stack, as its source names it */
        unsigned protos;                /* PF_PROTO_BIT()s this row describes */
        struct pf_range well_known;     /* {0, 0}: none */
        struct pf_range registered;     /* {0, 0}: none */
        struct pf_range dynamic;        /* ignored for "host": read live */
        bool live;                      /* "host": dynamic read from /proc */
        bool seed;                      /* a row of the seed article's table */
        struct pf_range servers;        /* where the platform's own servers listen: clients
                                         * and other servers must avoid it; {0, 0}: none */
        const char *others;             /* the profiles of the same stack for the other proto */
        const char *source;             /* where the numbers come from */
};

const struct pf_profile *pf_profiles(size_t *count);
const struct pf_profile *pf_profile_find(const char *name);
const char *pf_proto_name(enum pf_proto proto);
int pf_proto_parse(const char *name, enum pf_proto *out);

/* The dynamic ports of a profile for proto (empty when the row does not
 * describe proto); "host" reads the live files. */
int pf_profile_dynamic(const struct pf_profile *profile, enum pf_proto proto,
                       struct pf_portset *out, char *why);

/* Over the given profiles and proto: the union of their dynamic ranges, and
 * the ports safe on all of them for a server (never a well-known port, on
 * no profile dynamic or a platform's server range). A profile that does not
 * describe proto is an error naming the ones that do. */
int pf_profiles_combine(const struct pf_profile *const *profiles, size_t count,
                        enum pf_proto proto, struct pf_portset *dynamic,
                        struct pf_portset *safe, char *why);
