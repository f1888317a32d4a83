/* SPDX-License-Identifier: MIT */
/* A cgroup bind4 program that does nothing: what bpf_stats reports for it
 * is the floor of every kernel figure in the benchmark report (the cost of
 * running a program and timing it), not portfence's. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("cgroup/bind4")
int empty_bind4(struct bpf_sock_addr *ctx)
{
        return 1;
}
