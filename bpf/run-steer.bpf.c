/* SPDX-License-Identifier: MIT */
/* Steering for 'portfence run' as root: the shim puts each TCP listener it
 * moved in run_steer[] when it listens (key: the port it asked for, its
 * family and address; netns and fence 0), and this program, attached to the
 * network namespace run started in, gives it every new connection to that
 * port, from other hosts, other namespaces and unwrapped processes. A UDP
 * socket it moved gets the ports in its storage (run_socks[]) and the port
 * it asked for in run_udp_targets[] when it binds: the tc programs, linked
 * to the namespace's interfaces, steer its datagrams (steer.bpf.h). Nothing
 * is pinned: the command and its children hold the maps and the links by
 * inherited descriptors, and steering ends with the last of them. */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "portfence-api.bpf.h"
#include "steer.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct steer_map run_steer SEC(".maps");

struct steered_ports_map run_steered_ports SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_SK_STORAGE);
        __uint(map_flags, BPF_F_NO_PREALLOC);
        __type(key, int);
        __type(value, struct pf_bpf_sock);
} run_socks SEC(".maps");

/* [PF_RUN_ANY_DATAGRAM]: 1 once the shim described a UDP socket; until then
 * the tc programs end after this one read, whatever the packet.
 * [PF_RUN_WIRE]: 1 once run linked them. */
struct {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __uint(max_entries, 2);
        __type(key, __u32);
        __type(value, __u32);
} run_datagrams SEC(".maps");

static __always_inline bool steers_datagrams(void)
{
        __u32 zero = PF_RUN_ANY_DATAGRAM, *any = bpf_map_lookup_elem(&run_datagrams, &zero);

        return any && *any;
}

/* The port a UDP server asked for -> the one it holds. */
struct {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(map_flags, BPF_F_NO_PREALLOC);
        __uint(max_entries, PF_BPF_STEERED_PORTS);
        __type(key, __u32);
        __type(value, __u16);
} run_udp_targets SEC(".maps");

SEC("sk_lookup")
int pf_run_steer_lookup(struct bpf_sk_lookup *ctx)
{
        struct pf_bpf_steer_key key = { .port = (__u16)ctx->local_port, .proto = PF_BPF_TCP };

        if (ctx->protocol == IPPROTO_TCP)
                steer_to_listener(ctx, &run_steer, &run_steered_ports, &key);
        return SK_PASS;
}

SEC("tc")
int pf_run_udp_in(struct __sk_buff *skb)
{
        struct datagram d;
        __u16 *target;
        __u32 port;

        if (!steers_datagrams())
                return TCX_NEXT;
        if (!read_datagram(skb, &d))
                return TCX_NEXT;
        port = bpf_ntohs(d.dest);
        target = bpf_map_lookup_elem(&run_udp_targets, &port);
        if (target)
                steer_datagram(skb, &d, (__u16)port, *target, &run_socks);
        return TCX_NEXT;
}

SEC("tc")
int pf_run_udp_out(struct __sk_buff *skb)
{
        struct pf_bpf_sock *moved = steers_datagrams() ? moved_sender(skb, &run_socks) : NULL;

        if (moved)
                unmove_source(skb, moved);
        return TCX_NEXT;
}
