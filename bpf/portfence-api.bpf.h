/* SPDX-License-Identifier: MIT */
/* What the BPF programs and their loader share: fixed-width structs only,
 * included by portfence.bpf.c and by the loader. The programs know nothing
 * of the policy file; the loader fills these maps from the compiled policy. */
#pragma once

#include <linux/types.h>

#define PF_BPF_PORTS 65536
#define PF_BPF_GENERATIONS 2    /* every policy map has two halves: see settings */
#define PF_BPF_CHAIN 3          /* steps per port: up to 2 conditional rules, then a verdict */
#define PF_BPF_RULES 1024       /* conditional rules the kernel can check */
#define PF_BPF_LOCALS 16        /* addresses of this host per family */
#define PF_BPF_MAGIC 0x50464231 /* "PFB1": settings filled by the loader */

/* Every value both sides read is named here once; the loader ties each to
 * its user-space enum with _Static_assert, so reordering an enum cannot
 * silently change what the kernel does. */

/* Actions (enum pf_action). */
#define PF_BPF_ALLOW 0
#define PF_BPF_LOG 1
#define PF_BPF_REFUSE 2
#define PF_BPF_REMAP 3
#define PF_BPF_ACTIONS 4
#define PF_BPF_FILLED 0x80      /* set in every step the loader wrote */

/* Protocols (enum pf_proto) and families (enum pf_family). */
#define PF_BPF_TCP 0
#define PF_BPF_UDP 1
#define PF_BPF_PROTOS 2
#define PF_BPF_IPV4 0
#define PF_BPF_IPV6 1

struct pf_bpf_step {
        __u16 rule;             /* 1-based rule index, 0: default or not guarded */
        __u16 target;           /* PF_BPF_REMAP: the target of its span's first port */
        __u8 action;            /* PF_BPF_* | PF_BPF_FILLED */
        __u8 conditional;       /* check pf_bpf_rule[rule] before taking this step */
};

/* A policy's verdicts as spans: every port from start up to the next span's
 * start (of the same protocol) takes the same steps. A remap step's target
 * is that of the span's first port and grows with the port, so the pool's
 * arithmetic stays one span per run of ports. Spans are sorted by
 * (proto, start) and found by binary search: O(log spans), and a typical
 * policy has a handful. */
#define PF_BPF_SPAN_KEY(proto, port) (((__u32)(proto) << 16) | (port))
#define PF_BPF_SPANS_MAX (PF_BPF_PROTOS * PF_BPF_PORTS)
#define PF_BPF_SEARCH_STEPS 18  /* >= log2(PF_BPF_SPANS_MAX) + 1 */
struct pf_bpf_span {
        __u32 key;              /* PF_BPF_SPAN_KEY(proto, first port) */
        struct pf_bpf_step step[PF_BPF_CHAIN];
        __u8 count;             /* steps in use; the last one is unconditional */
        __u8 pad[1];
};

/* Where a search starts: every PF_BPF_BLOCK_PORTS ports of a protocol have
 * a block, which holds the span of its first port (one lookup answers every
 * port below next_key) and which spans[first .. first + count) cover it.
 * The blocks table has one size for every policy, so the kernel inlines its
 * lookups; a spans table is sized to its policy, and each of its lookups is
 * a call (two or three here, on a VM with retpolines, cost what the rest of
 * a decision does). */
#define PF_BPF_BLOCK_SHIFT 5
#define PF_BPF_BLOCK_PORTS (1u << PF_BPF_BLOCK_SHIFT)
#define PF_BPF_BLOCKS (PF_BPF_SPANS_MAX >> PF_BPF_BLOCK_SHIFT)
struct pf_bpf_block {
        __u32 first;            /* in spans[]: the span of the block's first port */
        __u32 count;            /* spans that cover some port of the block */
        __u32 next_key;         /* key of spans[first + 1] if count > 1, else above every key */
        struct pf_bpf_span span;        /* spans[first] */
};

/* A policy's tables (spans, blocks, rules) are maps of their own, made whole for one
 * compiled policy, frozen, and shared by every fence of that policy: a fence
 * holds them through spans[generation], blocks[generation] and
 * rules[generation] (maps of maps). */
