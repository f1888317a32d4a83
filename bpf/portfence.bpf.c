/* SPDX-License-Identifier: MIT */
/* portfence's cgroup programs: the policy's decisions for every process of a
 * cgroup v2, static binaries and raw system calls included. The decisions
 * come from maps the loader fills from the compiled policy; nothing here
 * knows the policy file. */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "portfence-api.bpf.h"
#include "steer.bpf.h"

#define EPERM 1
#define EADDRINUSE 98
#define ALLOW_CALL 1
#define REJECT_CALL 0

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* The tables of the policy in force: made and frozen by the loader, one
 * pair per compiled policy, shared by every fence of that policy. */
struct span_table {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __uint(map_flags, BPF_F_INNER_MAP);     /* each sized to its policy */
        __uint(max_entries, 1);
        __uint(key_size, sizeof(__u32));
        __uint(value_size, sizeof(struct pf_bpf_span)); /* __type() would leave it undefined in BTF */
};

struct block_table {
        __uint(type, BPF_MAP_TYPE_ARRAY);       /* one size for all: lookups inlined */
        __uint(max_entries, PF_BPF_BLOCKS);
        __uint(key_size, sizeof(__u32));
        __uint(value_size, sizeof(struct pf_bpf_block));
};

struct rule_table {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __uint(map_flags, BPF_F_INNER_MAP);
        __uint(max_entries, 1);
        __uint(key_size, sizeof(__u32));
        __uint(value_size, sizeof(struct pf_bpf_rule)); /* __type() would leave it undefined in BTF */
};

struct {
        __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
        __uint(max_entries, PF_BPF_GENERATIONS);
        __type(key, __u32);
        __array(values, struct span_table);
} spans SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
        __uint(max_entries, PF_BPF_GENERATIONS);
        __type(key, __u32);
        __array(values, struct block_table);
} blocks SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
        __uint(max_entries, PF_BPF_GENERATIONS);
        __type(key, __u32);
        __array(values, struct rule_table);
} rules SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __uint(max_entries, PF_BPF_GENERATIONS);
        __type(key, __u32);
        __type(value, struct pf_bpf_settings);
} settings SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __uint(max_entries, PF_BPF_LIVE_WORDS);
        __type(key, __u32);
        __type(value, __u32);
} live SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_SK_STORAGE);
        __uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);  /* accepted sockets inherit */
        __type(key, int);
        __type(value, struct pf_bpf_sock);
} socks SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(map_flags, BPF_F_NO_PREALLOC);
        __uint(max_entries, PF_BPF_MOVED_PORTS);
        __type(key, struct pf_bpf_moved_key);
        __type(value, struct pf_bpf_moved);
} moved SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(map_flags, BPF_F_NO_PREALLOC);
        __uint(max_entries, PF_BPF_MOVED_PORTS);
        __type(key, struct pf_bpf_moved_key);
        __type(value, struct pf_bpf_moved_back);
} moved_back SEC(".maps");

struct steer_map steer SEC(".maps");

struct steered_ports_map steered_ports SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __uint(max_entries, 1);
        __type(key, __u32);
        __type(value, __u64);
} steer_netns SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(map_flags, BPF_F_NO_PREALLOC);
        __uint(max_entries, PF_BPF_FENCED_MAX);
        __type(key, __u64);
        __type(value, __u8);
} fenced SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
        __uint(max_entries, PF_BPF_DECIDED_SLOTS);
        __type(key, __u32);
        __type(value, struct pf_bpf_decided);
} decided SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __uint(max_entries, PF_BPF_HOST_COUNTS);
        __type(key, __u32);
        __type(value, __s32);
} host SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __uint(max_entries, PF_BPF_PEER_SLOTS);
        __type(key, __u32);
        __type(value, struct pf_bpf_peer);
} peers SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_RINGBUF);
        __uint(max_entries, PF_BPF_EVENTS_BYTES);
} events SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
        __uint(max_entries, PF_BPF_COUNTERS);
        __type(key, __u32);
        __type(value, __u64);
} counters SEC(".maps");

/* A socket address as the policy sees it: v4-mapped IPv6 is IPv4. */
struct request {
        __u32 addr[4];
        __u16 port;
        __u8 proto;             /* PF_BPF_TCP/UDP */
        __u8 family;            /* PF_BPF_IPV4/6 */
        __u8 with_program;      /* bind: the caller's comm counts; connect: it cannot */
};

struct decision {
        __u8 action;
        __u16 target;
        __u16 rule;
        int err;
};



static __always_inline bool read_proto(struct bpf_sock_addr *ctx, struct request *r)
{
        if (ctx->protocol == IPPROTO_TCP || ctx->protocol == IPPROTO_MPTCP)   /* MPTCP is TCP to the policy */
                r->proto = PF_BPF_TCP;
        else if (ctx->protocol == IPPROTO_UDP || ctx->protocol == IPPROTO_UDPLITE)     /* UDP to the policy */
                r->proto = PF_BPF_UDP;
        else
                return false;
        return true;
}

/* The address family as the kernel will take it: its own error (EAFNOSUPPORT)
 * for any other, which the program must not pre-empt. An AF_INET socket
 * binds AF_UNSPEC with INADDR_ANY as AF_INET. */
#define AF_UNSPEC 0     /* AF_INET and AF_INET6: steer.bpf.h */

static __always_inline bool read_request4(struct bpf_sock_addr *ctx, struct request *r)
{
        if (ctx->user_family != AF_INET && !(ctx->user_family == AF_UNSPEC && ctx->user_ip4 == 0))
                return false;
        r->family = PF_BPF_IPV4;
        r->addr[0] = ctx->user_ip4;
        r->addr[1] = r->addr[2] = r->addr[3] = 0;
        r->port = bpf_ntohs(ctx->user_port);
        return read_proto(ctx, r) && r->port != 0;
}

