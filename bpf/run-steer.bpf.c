/* SPDX-License-Identifier: MIT */
/* Steering for 'portfence run' as root: the shim puts each TCP listener it
 * moved in run_steer[] when it listens, and each UDP socket it moved when it
 * binds (key: the port it asked for, its family and address; netns and
 * fence 0), and this program, attached to the network namespace run started
 * in, gives it every new connection and datagram to that port, from other
 * hosts, other namespaces and unwrapped processes. A moved UDP socket's
 * storage (run_socks[]) holds its ports: the tc egress program, linked to
 * the namespace's interfaces, sends its answers from the port it asked for
 * (steer.bpf.h). Nothing is pinned: the command and its children hold the
 * maps and the links by inherited descriptors, and steering ends with the
 * last of them. */
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

SEC("sk_lookup")
int pf_run_steer_lookup(struct bpf_sk_lookup *ctx)
{
        struct pf_bpf_steer_key key = {
                .port = (__u16)ctx->local_port, .proto = ctx->protocol == IPPROTO_UDP ? PF_BPF_UDP : PF_BPF_TCP,
        };

        if (ctx->protocol == IPPROTO_TCP || ctx->protocol == IPPROTO_UDP)
                steer_to_listener(ctx, &run_steer, &run_steered_ports, &key);
        return SK_PASS;
}

SEC("tc")
int pf_run_udp_out(struct __sk_buff *skb)
{
        struct pf_bpf_sock *moved = steers_datagrams() ? moved_sender(skb, &run_socks) : NULL;

        if (moved)
                unmove_source(skb, moved);
        return TCX_NEXT;
}