#define PF_BPF_TABLE_NAME_SPANS "pf_spans"
#define PF_BPF_TABLE_NAME_BLOCKS "pf_blocks"
#define PF_BPF_TABLE_NAME_RULES "pf_rules"

/* The conditions of a conditional rule, at its rule number in the rules
 * table (sized to the highest such number + 1). */
struct pf_bpf_rule {
        __u8 has_family;
        __u8 family;            /* PF_BPF_IPV4/6 */
        __u8 has_cidr;
        __u8 cidr_family;
        __u8 prefix;            /* bits, in cidr_family */
        __u8 has_program;
        __u8 has_star;          /* the glob is HEAD*TAIL, else just HEAD */
        __u8 head_len;
        __u8 tail_len;
        __u8 pad[3];
        __u32 addr[4];          /* network order; IPv4 in addr[0] */
        char head[16];          /* glob on the 16-byte comm; '?' matches any character */
        char tail[16];
};

/* settings[generation], spans[generation], blocks[generation],
 * rules[generation]; the generation
 * in force is live[0]. A reload fills the idle generation, then flips
 * live[0] with one 4-byte write, so no call ever sees half a policy.
 * An attach links the programs while live[0] holds PF_BPF_LIVE_INERT, and
 * commits with one write of the generation: until then its programs leave
 * every call alone, so a killed attach leaves a whole fence or nothing that
 * decides. live[1] is 1 while a reader takes the fence's events ('cgroup
 * events', 'cgroup learn'): without one, none is written (a reader skips
 * what came before it anyway), and the counters alone tell what was
 * decided. live[2] counts the fence's sockets in the host's registry of
 * moves (moved[]), at most PF_BPF_MOVES_PER_FENCE; live[3] those of them
 * that are UDP sockets its tc programs steer to: with none, those programs
 * end after one read, whatever the packet. live[4] is 1 once the loader
 * linked those programs (a kernel before Linux 6.6 cannot): without it, no
 * UDP socket is steered to. */
#define PF_BPF_LIVE_GENERATION 0
#define PF_BPF_LIVE_READER 1
#define PF_BPF_LIVE_MOVES 2
#define PF_BPF_LIVE_DATAGRAMS 3
#define PF_BPF_LIVE_WIRE 4
#define PF_BPF_LIVE_WORDS 5
#define PF_BPF_LIVE_INERT 2     /* in live[0]: the attach has not committed */
#define PF_BPF_PORT_WORDS 1024   /* 65536 ports, a bit each */

struct pf_bpf_settings {
        __u32 magic;            /* PF_BPF_MAGIC once the loader filled everything */
        __s32 refuse_errno;
        __u8 redirect_connect;
        __u8 getsockname_requested;
        __u8 local4_count;
        __u8 local6_count;
        __u8 steer;             /* policy key steer: the sk_lookup program steers */
        __u8 pad[3];
        __u32 span_count;       /* in spans[generation] */
        __u32 local4[PF_BPF_LOCALS];            /* network order */
        __u32 local6[PF_BPF_LOCALS][4];
        __u64 policy_hash;
        __u64 fence_id;         /* the fenced cgroup's id */
        char policy_path[256];  /* for 'portfence cgroup status' */
        /* Ports every bind may take over TCP and UDP whatever the caller
         * (pf_policy_plain_allow): a bind or connect of one is answered by
         * this bit, read with the settings, before any table is searched. */
        __u64 plain_allow[PF_BPF_PORT_WORDS];
};

/* A port a fenced server was moved away from, in one network namespace:
 * moved[key] counts the live sockets bound in its place. A connect follows
 * a remap only to a port listed here, and the moved server holds the port
 * as if it had bound it: every later bind of it in that namespace, from any
 * fence, goes to the same target, where the kernel answers as it would
 * have at the port (EADDRINUSE, or a SO_REUSEPORT group joined). */
struct pf_bpf_moved_key {
        __u64 netns;            /* bpf_get_netns_cookie() of the socket */
        __u16 port;             /* the port the server asked for */
        __u8 proto;             /* PF_BPF_TCP/UDP */
        __u8 pad[5];
};

struct pf_bpf_moved {
        __s32 sockets;          /* live sockets moved away from the port */
        __u16 target;           /* where they were moved */
        __u8 steered;           /* UDP: its mover's tc programs steer datagrams to the port to it */
        __u8 hashed;            /* UDP: PF_BPF_HASHED_IPV4/6, a socket of the family is in the steering map */
};
#define PF_BPF_HASHED_IPV4 1
#define PF_BPF_HASHED_IPV6 2

