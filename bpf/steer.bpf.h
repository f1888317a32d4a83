/* SPDX-License-Identifier: MIT */
/* Steering, as both sk_lookup programs do it (a fence's and the one
 * 'portfence run' attaches as root): a new connection to the port a server
 * asked for goes to that server's listener, found in a SOCKHASH by the key
 * the caller makes. Established flows never come here (the kernel matches
 * them first), so clients holding the port keep theirs. */
#pragma once

#define AF_INET 2
#define AF_INET6 10

/* Would the listener take a connection to the lookup's local address? Its
 * own address, or the wildcard (IPv6's for IPv4 too, unless v6only: the
 * kernel refuses that assignment itself). */
static __always_inline bool takes_destination(const struct bpf_sock *sk, const struct bpf_sk_lookup *ctx)
{
        if (sk->family == AF_INET)
                return sk->src_ip4 == 0 || sk->src_ip4 == ctx->local_ip4;
        if (!(sk->src_ip6[0] | sk->src_ip6[1] | sk->src_ip6[2] | sk->src_ip6[3]))
                return true;
        if (ctx->family == AF_INET)
                return sk->src_ip6[0] == 0 && sk->src_ip6[1] == 0 && sk->src_ip6[2] == bpf_htonl(0xffff) &&
                       sk->src_ip6[3] == ctx->local_ip4;
        return sk->src_ip6[0] == ctx->local_ip6[0] && sk->src_ip6[1] == ctx->local_ip6[1] &&
               sk->src_ip6[2] == ctx->local_ip6[2] && sk->src_ip6[3] == ctx->local_ip6[3];
}

/* The listener map holds under key, if any, takes the connection. */
static __always_inline void steer_to_listener(struct bpf_sk_lookup *ctx, void *map,
                                              const struct pf_bpf_steer_key *key)
{
        struct bpf_sock *sk = bpf_map_lookup_elem(map, key);

        if (!sk)
                return;
        if (takes_destination(sk, ctx))
                bpf_sk_assign(ctx, sk, 0);
        bpf_sk_release(sk);
}