static __always_inline bool read_request6(struct bpf_sock_addr *ctx, struct request *r)
{
        __u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2];
        __u32 a3 = ctx->user_ip6[3];

        if (ctx->user_family != AF_INET6)
                return false;

        if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff)) {   /* ::ffff:a.b.c.d */
                r->family = PF_BPF_IPV4;
                r->addr[0] = a3;
                r->addr[1] = r->addr[2] = r->addr[3] = 0;
        } else {
                r->family = PF_BPF_IPV6;
                r->addr[0] = a0;
                r->addr[1] = a1;
                r->addr[2] = a2;
                r->addr[3] = a3;
        }
        r->port = bpf_ntohs(ctx->user_port);
        return read_proto(ctx, r) && r->port != 0;
}

/* The settings in force and their generation; NULL until the loader filled
 * them and while the fence is inert (fence_inert() tells which). */
static __always_inline struct pf_bpf_settings *get_settings(__u32 *generation)
{
        __u32 which = PF_BPF_LIVE_GENERATION, *gen = bpf_map_lookup_elem(&live, &which);
        struct pf_bpf_settings *s;

        if (!gen || (*gen & PF_BPF_LIVE_INERT))
                return NULL;
        *generation = *gen & 1;
        s = bpf_map_lookup_elem(&settings, generation);
        return s && s->magic == PF_BPF_MAGIC ? s : NULL;
}

/* Has the attach of this fence not committed yet? Then it decides nothing.
 * Asked only where the settings could not be had. */
static __always_inline bool fence_inert(void)
{
        __u32 which = PF_BPF_LIVE_GENERATION, *gen = bpf_map_lookup_elem(&live, &which);

        return gen && (*gen & PF_BPF_LIVE_INERT);
}

static __always_inline void count(__u32 which)
{
        __u64 *n = bpf_map_lookup_elem(&counters, &which);

        if (n)
                *n += 1;
}

static __always_inline bool cidr_match(const struct pf_bpf_rule *rule, const struct request *r)
{
        if (rule->cidr_family != r->family)
                return false;
        for (int i = 0; i < 4; i++) {
                int bits = (int)rule->prefix - 32 * i;
                __u32 mask;

                if (bits <= 0)
                        break;
                mask = bits >= 32 ? 0xffffffff : bpf_htonl(~0u << (32 - bits));
                if ((r->addr[i] ^ rule->addr[i]) & mask)
                        return false;
        }
        return true;
}

/* The comm against HEAD or HEAD*TAIL ('?' matches any one character): the
 * globs the loader lets through to the kernel. Fixed cost, no backtracking. */
static __always_inline bool comm_match(const struct pf_bpf_rule *rule, const char *comm)
{
        int len = 16;

        for (int i = 0; i < 16; i++) {
                if (comm[i] == 0) {
                        len = i;
                        break;
                }
        }
        if (rule->has_star ? len < rule->head_len + rule->tail_len : len != rule->head_len)
                return false;
        for (int i = 0; i < 16; i++) {
                if (i >= rule->head_len)
                        break;
                if (rule->head[i] != '?' && rule->head[i] != comm[i])
                        return false;
        }
        for (int i = 0; i < 16; i++) {
                int at = len - rule->tail_len + i;

                if (i >= rule->tail_len)
                        break;
                if (at < 0 || at > 15)
                        return false;
                if (rule->tail[i] != '?' && rule->tail[i] != comm[at & 15])
                        return false;
        }
        return true;
}

/* Does the rule match the request? A global function: the verifier checks
 * it once per program, not once per step of every path through decide()
 * (which made loading a fence four times slower). */
__noinline int pf_rule_matches(const struct pf_bpf_rule *rule, const struct request *r)
{
        char comm[16] = {};

        if (!rule || !r)
                return 0;
        if (rule->has_family && rule->family != r->family)
                return 0;
        if (rule->has_cidr && !cidr_match(rule, r))
                return 0;
        if (rule->has_program) {
                if (!r->with_program)
                        return 0;
                bpf_get_current_comm(comm, sizeof(comm));
                return comm_match(rule, comm);
        }
        return 1;
}

static __always_inline bool rule_matches(void *table, __u32 number, const struct request *r)
{
        struct pf_bpf_rule *rule = table ? bpf_map_lookup_elem(table, &number) : NULL;

        return rule && pf_rule_matches(rule, r);
}

/* The span that holds key: the last one whose key is not above it. Its
 * block answers below next_key; above, a binary search among the block's
 * spans of spans[]. */
static __always_inline struct pf_bpf_span *find_span(__u32 generation, __u32 key)
{
        void *block_table = bpf_map_lookup_elem(&blocks, &generation);
        void *span_table = bpf_map_lookup_elem(&spans, &generation);
        __u32 b = key >> PF_BPF_BLOCK_SHIFT, lo, hi;
        struct pf_bpf_block *block = block_table ? bpf_map_lookup_elem(block_table, &b) : NULL;
        struct pf_bpf_span *span;

        if (!block || !span_table)
                return NULL;
        if (key < block->next_key)
                return &block->span;
        lo = block->first + 1;
        hi = block->first + block->count;
        for (int i = 0; i < PF_BPF_SEARCH_STEPS && hi - lo > 1; i++) {
                __u32 mid = lo + (hi - lo) / 2;

                span = bpf_map_lookup_elem(span_table, &mid);
                if (!span)
                        return NULL;
                if (span->key <= key)
                        lo = mid;
                else
                        hi = mid;
        }
        span = bpf_map_lookup_elem(span_table, &lo);
        return span && span->key <= key ? span : NULL;
}

/* Which fence decides a call: the innermost fence of the socket's own
 * cgroup. The programs that run for a socket are those of the cgroup it was
 * made in, whoever calls (a socket passed over SCM_RIGHTS brings its own),
 * the innermost fence's first: the kernel runs a cgroup's programs before
 * its parent's. So the first program of a call decides and says so in
 * decided[] (per CPU, by socket cookie), and a program that finds there the
 * mark of another live fence, for this socket, made in this call, leaves
 * the call alone. A mark lasts PF_BPF_CALL_NS: a program preempted longer
 * between two of one call's (a rare thing) lets an outer fence decide too. */