/* The way back, for MPTCP: its bind and connect run on the subflow, its name
 * calls on the MPTCP socket, which has no storage of ours. moved_back[key
 * of the port a server was moved to] holds the port it asked for. */
struct pf_bpf_moved_back {
        __u16 requested;
        __u16 pad[3];
};

/* Steering: the network namespace a fence was attached from holds its
 * sk_lookup program, which gives every new TCP connection to a port one of
 * the fence's servers was moved from to that server's listener, from other
 * hosts, other namespaces and unfenced processes alike. steer[] (one
 * SOCKHASH for the host, by fence, namespace and port asked for) holds each
 * moved listener from the moment it listens (sock_ops) until it closes (the
 * kernel drops it from the map) or its fence is detached (the loader drops
 * the fence's keys); steer_netns[0] is the cookie of the namespace the
 * fence's program is attached to (0: no steering), so it never reaches a
 * socket of another. */
#define PF_BPF_STEER_MAX 4096
/* The ports some listener was ever steered from (a HASH keyed by the port,
 * __u32, value 1; written before the listener joins the socket map, never
 * removed): a lookup for any other port ends after one read instead of four
 * socket map lookups (~340 ns per new connection here). One key per port:
 * it is never full. */
#define PF_BPF_STEERED_PORTS 65536
struct pf_bpf_steer_key {
        __u64 netns;
        __u64 fence;            /* the id of the fence that moved the listener */
        __u32 addr[4];          /* the address it is bound to, as sockets hold it (IPv4: addr[0]); 0: any */
        __u16 port;             /* the port it asked for */
        __u8 proto;             /* PF_BPF_TCP, PF_BPF_UDP */
        __u8 family;            /* AF_INET or AF_INET6: a server may listen on both, as two sockets */
        __u8 slot;              /* < PF_BPF_STEER_SLOTS: members of one SO_REUSEPORT group */
        __u8 pad[3];
};
/* Listeners kept per port, family and address: a SO_REUSEPORT group is
 * reached (the kernel picks among its members) while one of the members in
 * a slot still listens; a closed one frees its slot for the next. */
#define PF_BPF_STEER_SLOTS 4

/* The maps of 'portfence run''s steering (bpf/run-steer.bpf.c), in the
 * order PORTFENCE_STEER names them to the shim. run_datagrams[] holds two
 * words: PF_RUN_ANY_DATAGRAM (the shim sets it when it steers its first UDP
 * socket) and PF_RUN_WIRE (run sets it once its tc program is linked;
 * without it the shim steers no UDP socket). */
#define PF_RUN_ANY_DATAGRAM 0
#define PF_RUN_WIRE 1
enum pf_run_map { PF_RUN_STEER, PF_RUN_PORTS, PF_RUN_SOCKS, PF_RUN_DATAGRAMS, PF_RUN_MAPS };

/* Every fenced cgroup of the host, by id: fenced[id] = 1. With nested fences
 * the innermost fence of a socket's cgroup decides its calls: its program,
 * the first to run, leaves its mark in decided[] (per CPU, the slot of the
 * socket's cookie), and the fences above leave the call alone. */
#define PF_BPF_FENCED_MAX 4096
#define PF_BPF_DECIDED_SLOTS 64
#define PF_BPF_CALL_NS 1000000  /* a mark is this call's for a millisecond */
struct pf_bpf_decided {
        __u64 cookie;           /* the socket's */
        __u64 fence;            /* the id of the fence that decided */
        __u64 when;             /* bpf_ktime_get_ns() */
};

/* (netns, proto, port) keys registered at once: a hash map charges its
 * buckets up front (16 bytes each), so this is what the registry costs
 * (256 KiB). A fence holds at most PF_BPF_MOVES_PER_FENCE moved sockets in
 * it: one that would hold more, or finds the registry full, refuses the
 * bind with its policy's errno (counted as moves_refused) rather than move
 * a server nobody could follow; so one fence cannot use up another's room
 * until sixteen fences are full. */
#define PF_BPF_MOVED_PORTS 16384
#define PF_BPF_MOVES_PER_FENCE 1024

