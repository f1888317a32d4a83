/* SPDX-License-Identifier: MIT */
/* Steering, as both sk_lookup programs do it (a fence's and the one
 * 'portfence run' attaches as root): a new connection to the port a server
 * asked for goes to that server's listener, found in a SOCKHASH by that
 * port, the caller's keys, and the listener's family and address (a server
 * may listen at the port on several: IPv4 and IPv6-only, two addresses).
 * Established flows never come here (the kernel matches them first), so
 * clients holding the port keep theirs. */
#pragma once

#define AF_INET 2
#define AF_INET6 10

/* Each steering program has a map of listeners and one of the ports some
 * listener was steered from (PF_BPF_STEERED_PORTS). */
struct steer_map {
        __uint(type, BPF_MAP_TYPE_SOCKHASH);
        __uint(max_entries, PF_BPF_STEER_MAX);
        __type(key, struct pf_bpf_steer_key);
        __type(value, __u64);
};

struct steered_ports_map {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(map_flags, BPF_F_NO_PREALLOC);
        __uint(max_entries, PF_BPF_STEERED_PORTS);
        __type(key, __u32);
        __type(value, __u8);
};

/* A listener under key in one of its slots, if the kernel lets it take the
 * connection (an IPv6-only one refuses IPv4; a member of a SO_REUSEPORT
 * group stands for the group). */
static __always_inline bool steer_to(struct bpf_sk_lookup *ctx, void *map, struct pf_bpf_steer_key *key)
{
        for (int slot = 0; slot < PF_BPF_STEER_SLOTS; slot++) {
                struct bpf_sock *sk;
                long r;

                key->slot = (__u8)slot;
                sk = bpf_map_lookup_elem(map, key);
                if (!sk)
                        continue;
                r = bpf_sk_assign(ctx, sk, 0);
                bpf_sk_release(sk);
                if (r == 0)
                        return true;
        }
        key->slot = 0;
        return false;
}

/* The listener for the lookup's destination, as the kernel would choose
 * among sockets bound at the port: one bound to that address, else to the
 * wildcard; for IPv4, then an IPv6 one bound to the mapped address or to
 * the wildcard (dual-stack). key: its port, proto, netns and fence set;
 * ports: PF_BPF_STEERED_PORTS's map. */
static __always_inline void steer_to_listener(struct bpf_sk_lookup *ctx, void *map, void *ports,
                                              struct pf_bpf_steer_key *key)
{
        __u32 port = key->port;

        if (!bpf_map_lookup_elem(ports, &port))
                return;
        key->family = (__u8)ctx->family;
        if (ctx->family == AF_INET) {
                key->addr[0] = ctx->local_ip4;
                if (steer_to(ctx, map, key))
                        return;
                key->addr[0] = 0;
                if (steer_to(ctx, map, key))
                        return;
                key->family = AF_INET6;
                key->addr[2] = bpf_htonl(0xffff);
                key->addr[3] = ctx->local_ip4;
                if (steer_to(ctx, map, key))
                        return;
                key->addr[2] = key->addr[3] = 0;
                steer_to(ctx, map, key);
                return;
        }
        key->addr[0] = ctx->local_ip6[0];
        key->addr[1] = ctx->local_ip6[1];
        key->addr[2] = ctx->local_ip6[2];
        key->addr[3] = ctx->local_ip6[3];
        if (steer_to(ctx, map, key))
                return;
        key->addr[0] = key->addr[1] = key->addr[2] = key->addr[3] = 0;
        steer_to(ctx, map, key);
}