static __always_inline bool inner_fence_decides(void *ctx, const struct pf_bpf_settings *s)
{
        __u32 which = PF_BPF_HOST_FENCES, slot;
        __s32 *fences = bpf_map_lookup_elem(&host, &which);
        struct pf_bpf_decided *mark;
        __u64 cookie, now;

        if (fences && *fences <= 1)
                return false;           /* the host's only fence: nobody to ask */
        cookie = bpf_get_socket_cookie(ctx);
        slot = (__u32)cookie & (PF_BPF_DECIDED_SLOTS - 1);
        mark = bpf_map_lookup_elem(&decided, &slot);
        if (!mark)
                return false;
        now = bpf_ktime_get_ns();
        if (mark->cookie == cookie && mark->fence != s->fence_id && now - mark->when < PF_BPF_CALL_NS &&
            bpf_map_lookup_elem(&fenced, &mark->fence))
                return true;
        mark->cookie = cookie;
        mark->fence = s->fence_id;
        mark->when = now;
        return false;
}

/* A port every bind may take: one bit of the settings. */
static __always_inline bool plain_allow(const struct pf_bpf_settings *s, __u16 port)
{
        return s->plain_allow[(port >> 6) & (PF_BPF_PORT_WORDS - 1)] >> (port & 63) & 1;
}

/* The policy's errno for a refusal, EPERM when it cannot be read. */
static __always_inline int refuse_errno(void)
{
        __u32 generation;
        struct pf_bpf_settings *s = get_settings(&generation);

        return s ? s->refuse_errno : EPERM;
}

/* The policy's verdict under settings s of generation (the caller's, read
 * once per call). A table the loader has not filled refuses (EPERM): an
 * empty map must never mean "allow everything". */
static __always_inline void decide(const struct pf_bpf_settings *s, __u32 generation, const struct request *r,
                                   struct decision *d)
{
        struct pf_bpf_span *span;
        void *rule_table;

        d->action = PF_BPF_REFUSE;
        d->err = EPERM;
        d->target = 0;
        d->rule = 0;
        rule_table = s ? bpf_map_lookup_elem(&rules, &generation) : NULL;
        span = s ? find_span(generation, PF_BPF_SPAN_KEY(r->proto, r->port)) : NULL;
        if (!span) {
                count(PF_BPF_COUNT_ERROR);
                return;
        }
        for (int i = 0; i < PF_BPF_CHAIN; i++) {
                struct pf_bpf_step step = span->step[i];

                if (!(step.action & PF_BPF_FILLED)) {
                        count(PF_BPF_COUNT_ERROR);
                        return;
                }
                if (i + 1 < span->count && step.conditional && !rule_matches(rule_table, step.rule, r))
                        continue;
                d->action = step.action & ~PF_BPF_FILLED;
                d->target = d->action == PF_BPF_REMAP ? step.target + (r->port - (span->key & 0xffff)) : 0;
                d->rule = step.rule;
                d->err = d->action == PF_BPF_REFUSE ? s->refuse_errno : 0;
                return;
        }
}

static __always_inline void emit(const struct request *r, const struct decision *d, __u8 hook)
{
        __u32 which = PF_BPF_LIVE_READER, *reader = bpf_map_lookup_elem(&live, &which);
        struct pf_bpf_event *e;

        if (!reader || !*reader)
                return;         /* nobody reads: the counters tell */
        e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
        if (!e) {
                count(PF_BPF_COUNT_LOST);
                return;
        }
        e->cgroup_id = bpf_get_current_cgroup_id();
        e->pid = bpf_get_current_pid_tgid() >> 32;
        e->err = d->err;
        bpf_get_current_comm(e->comm, sizeof(e->comm));
        e->addr[0] = r->addr[0];
        e->addr[1] = r->addr[1];
        e->addr[2] = r->addr[2];
        e->addr[3] = r->addr[3];
        e->port = r->port;
        e->target = d->target;
        e->rule = d->rule;
        e->proto = r->proto;
        e->family = r->family;
        e->action = d->action;
        e->hook = hook;
        e->pad[0] = e->pad[1] = 0;
        bpf_ringbuf_submit(e, 0);
}

/* The count of sockets in moved[] on the host, NULL when it cannot be read. */
static __always_inline __s32 *host_moves(void)
{
        __u32 which = PF_BPF_HOST_MOVES;

        return bpf_map_lookup_elem(&host, &which);
}

/* The registry's entry for port r->port, if a fenced server asked for it
 * and still holds its socket in this network namespace; NULL otherwise.
 * While no socket on the host is moved, one array read answers. */
static __always_inline struct pf_bpf_moved *moved_entry(struct bpf_sock_addr *ctx, const struct request *r)
{
        struct pf_bpf_moved_key key = { .port = r->port, .proto = r->proto };
        __s32 *count = host_moves();
        struct pf_bpf_moved *m;

        if (count && *count <= 0)
                return NULL;
        key.netns = bpf_get_netns_cookie(ctx);
        m = bpf_map_lookup_elem(&moved, &key);
        return m && m->sockets > 0 ? m : NULL;
}

/* Where it went, 0 if nowhere. */
static __always_inline __u16 moved_target(struct bpf_sock_addr *ctx, const struct request *r)
{
        struct pf_bpf_moved *m = moved_entry(ctx, r);

        return m ? m->target : 0;
}

/* A socket of this network namespace bound to the destination as asked (a
 * port-0 listener, a client's source port): it is reached as addressed. */
static __always_inline bool destination_bound(struct bpf_sock_addr *ctx, const struct request *r)
{
        struct bpf_sock_tuple tuple = {};
        struct bpf_sock *found;
        __u32 size;

        if (r->family == PF_BPF_IPV4) {
                tuple.ipv4.daddr = r->addr[0];
                tuple.ipv4.dport = bpf_htons(r->port);
                size = sizeof(tuple.ipv4);
        } else {
                tuple.ipv6.daddr[0] = r->addr[0];
                tuple.ipv6.daddr[1] = r->addr[1];
                tuple.ipv6.daddr[2] = r->addr[2];
                tuple.ipv6.daddr[3] = r->addr[3];
                tuple.ipv6.dport = bpf_htons(r->port);
                size = sizeof(tuple.ipv6);
        }
        found = r->proto == PF_BPF_TCP ? bpf_sk_lookup_tcp(ctx, &tuple, size, BPF_F_CURRENT_NETNS, 0)
                              : bpf_sk_lookup_udp(ctx, &tuple, size, BPF_F_CURRENT_NETNS, 0);
        if (!found)
                return false;
        bpf_sk_release(found);
        return true;
}