/* Counts of the whole host, host[PF_BPF_HOST_*]: the fenced cgroups (the
 * loader writes it under its lock; with one, no fence is nested), the
 * sockets in peers[] (the programs keep it; with none, no name call or
 * release looks there) and the sockets in moved[] (with none, no bind or
 * connect looks there). */
#define PF_BPF_HOST_FENCES 0
#define PF_BPF_HOST_PEERS 1
#define PF_BPF_HOST_MOVES 2
#define PF_BPF_HOST_COUNTS 3

/* Where a redirected socket's destination went, for its name calls: the
 * slot of peers[] its socket cookie picks, claimed with one compare-and-
 * swap. Nothing is allocated (a socket's storage costs ~0.9 us to create
 * here, a hash map's insert ~0.4 us) and every lookup is inlined; the
 * socket's release frees the slot. A socket whose slot is taken keeps its
 * destination in its storage. */
#define PF_BPF_PEER_SLOTS 4096
struct pf_bpf_peer {
        __u64 cookie;           /* the socket's; 0: free */
        __u16 requested;        /* the destination port asked for */
        __u16 target;           /* where it went */
        __u32 pad;
};

/* Per-socket state: the port the program asked for, for the name calls. */
struct pf_bpf_sock {
        __u16 requested;        /* bound: the port asked for (0: not remapped) */
        __u16 bound;            /* bound: the port it got */
        __u16 peer_requested;   /* connect/sendmsg: the destination port asked for */
        __u16 peer_target;      /* connect/sendmsg: where it went */
        __u16 asked;            /* a remapped bind in flight: the port asked for... */
        __u16 moved_to;         /* ...and the one written instead, until post_bind */
        __u8 proto;             /* PF_BPF_TCP/UDP */
        __u8 registered;        /* counted in moved[key] until the socket is released */
        __u8 narrowed;          /* IP_LOCAL_PORT_RANGE set: a port-0 bind is the program's choice */
        __u8 check_chosen;      /* a port-0 bind of a narrowed socket in flight */
        __u8 counted;           /* counted in the mover's live[PF_BPF_LIVE_MOVES] */
        __u8 steered;           /* UDP: steered to (a fence's: counted in live[PF_BPF_LIVE_DATAGRAMS]) */
        __u8 hashed;            /* UDP: in the steering map (steer.bpf.h) */
        __u8 pad[1];
        __u64 cookie;           /* of the registered socket: accepted clones share the rest */
        __u64 mover;            /* the fence that moved it (its id), which registers it */
        struct pf_bpf_moved_key key;
};

/* The calls an event comes from. */
#define PF_BPF_HOOK_BIND 0
#define PF_BPF_HOOK_CONNECT 1
#define PF_BPF_HOOK_SENDMSG 2
#define PF_BPF_HOOKS 3

/* Counters: one per action (indexed by PF_BPF_ALLOW...), then redirects,
 * then errors (binds refused because a map was not filled), then events
 * dropped because the ring buffer was full (a reader that falls behind),
 * then moves refused because the registry had no room for them. */
#define PF_BPF_COUNT_REDIRECT PF_BPF_ACTIONS
#define PF_BPF_COUNT_ERROR (PF_BPF_ACTIONS + 1)
#define PF_BPF_COUNT_LOST (PF_BPF_ACTIONS + 2)
#define PF_BPF_COUNT_FULL (PF_BPF_ACTIONS + 3)
#define PF_BPF_COUNTERS (PF_BPF_ACTIONS + 4)

/* The events ring buffer of a fence: about 450 events. */
#define PF_BPF_EVENTS_BYTES (32 * 1024)

struct pf_bpf_event {
        __u64 cgroup_id;
        __u32 pid;
        __s32 err;              /* PF_BPF_REFUSE: the errno returned */
        char comm[16];
        __u32 addr[4];          /* network order; IPv4 in addr[0] */
        __u16 port;
        __u16 target;
        __u16 rule;
        __u8 proto;             /* PF_BPF_TCP/UDP */
        __u8 family;            /* PF_BPF_IPV4/6 */
        __u8 action;            /* PF_BPF_ALLOW... */
        __u8 hook;              /* PF_BPF_HOOK_* */
        __u8 pad[2];
};
