/* SPDX-License-Identifier: MIT */
/* Steering, as both sk_lookup programs do it (a fence's and the one
 * 'portfence run' attaches as root): a new connection to the port a server
 * asked for goes to that server's listener, found in a SOCKHASH by that
 * port, the caller's keys, and the listener's family and address (a server
 * may listen at the port on several: IPv4 and IPv6-only, two addresses).
 * Established flows never come here (the kernel matches them first), so
 * clients holding the port keep theirs. */
#pragma once

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>

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

/* ---- UDP: tc programs on the namespace's interfaces ------------------------ */

/* A datagram socket cannot join a socket map from a cgroup program, and its
 * replies leave from the port it holds. So a fence's tc ingress program puts
 * a moved UDP socket in the steering map when the first datagram to the
 * port it asked for arrives (the shim, under 'portfence run', does it from
 * user space when the socket binds), and the sk_lookup program steers to it
 * as to a listener; a tc egress program writes the port asked for as the
 * source of what the moved socket sends, so that connected clients take its
 * answers. Both read the socket's storage (struct pf_bpf_sock: requested,
 * bound), which its mover wrote: nothing is steered to or from a socket
 * that is not moved, and the storage goes with the socket. Interfaces with
 * an Ethernet header (and loopback) only: the headers are read at fixed
 * offsets. */
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define TCX_NEXT (-1)           /* the next program on the interface decides */
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

struct datagram {
        struct bpf_sock_tuple tuple;    /* as the kernel's lookup takes it */
        __u32 udp;                      /* the UDP header's offset */
        __be16 source, dest;            /* its ports */
        __u8 family;                    /* AF_INET, AF_INET6 */
};

/* d: the datagram's addresses and ports, if skb is one UDP datagram (not a
 * fragment, no IPv6 extension header) over IPv4 or IPv6. */
static __always_inline bool read_datagram(struct __sk_buff *skb, struct datagram *d)
{
        struct udphdr udp;

        if (skb->protocol == bpf_htons(ETH_P_IP)) {
                struct iphdr ip;

                if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.protocol != IPPROTO_UDP ||
                    (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET)) || ip.ihl < 5)
                        return false;
                d->family = AF_INET;
                d->udp = ETH_HLEN + ip.ihl * 4;
                d->tuple.ipv4.saddr = ip.saddr;
                d->tuple.ipv4.daddr = ip.daddr;
        } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
                struct ipv6hdr ip;

                if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.nexthdr != IPPROTO_UDP)
                        return false;
                d->family = AF_INET6;
                d->udp = ETH_HLEN + sizeof(ip);
                __builtin_memcpy(d->tuple.ipv6.saddr, &ip.saddr, 16);
                __builtin_memcpy(d->tuple.ipv6.daddr, &ip.daddr, 16);
        } else {
                return false;
        }
        if (bpf_skb_load_bytes(skb, d->udp, &udp, sizeof(udp)) < 0)
                return false;
        d->source = udp.source;
        d->dest = udp.dest;
        if (d->family == AF_INET) {
                d->tuple.ipv4.sport = udp.source;
                d->tuple.ipv4.dport = udp.dest;
        } else {
                d->tuple.ipv6.sport = udp.source;
                d->tuple.ipv6.dport = udp.dest;
        }
        return true;
}

/* The kernel's lookup of the datagram, as if it were addressed to port. */
static __always_inline void set_dport(struct datagram *d, __u16 port)
{
        if (d->family == AF_INET)
                d->tuple.ipv4.dport = bpf_htons(port);
        else
                d->tuple.ipv6.dport = bpf_htons(port);
}

/* The socket the kernel would give the datagram, as addressed now. */
static __always_inline struct bpf_sock *lookup_datagram(struct __sk_buff *skb, struct datagram *d)
{
        if (d->family == AF_INET)
                return bpf_sk_lookup_udp(skb, &d->tuple, sizeof(d->tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
        return bpf_sk_lookup_udp(skb, &d->tuple, sizeof(d->tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
}

/* A datagram to port (requested), moved to target: the moved socket the
 * kernel would choose at target for it, if its mover wrote that it asked
 * for port (socks: the mover's storage map), joins the steering map (map,
 * ports: as steer_to_listener() reads them) under key (its netns and fence
 * set), where the sk_lookup program finds it for this datagram and every
 * later one. The kernel's own lookup then delivers: connected sockets
 * (a client holding the port) first, after netfilter (DNAT) and only for
 * datagrams this host receives. Once is enough: the socket's storage
 * remembers it; the map drops the socket when it closes. Is the socket the
 * datagram's family finds at target in the map now? */
static __always_inline bool hash_moved_socket(struct __sk_buff *skb, struct datagram *d, __u16 port, __u16 target,
                                              void *socks, void *map, void *ports, struct pf_bpf_steer_key *key)
{
        struct pf_bpf_sock *moved;
        struct bpf_sock *sk;
        __u32 marked = port;
        __u8 one = 1;

        set_dport(d, target);
        sk = lookup_datagram(skb, d);
        if (!sk)
                return false;
        moved = bpf_sk_storage_get(socks, sk, 0, 0);
        if (!moved || moved->requested != port || moved->bound != target || moved->hashed) {
                bpf_sk_release(sk);
                return moved && moved->hashed && moved->requested == port && moved->bound == target;
        }
        key->port = port;
        key->proto = PF_BPF_UDP;
        key->family = (__u8)sk->family;
        if (sk->family == AF_INET) {
                key->addr[0] = sk->src_ip4;
        } else {
                key->addr[0] = sk->src_ip6[0];
                key->addr[1] = sk->src_ip6[1];
                key->addr[2] = sk->src_ip6[2];
                key->addr[3] = sk->src_ip6[3];
        }
        /* The port first: a lookup never skips a socket in the map. */
        bpf_map_update_elem(ports, &marked, &one, BPF_ANY);
        for (int slot = 0; slot < PF_BPF_STEER_SLOTS; slot++) {
                key->slot = (__u8)slot;
                if (bpf_map_update_elem(map, key, sk, BPF_NOEXIST) == 0) {
                        moved->hashed = 1;
                        break;
                }
        }
        bpf_sk_release(sk);
        return moved->hashed;
}

/* The steered datagram socket a packet leaves from, if it is one (its
 * mover marks it steered: the fence's programs when it moves, the shim when
 * it puts it in run's map). */
static __always_inline struct pf_bpf_sock *moved_sender(struct __sk_buff *skb, void *socks)
{
        struct bpf_sock *sk = skb->sk;
        struct pf_bpf_sock *moved;

        if (!sk)
                return NULL;    /* forwarded: no socket of this host sent it */
        sk = bpf_sk_fullsock(sk);
        if (!sk || sk->protocol != IPPROTO_UDP)
                return NULL;
        moved = bpf_sk_storage_get(socks, sk, 0, 0);
        return moved && moved->steered ? moved : NULL;
}

/* What a moved datagram socket sends leaves from the port it asked for. */
static __always_inline void unmove_source(struct __sk_buff *skb, const struct pf_bpf_sock *moved)
{
        __be16 from = bpf_htons(moved->bound), to = bpf_htons(moved->requested);
        struct datagram d;

        if (!read_datagram(skb, &d) || d.source != from)
                return;
        bpf_l4_csum_replace(skb, d.udp + 6, from, to, BPF_F_MARK_MANGLED_0 | sizeof(to));
        bpf_skb_store_bytes(skb, d.udp, &to, sizeof(to), 0);
}