/* A server at the address a bind asks for: a listener or an unconnected
 * datagram socket that would receive there (the wildcard address asks for
 * loopback, where every server on all addresses receives). */
static __always_inline bool server_at(struct bpf_sock_addr *ctx, const struct request *r)
{
        struct request at = *r;

        if (at.family == PF_BPF_IPV4 && at.addr[0] == 0)
                at.addr[0] = bpf_htonl(0x7f000001);
        else if (at.family == PF_BPF_IPV6 && !(at.addr[0] | at.addr[1] | at.addr[2] | at.addr[3]))
                at.addr[3] = bpf_htonl(1);
        return destination_bound(ctx, &at);
}

/* ---- bind: refuse or remap -------------------------------------------------- */

/* A socket bound already: the kernel fails a second bind with EINVAL, and
 * that is what the program must see, whatever the policy says. */
static __always_inline bool bound_already(struct bpf_sock_addr *ctx)
{
        struct bpf_sock *sk = ctx->sk;

        return sk && sk->src_port != 0;
}

/* bind(port 0) on a socket whose range the program narrowed: the port the
 * kernel picks is checked once it is known (post_bind). */
static __always_inline int on_bind_port_zero(struct bpf_sock_addr *ctx)
{
        struct pf_bpf_sock *sk = bpf_sk_storage_get(&socks, ctx->sk, 0, 0);
        __u32 generation;
        struct pf_bpf_settings *s = get_settings(&generation);

        if (sk && sk->narrowed && !bound_already(ctx) && s && !inner_fence_decides(ctx, s))
                sk->check_chosen = 1;
        return ALLOW_CALL;
}

/* Room in the registry for one more socket of this fence's? */
static __always_inline bool room_to_move(void)
{
        __u32 which = PF_BPF_LIVE_MOVES, *moves = bpf_map_lookup_elem(&live, &which);

        return moves && *moves < PF_BPF_MOVES_PER_FENCE;
}

/* The decision for a bind, with what the namespace holds now: a port a
 * moved server holds goes where it went, whatever this policy says of it
 * (but a refusal), so the kernel answers there as it would have at the
 * port: EADDRINUSE, or a SO_REUSEPORT group joined. A port a server holds
 * (a listener, an unconnected datagram socket) is not the collision a
 * remap prevents: the bind goes to the kernel as asked. */
static __always_inline void decide_bind(struct bpf_sock_addr *ctx, const struct pf_bpf_settings *s,
                                        __u32 generation, struct request *r, __u16 held, struct decision *d)
{
        decide(s, generation, r, d);
        if (held && d->action != PF_BPF_REFUSE) {
                d->action = PF_BPF_REMAP;
                d->target = held;
        } else if (d->action == PF_BPF_REMAP && server_at(ctx, r)) {
                d->action = PF_BPF_ALLOW;
        }
        if (d->action == PF_BPF_REMAP && !room_to_move()) {
                count(PF_BPF_COUNT_FULL);
                d->action = PF_BPF_REFUSE;
                d->err = s ? s->refuse_errno : EPERM;
        }
}

