/* SPDX-License-Identifier: MIT */
/* Steering for 'portfence run' as root: the shim puts each TCP listener it
 * moved in run_steer[] when it listens (key: the port it asked for, its
 * family and address; netns and fence 0), and this program, attached to the
 * network namespace run started in, gives it every new connection to that
 * port, from other hosts, other namespaces and unwrapped processes. Nothing
 * is pinned: the command and its children hold the map and the link by
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

SEC("sk_lookup")
int pf_run_steer_lookup(struct bpf_sk_lookup *ctx)
{
        struct pf_bpf_steer_key key = { .port = (__u16)ctx->local_port, .proto = PF_BPF_TCP };

        if (ctx->protocol == IPPROTO_TCP)
                steer_to_listener(ctx, &run_steer, &run_steered_ports, &key);
        return SK_PASS;
}