static __always_inline int on_bind(struct bpf_sock_addr *ctx, struct request *r)
{
        __u32 generation;
        struct pf_bpf_settings *s = get_settings(&generation);
        struct decision d;
        struct pf_bpf_sock *sk;
        __u16 held;

        if (bound_already(ctx) || (s && inner_fence_decides(ctx, s)) || (!s && fence_inert()))
                return ALLOW_CALL;
        held = moved_target(ctx, r);
        if (!held && s && plain_allow(s, r->port)) {
                count(PF_BPF_ALLOW);
                return ALLOW_CALL;
        }
        r->with_program = 1;
        decide_bind(ctx, s, generation, r, held, &d);
        count(d.action);
        if (d.action == PF_BPF_ALLOW)
                return ALLOW_CALL;
        emit(r, &d, PF_BPF_HOOK_BIND);
        if (d.action == PF_BPF_REFUSE) {
                bpf_set_retval(-d.err);
                return REJECT_CALL;
        }
        if (d.action == PF_BPF_REMAP && s) {
                ctx->user_port = bpf_htons(d.target);
                /* What the socket reports changes only once the bind succeeded
                 * (post_bind): a failed bind leaves it as it was. */
                sk = bpf_sk_storage_get(&socks, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
                if (!sk) {      /* a move nobody could follow: refused instead */
                        bpf_set_retval(-s->refuse_errno);
                        return REJECT_CALL;
                }
                sk->asked = r->port;
                sk->moved_to = d.target;
                sk->proto = r->proto;
                sk->mover = s->fence_id;
        }
        return ALLOW_CALL;
}

SEC("cgroup/bind4")
int pf_bind4(struct bpf_sock_addr *ctx)
{
        struct request r;

        if (read_request4(ctx, &r))
                return on_bind(ctx, &r);
        return ctx->user_port == 0 ? on_bind_port_zero(ctx) : ALLOW_CALL;
}

SEC("cgroup/bind6")
int pf_bind6(struct bpf_sock_addr *ctx)
{
        struct request r;

        if (read_request6(ctx, &r))
                return on_bind(ctx, &r);
        return ctx->user_port == 0 ? on_bind_port_zero(ctx) : ALLOW_CALL;
}

/* ---- setsockopt: IP_LOCAL_PORT_RANGE ---------------------------------------- */

#define SOL_IP 0
#define IP_LOCAL_PORT_RANGE 51

/* A program that narrows its socket's range chooses the port a bind of
 * port 0 gets: remembered here, checked in post_bind. The option itself
 * is left alone: clients narrow their range for outgoing connects. */
SEC("cgroup/setsockopt")
int pf_setsockopt(struct bpf_sockopt *ctx)
{
        struct pf_bpf_sock *sk;

        if (ctx->level != SOL_IP || ctx->optname != IP_LOCAL_PORT_RANGE || !ctx->sk)
                return ALLOW_CALL;
        sk = bpf_sk_storage_get(&socks, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
        if (sk)
                sk->narrowed = 1;
        return ALLOW_CALL;
}

/* ---- post_bind, sock_release: the registry of ports servers were moved from -- */

/* The target's way back to the port asked for (for MPTCP's name calls). */
static __always_inline void register_back(const struct pf_bpf_sock *sk)
{
        struct pf_bpf_moved_key back = sk->key;
        struct pf_bpf_moved_back value = { .requested = sk->asked };

        back.port = sk->moved_to;
        bpf_map_update_elem(&moved_back, &back, &value, BPF_ANY);
}

/* The fence's count of its sockets in the registry, NULL if unreadable. */
static __always_inline __u32 *fence_moves(void)
{
        __u32 which = PF_BPF_LIVE_MOVES;

        return bpf_map_lookup_elem(&live, &which);
}

/* The count of UDP sockets this fence's tc programs steer to. */
static __always_inline __u32 *fence_datagrams(void)
{
        __u32 which = PF_BPF_LIVE_DATAGRAMS;

        return bpf_map_lookup_elem(&live, &which);
}

static __always_inline void count_host_move(__s32 change)
{
        __s32 *count = host_moves();

        if (count)
                __sync_fetch_and_add(count, change);
}

/* Will this fence's tc programs steer the moved datagram socket sk? Only
 * UDP (they read no UDP-Lite header), where they are linked (the namespace
 * it steers, on a kernel that links them), when its policy steers. */
static __always_inline __u8 steers_datagrams_of(struct bpf_sock *ctx, const struct pf_bpf_sock *sk,
                                                const struct pf_bpf_settings *s)
{
        __u32 zero = 0;
        __u64 *netns;

        __u32 which = PF_BPF_LIVE_WIRE, *wire;

        if (ctx->protocol != IPPROTO_UDP || !s->steer)
                return 0;
        wire = bpf_map_lookup_elem(&live, &which);
        netns = bpf_map_lookup_elem(&steer_netns, &zero);
        return wire && *wire && netns && *netns && *netns == sk->key.netns;
}

/* Count a remapped socket in moved[] once its bind succeeded: 0, or the
 * errno its bind fails with. The key is the arbiter between binds of one
 * port racing each other: the first target written holds it; a socket
 * moved elsewhere in the same instant gets what the port would have given
 * it (EADDRINUSE). No room (the registry full) refuses, as the policy does. */
static __always_inline int register_moved(struct bpf_sock *ctx, struct pf_bpf_sock *sk,
                                          const struct pf_bpf_settings *s)
{
        struct pf_bpf_moved first = { .sockets = 1, .target = sk->moved_to }, *m;
        __u32 *moves = fence_moves();

        sk->cookie = bpf_get_socket_cookie(ctx);
        sk->key.netns = bpf_get_netns_cookie(ctx);
        sk->key.port = sk->asked;
        sk->key.proto = sk->proto;
        first.steered = steers_datagrams_of(ctx, sk, s);
        m = bpf_map_lookup_elem(&moved, &sk->key);
        if (!m && bpf_map_update_elem(&moved, &sk->key, &first, BPF_NOEXIST) == 0)
                goto registered;
        if (!m)
                m = bpf_map_lookup_elem(&moved, &sk->key);     /* another socket was first */
        if (!m) {
                count(PF_BPF_COUNT_FULL);
                return s->refuse_errno;
        }
        if (m->sockets > 0 && m->target != sk->moved_to)
                return EADDRINUSE;
        m->target = sk->moved_to;
        m->steered = first.steered;
        m->hashed = 0;          /* this socket is not in the steering map yet */
        __sync_fetch_and_add(&m->sockets, 1);
registered:
        register_back(sk);
        sk->registered = 1;
        count_host_move(1);
        if (moves) {
                __sync_fetch_and_add(moves, 1);
                sk->counted = 1;
        }
        if (first.steered) {
                __u32 *datagrams = fence_datagrams();

                if (datagrams) {
                        __sync_fetch_and_add(datagrams, 1);
                        sk->steered = 1;
                }
        }
        return 0;
}

/* The port the kernel chose in a narrowed range, decided as a bind of it:
 * one the policy refuses or moves is refused (it cannot be moved now); the
 * kernel then gives the port back. pf_decide_chosen() of policy/, as the
 * kernel must have it. */
static __always_inline int check_chosen(struct bpf_sock *ctx, struct pf_bpf_sock *sk, struct request *r)
{
        struct pf_bpf_settings *s;
        struct decision d;
        __u32 generation;

        sk->check_chosen = 0;
        r->port = (__u16)ctx->src_port;
        r->with_program = 1;
        r->proto = ctx->protocol == IPPROTO_UDP || ctx->protocol == IPPROTO_UDPLITE ? PF_BPF_UDP : PF_BPF_TCP;
        if (r->port == 0 || (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP &&
                             ctx->protocol != IPPROTO_UDPLITE && ctx->protocol != IPPROTO_MPTCP))
                return ALLOW_CALL;      /* no port yet (IP_BIND_ADDRESS_NO_PORT) */
        s = get_settings(&generation);
        if (!s && fence_inert())
                return ALLOW_CALL;
        decide(s, generation, r, &d);
        count(d.action == PF_BPF_REMAP ? PF_BPF_REFUSE : d.action);
        if (d.action == PF_BPF_ALLOW)
                return ALLOW_CALL;
        if (d.action == PF_BPF_LOG) {
                emit(r, &d, PF_BPF_HOOK_BIND);
                return ALLOW_CALL;
        }
        if (d.action == PF_BPF_REMAP) {
                d.action = PF_BPF_REFUSE;
                d.err = refuse_errno();
        }
        emit(r, &d, PF_BPF_HOOK_BIND);
        bpf_set_retval(-d.err);
        return REJECT_CALL;
}

/* r: the bound address, read by the hook of its family (each may read
 * only its own fields). A moved socket is registered by the program of the
 * fence that moved it: its count is that fence's. */
static __always_inline int on_post_bind(struct bpf_sock *ctx, struct request *r)
{
        struct pf_bpf_sock *sk = bpf_sk_storage_get(&socks, ctx, 0, 0);
        struct pf_bpf_settings *s;
        __u32 generation;
        int err = 0;

        if (sk && sk->check_chosen)
                return check_chosen(ctx, sk, r);
        if (!sk || !sk->asked)
                return ALLOW_CALL;
        s = get_settings(&generation);
        if (!s || s->fence_id != sk->mover)
                return ALLOW_CALL;
        if (ctx->src_port == sk->moved_to) {
                err = register_moved(ctx, sk, s);
                if (err == 0) {
                        sk->requested = sk->asked;
                        sk->bound = sk->moved_to;
                }
        }
        sk->asked = 0;
        if (err) {
                bpf_set_retval(-err);
                return REJECT_CALL;
        }
        return ALLOW_CALL;
}

SEC("cgroup/post_bind4")
int pf_post_bind4(struct bpf_sock *ctx)
{
        struct request r = { .family = PF_BPF_IPV4, .addr = { ctx->src_ip4 } };

        return on_post_bind(ctx, &r);
}

SEC("cgroup/post_bind6")
int pf_post_bind6(struct bpf_sock *ctx)
{
        struct request r = {
                .family = PF_BPF_IPV6,
                .addr = { ctx->src_ip6[0], ctx->src_ip6[1], ctx->src_ip6[2], ctx->src_ip6[3] },
        };

        return on_post_bind(ctx, &r);
}

/* The count of sockets in peers[], NULL when it cannot be read. */
static __always_inline __s32 *peer_count(void)
{
        __u32 which = PF_BPF_HOST_PEERS;

        return bpf_map_lookup_elem(&host, &which);
}

/* The slot of peers[] a socket cookie picks. */
static __always_inline struct pf_bpf_peer *peer_slot(__u64 cookie)
{
        __u32 slot = (__u32)cookie & (PF_BPF_PEER_SLOTS - 1);

        return bpf_map_lookup_elem(&peers, &slot);
}

/* A redirected socket's slot of peers[] is freed with it. */
static __always_inline void forget_peer(struct bpf_sock *ctx)
{
        __s32 *count = peer_count();
        struct pf_bpf_peer *peer;
        __u64 cookie;

        if (!count || *count <= 0)
                return;         /* no socket has one: nothing to look for */
        cookie = bpf_get_socket_cookie(ctx);
        peer = peer_slot(cookie);
        if (peer && __sync_val_compare_and_swap(&peer->cookie, cookie, 0) == cookie)
                __sync_fetch_and_add(count, -1);
}

/* The moving fence's count goes down with its socket, in its own program. */
static __always_inline void uncount_move(struct pf_bpf_sock *sk)
{
        __u32 generation, *moves;
        struct pf_bpf_settings *s = get_settings(&generation);

        if (!s || s->fence_id != sk->mover)
                return;
        moves = fence_moves();
        if (moves && *moves > 0)
                __sync_fetch_and_add(moves, -1);
        sk->counted = 0;
}

SEC("cgroup/sock_release")
int pf_sock_release(struct bpf_sock *ctx)
{
        struct pf_bpf_sock *sk = bpf_sk_storage_get(&socks, ctx, 0, 0);
        struct pf_bpf_moved *m;

        forget_peer(ctx);

        if (!sk || sk->cookie != bpf_get_socket_cookie(ctx))
                return ALLOW_CALL;      /* not moved itself: an accepted connection */
        if (sk->counted)
                uncount_move(sk);
        if (sk->steered) {
                __u32 *datagrams = fence_datagrams();

                if (datagrams && *datagrams > 0)
                        __sync_fetch_and_add(datagrams, -1);
                sk->steered = 0;
        }
        if (!sk->registered)
                return ALLOW_CALL;
        m = bpf_map_lookup_elem(&moved, &sk->key);
        if (m) {
                __sync_fetch_and_add(&m->sockets, -1);
                /* The last one gone: the key goes too, so the registry holds
                 * live moves only. A socket moved from the same port in the
                 * same instant may lose its count with it: its clients then
                 * connect as addressed, never to the wrong place. */
                if (m->sockets <= 0) {
                        struct pf_bpf_moved_key back = sk->key;

                        back.port = m->target;
                        bpf_map_delete_elem(&moved_back, &back);
                        bpf_map_delete_elem(&moved, &sk->key);
                }
        }
        sk->registered = 0;
        count_host_move(-1);
        return ALLOW_CALL;
}

/* ---- steering: a moved listener reached at the port it asked for ---------- */

/* A moved TCP socket starts listening: its fence's sk_lookup program finds
 * it from now on, until it closes. */
SEC("sockops")
int pf_sock_ops(struct bpf_sock_ops *skops)
{
        struct pf_bpf_settings *s;
        struct pf_bpf_sock *sk;
        struct bpf_sock *socket;
        __u32 generation;

        if (skops->op != BPF_SOCK_OPS_TCP_LISTEN_CB)
                return 1;
        socket = skops->sk;
        if (!socket)
                return 1;
        sk = bpf_sk_storage_get(&socks, socket, 0, 0);
        if (!sk || !sk->registered || sk->proto != PF_BPF_TCP)
                return 1;
        s = get_settings(&generation);
        if (s && s->fence_id == sk->mover) {
                struct pf_bpf_steer_key key = {
                        .netns = sk->key.netns, .fence = s->fence_id, .port = sk->key.port, .proto = PF_BPF_TCP,
                        .family = (__u8)skops->family,
                };
                __u32 port = sk->key.port;
                __u8 one = 1;

                if (skops->family == AF_INET) {
                        key.addr[0] = skops->local_ip4;
                } else {
                        key.addr[0] = skops->local_ip6[0];
                        key.addr[1] = skops->local_ip6[1];
                        key.addr[2] = skops->local_ip6[2];
                        key.addr[3] = skops->local_ip6[3];
                }
                /* The port first: a lookup never skips a listener in the map. */
                bpf_map_update_elem(&steered_ports, &port, &one, BPF_ANY);
                for (int slot = 0; slot < PF_BPF_STEER_SLOTS; slot++) {
                        key.slot = (__u8)slot;
                        if (bpf_sock_hash_update(skops, &steer, &key, BPF_NOEXIST) == 0)
                                break;
                }
        }
        return 1;
}

/* A new connection to a port a server of this fence was moved from, in
 * the namespace the fence steers: to that server. */
SEC("sk_lookup")
int pf_steer_lookup(struct bpf_sk_lookup *ctx)
{
        __u32 zero = 0, generation;
        __u64 *netns = bpf_map_lookup_elem(&steer_netns, &zero);
        struct pf_bpf_steer_key key = { .proto = ctx->protocol == IPPROTO_UDP ? PF_BPF_UDP : PF_BPF_TCP };
        struct pf_bpf_settings *s = get_settings(&generation);

        if ((ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP) || !netns || !*netns || !s)
                return SK_PASS;
        if (key.proto == PF_BPF_TCP && !s->steer)
                return SK_PASS; /* a UDP socket is steered as it was when it moved */
        key.netns = *netns;
        key.fence = s->fence_id;
        key.port = (__u16)ctx->local_port;
        steer_to_listener(ctx, &steer, &steered_ports, &key);
        return SK_PASS;
}

/* Has this fence a UDP socket to steer to? Most packets end here. */
static __always_inline bool steers_datagrams(void)
{
        __u32 *datagrams = fence_datagrams();

        return datagrams && *datagrams > 0;
}

/* A datagram to a port a UDP server of this host was moved from, arriving
 * at an interface of the namespace the fence steers: that server joins the
 * steering map, if this fence moved it (steer.bpf.h). Whether a UDP socket is steered is
 * decided once, when it is moved (the policy's steer then): its clients
 * were told so by the registry, and a reload does not take it back. */
SEC("tc")
int pf_udp_in(struct __sk_buff *skb)
{
        struct pf_bpf_moved_key key = { .proto = PF_BPF_UDP };
        struct pf_bpf_steer_key steering = {};
        struct pf_bpf_settings *s;
        __u32 zero = 0, generation;
        struct pf_bpf_moved *m;
        struct datagram d;
        __u64 *netns;
        __u8 hashed;

        if (!steers_datagrams() || !read_datagram(skb, &d))
                return TCX_NEXT;
        netns = bpf_map_lookup_elem(&steer_netns, &zero);
        if (!netns || !*netns)
                return TCX_NEXT;
        key.netns = *netns;
        key.port = bpf_ntohs(d.dest);
        m = bpf_map_lookup_elem(&moved, &key);
        hashed = d.family == AF_INET ? PF_BPF_HASHED_IPV4 : PF_BPF_HASHED_IPV6;
        /* Most datagrams to the port find its socket of their family in the
         * map already: one lookup. */
        s = m && m->sockets > 0 && m->steered && !(m->hashed & hashed) ? get_settings(&generation) : NULL;
        if (!s)
                return TCX_NEXT;
        steering.netns = *netns;
        steering.fence = s->fence_id;
        /* A bit lost to a race with the other family's first datagram is
         * set again by the next one: the socket says it is in the map. */
        if (hash_moved_socket(skb, &d, key.port, m->target, &socks, &steer, &steered_ports, &steering))
                m->hashed |= hashed;
        return TCX_NEXT;
}

/* What a UDP server this fence moved sends leaves from the port it asked
 * for. */
SEC("tc")
int pf_udp_out(struct __sk_buff *skb)
{
        struct pf_bpf_sock *moved;

        if (!steers_datagrams())
                return TCX_NEXT;
        moved = moved_sender(skb, &socks);
        if (moved)
                unmove_source(skb, moved);
        return TCX_NEXT;
}

/* ---- connect, sendmsg: follow remaps to local servers --------------------- */

/* Is the destination this host's own? pf_addr_is_local() of policy/, as
 * the kernel must have it. */
static __always_inline bool is_local(const struct pf_bpf_settings *s, const struct request *r)
{
        if (r->family == PF_BPF_IPV4) {
                if ((bpf_ntohl(r->addr[0]) >> 24) == 127 || r->addr[0] == 0)
                        return true;
                for (int i = 0; i < PF_BPF_LOCALS; i++)
                        if (i < s->local4_count && s->local4[i] == r->addr[0])
                                return true;
                return false;
        }
        if (r->addr[0] == 0 && r->addr[1] == 0 && r->addr[2] == 0 &&
            (r->addr[3] == 0 || r->addr[3] == bpf_htonl(1)))
                return true;
        for (int i = 0; i < PF_BPF_LOCALS; i++)
                if (i < s->local6_count && s->local6[i][0] == r->addr[0] &&
                    s->local6[i][1] == r->addr[1] && s->local6[i][2] == r->addr[2] &&
                    s->local6[i][3] == r->addr[3])
                        return true;
        return false;
}

/* Where a redirected socket's destination went, for its name calls: in its
 * storage if it has one, else in its slot of peers[] (no allocation), else,
 * the slot being another socket's, in storage made for it. */
static __always_inline void remember_peer(struct bpf_sock_addr *ctx, __u16 requested, __u16 target)
{
        struct pf_bpf_sock *sk = bpf_sk_storage_get(&socks, ctx->sk, 0, 0);
        __s32 *count = peer_count();
        struct pf_bpf_peer *peer;
        __u64 cookie;

        if (!sk && count) {
                cookie = bpf_get_socket_cookie(ctx);
                peer = peer_slot(cookie);
                if (peer && peer->cookie == cookie) {   /* a datagram after the first */
                        peer->requested = requested;
                        peer->target = target;
                        return;
                }
                if (peer && __sync_val_compare_and_swap(&peer->cookie, 0, cookie) == 0) {
                        peer->requested = requested;
                        peer->target = target;
                        __sync_fetch_and_add(count, 1);
                        return;
                }
                sk = bpf_sk_storage_get(&socks, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
        }
        if (sk) {
                sk->peer_requested = requested;
                sk->peer_target = target;
        }
}

/* A destination on this host follows a remap only when the policy remaps
 * its port, a fenced server was really moved away from it, and nothing is
 * bound to it now. Decided as a bind of that address with no program name,
 * as the shim does. */
static __always_inline int on_connect(struct bpf_sock_addr *ctx, struct request *r, __u8 hook)
{
        __u32 generation;
        struct pf_bpf_settings *s = get_settings(&generation);
        struct pf_bpf_moved *m;
        struct decision d;
        __u16 target;

        /* Which fence decides first: an inner one whose policy redirects
         * nothing still decides for its sockets. */
        if (!s || inner_fence_decides(ctx, s) || !s->redirect_connect || plain_allow(s, r->port) ||
            !is_local(s, r))
                return ALLOW_CALL;
        /* The registry first: most ports nobody was moved from, one lookup. */
        m = moved_entry(ctx, r);
        if (!m || m->steered)
                return ALLOW_CALL;      /* steered: reached at the port asked for, as from anywhere */
        target = m->target;
        r->with_program = 0;
        decide(s, generation, r, &d);
        if (d.action != PF_BPF_REMAP || destination_bound(ctx, r))
                return ALLOW_CALL;
        d.target = target;
        ctx->user_port = bpf_htons(d.target);
        remember_peer(ctx, r->port, d.target);
        count(PF_BPF_COUNT_REDIRECT);
        emit(r, &d, hook);
        return ALLOW_CALL;
}

SEC("cgroup/connect4")
int pf_connect4(struct bpf_sock_addr *ctx)
{
        struct request r;

        return read_request4(ctx, &r) ? on_connect(ctx, &r, PF_BPF_HOOK_CONNECT) : ALLOW_CALL;
}

SEC("cgroup/connect6")
int pf_connect6(struct bpf_sock_addr *ctx)
{
        struct request r;

        return read_request6(ctx, &r) ? on_connect(ctx, &r, PF_BPF_HOOK_CONNECT) : ALLOW_CALL;
}

SEC("cgroup/sendmsg4")
int pf_sendmsg4(struct bpf_sock_addr *ctx)
{
        struct request r;

        return read_request4(ctx, &r) ? on_connect(ctx, &r, PF_BPF_HOOK_SENDMSG) : ALLOW_CALL;
}

SEC("cgroup/sendmsg6")
int pf_sendmsg6(struct bpf_sock_addr *ctx)
{
        struct request r;

        return read_request6(ctx, &r) ? on_connect(ctx, &r, PF_BPF_HOOK_SENDMSG) : ALLOW_CALL;
}

/* ---- the name calls: report the ports asked for ---------------------------- */

/* An MPTCP socket's name: its subflow was bound or connected, with our
 * storage; the port asked for comes back through moved_back. */
static __always_inline int restore_mptcp(struct bpf_sock_addr *ctx)
{
        struct pf_bpf_moved_key key = {
                .netns = bpf_get_netns_cookie(ctx), .port = bpf_ntohs(ctx->user_port), .proto = PF_BPF_TCP,
        };
        struct pf_bpf_moved_back *back;

        if (ctx->protocol != IPPROTO_MPTCP)
                return ALLOW_CALL;
        back = bpf_map_lookup_elem(&moved_back, &key);
        if (back && back->requested)
                ctx->user_port = bpf_htons(back->requested);
        return ALLOW_CALL;
}

static __always_inline int restore_local(struct bpf_sock_addr *ctx)
{
        __u32 generation;
        struct pf_bpf_settings *s = get_settings(&generation);
        struct pf_bpf_sock *sk;

        if (!s || !s->getsockname_requested)
                return ALLOW_CALL;
        sk = bpf_sk_storage_get(&socks, ctx->sk, 0, 0);
        if (!sk)
                return restore_mptcp(ctx);
        if (sk->requested && bpf_ntohs(ctx->user_port) == sk->bound)
                ctx->user_port = bpf_htons(sk->requested);
        return ALLOW_CALL;
}

static __always_inline int restore_peer(struct bpf_sock_addr *ctx)
{
        struct pf_bpf_sock *sk = bpf_sk_storage_get(&socks, ctx->sk, 0, 0);
        __u16 port = bpf_ntohs(ctx->user_port);
        __s32 *count = peer_count();
        struct pf_bpf_peer *peer;
        __u64 cookie;

        if (sk && sk->peer_requested) {
                if (port == sk->peer_target)
                        ctx->user_port = bpf_htons(sk->peer_requested);
                return ALLOW_CALL;
        }
        if (count && *count > 0) {      /* else no socket is in peers[] */
                cookie = bpf_get_socket_cookie(ctx);
                peer = peer_slot(cookie);
                if (peer && peer->cookie == cookie) {
                        if (port == peer->target)
                                ctx->user_port = bpf_htons(peer->requested);
                        return ALLOW_CALL;
                }
        }
        return sk ? ALLOW_CALL : restore_mptcp(ctx);
}

SEC("cgroup/getsockname4")
int pf_getsockname4(struct bpf_sock_addr *ctx)
{
        return restore_local(ctx);
}

SEC("cgroup/getsockname6")
int pf_getsockname6(struct bpf_sock_addr *ctx)
{
        return restore_local(ctx);
}

SEC("cgroup/getpeername4")
int pf_getpeername4(struct bpf_sock_addr *ctx)
{
        return restore_peer(ctx);
}

SEC("cgroup/getpeername6")
int pf_getpeername6(struct bpf_sock_addr *ctx)
{
        return restore_peer(ctx);
}

SEC("cgroup/recvmsg4")
int pf_recvmsg4(struct bpf_sock_addr *ctx)
{
        return restore_peer(ctx);
}

SEC("cgroup/recvmsg6")
int pf_recvmsg6(struct bpf_sock_addr *ctx)
{
        return restore_peer(ctx);
}
