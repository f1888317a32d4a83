/* SPDX-License-Identifier: MIT */
/* Facts of this host, read in one place: its ephemeral range, its reserved
 * ports, its local addresses, and whether something receives at a port. */
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host.h"

/* ---- ephemeral and reserved ports ---------------------------------------- */

/* The whole of a /proc file (the reserved list can be long), without its
 * trailing newline, in a new string; free() it. */
static int read_text(const char *path, char **out, char *why)
{
        FILE *f = fopen(path, "re");
        size_t len = 0, size = 4096;
        char *text = malloc(size);
        int err = 0;

        if (!f || !text) {
                err = !f ? errno : ENOMEM;
                goto out;
        }
        for (;;) {
                len += fread(text + len, 1, size - 1 - len, f);
                if (ferror(f)) {
                        err = EIO;
                        goto out;
                }
                if (feof(f))
                        break;
                if (len == size - 1) {
                        char *grown = realloc(text, size * 2);

                        if (!grown) {
                                err = ENOMEM;
                                goto out;
                        }
                        text = grown;
                        size *= 2;
                }
        }
        text[len] = '\0';
        text[strcspn(text, "\n")] = '\0';
out:
        if (f)
                fclose(f);
        if (err) {
                free(text);
                snprintf(why, PF_WHY_SIZE, "cannot read '%s': %s", path, strerror(err));
                return -err;
        }
        *out = text;
        return 0;
}

int pf_host_reserved_read(const char *path, struct pf_portset *out, char *why)
{
        char reason[PF_WHY_SIZE], *text;
        int r = read_text(path, &text, why);

        if (r < 0)
                return r;
        pf_portset_clear(out);
        if (text[strspn(text, " \t")] != '\0' && pf_portset_parse(text, out, reason) < 0) {
                snprintf(why, PF_WHY_SIZE, "%.200s: %.200s in '%.64s'", path, reason, text);
                r = -EINVAL;
        }
        free(text);
        return r;
}

int pf_host_reserved_write(const char *path, const struct pf_portset *set, char *why)
{
        size_t size = pf_portset_format(set, NULL, 0) + 2;
        char *text = malloc(size);
        int fd = -1, r = 0;
        size_t len;

        if (!text)
                r = -ENOMEM;
        if (r == 0) {
                pf_portset_format(set, text, size);
                len = strlen(text);
                text[len++] = '\n';
                fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0 || write(fd, text, len) != (ssize_t)len)
                        r = -errno;
        }
        if (fd >= 0 && close(fd) < 0 && r == 0)
                r = -errno;
        if (r < 0)
                snprintf(why, PF_WHY_SIZE, "cannot write '%s': %s", path, strerror(-r));
        free(text);
        return r;
}

bool pf_host_trusted(const struct stat *st, mode_t type, uid_t owner, bool or_root, mode_t others_may_not)
{
        bool owned = st->st_uid == owner || (or_root && st->st_uid == 0);

        return (!type || (st->st_mode & S_IFMT) == type) && owned && !(st->st_mode & others_may_not);
}

bool pf_host_port_free(unsigned port, enum pf_proto proto)
{
        int type = proto == PF_UDP ? SOCK_DGRAM : SOCK_STREAM;
        struct sockaddr_in in4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
                                    .sin6_addr = IN6ADDR_ANY_INIT };
        int one = 1;
        bool free4 = false, free6 = true;
        int fd;

        fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
                free4 = bind(fd, (struct sockaddr *)&in4, sizeof(in4)) == 0;
                close(fd);
        }
        fd = socket(AF_INET6, type | SOCK_CLOEXEC, 0);
        if (fd >= 0) {  /* no IPv6 on this host: nothing to collide with */
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
                free6 = bind(fd, (struct sockaddr *)&in6, sizeof(in6)) == 0 || errno != EADDRINUSE;
                close(fd);
        }
        return free4 && free6;
}

bool pf_host_port_named(unsigned port, enum pf_proto proto)
{
        return getservbyport(htons((uint16_t)port), pf_proto_name(proto)) != NULL;
}

const char *pf_host_landlock_unusable(int abi)
{
        if (abi == -ENOSYS || abi == -EOPNOTSUPP)
                return "this kernel has no Landlock (Linux 5.13+, enabled in the lsm= boot list)";
        if (abi < 0)
                return "Landlock cannot be asked for its version";
        if (abi < PF_LANDLOCK_NET_ABI)
                return "this kernel's Landlock has no network rules (ABI 4, Linux 6.7+)";
        return NULL;
}

int pf_host_port_range_read(const char *range_path, struct pf_portset *out, char *why)
{
        char *text, tail;
        unsigned lo, hi;
        int r = read_text(range_path, &text, why);

        if (r < 0)
                return r;
        if (sscanf(text, "%u %u %c", &lo, &hi, &tail) != 2 || lo == 0 || lo > hi ||
            hi > PF_PORT_MAX) {
                snprintf(why, PF_WHY_SIZE, "%s: expected two ports 'LOW HIGH', got '%.64s'",
                         range_path, text);
                free(text);
                return -EINVAL;
        }
        free(text);
        pf_portset_clear(out);
        pf_portset_add_range(out, lo, hi);
        return 0;
}

int pf_host_ephemeral_read(const char *range_path, const char *reserved_path,
                           struct pf_portset *out, char *why)
{
        struct pf_portset reserved;
        int r = pf_host_port_range_read(range_path, out, why);

        if (r == 0)
                r = pf_host_reserved_read(reserved_path, &reserved, why);
        if (r == 0)
                pf_portset_subtract(out, &reserved);
        return r;
}

/* ---- local addresses ---------------------------------------------------------- */

unsigned pf_host_local_addresses(struct pf_addr *out, unsigned capacity)
{
        unsigned count = 0, per_family[2] = { 0, 0 };
        struct ifaddrs *list;

        if (getifaddrs(&list) < 0)
                return 0;
        for (int family = AF_INET; family == AF_INET || family == AF_INET6;
             family = family == AF_INET ? AF_INET6 : 0) {
                for (struct ifaddrs *i = list; i && count < capacity; i = i->ifa_next) {
                        unsigned *n = &per_family[family == AF_INET6];

                        if (!i->ifa_addr || i->ifa_addr->sa_family != family || *n >= PF_HOST_LOCALS)
                                continue;
                        if (family == AF_INET)
                                pf_addr_set_in4(&out[count++], &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr);
                        else
                                pf_addr_set_in6(&out[count++], &((struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr);
                        (*n)++;
                }
        }
        freeifaddrs(list);
        return count;
}

/* ---- the host's mount namespace -------------------------------------------- */

/* <linux/nsfs.h> of Linux 6.18: the initial mount namespace's inode number.
 * Numbers the kernel hands out start at 0xF0000000, so no other namespace
 * ever carries it, on any kernel. */
#define PF_MNT_NS_INIT_INO 0xEFFFFFF8u
#define PF_TASK_KTHREAD 0x00200000u      /* a task's flags: a kernel thread */

/* The text of a small file below proc, or "" where it cannot be read. */
static void read_small(const char *proc, const char *name, char *out, size_t size)
{
        char path[4096];
        FILE *f;
        size_t len = 0;

        snprintf(path, sizeof(path), "%s/%s", proc, name);
        f = fopen(path, "re");
        if (f) {
                len = fread(out, 1, size - 1, f);
                fclose(f);
        }
        out[len] = '\0';
}

/* Does this kernel give the initial mount namespace its fixed number (6.18
 * and later)? Then a namespace without it is provably not the host's. */
static bool kernel_numbers_initial_mount_ns(const char *proc)
{
        char release[128];
        unsigned major = 0, minor = 0;

        read_small(proc, "sys/kernel/osrelease", release, sizeof(release));
        if (sscanf(release, "%u.%u", &major, &minor) != 2)
                return false;
        return major > 6 || (major == 6 && minor >= 18);
}

/* Is pid 2 below proc a kernel thread? Then proc shows the initial pid
 * namespace, and the thread lives in the initial mount namespace. */
static bool is_kernel_thread(const char *proc, const char *pid)
{
        char name[64], stat[1024];
        const char *p;
        unsigned long flags;

        snprintf(name, sizeof(name), "%s/stat", pid);
        read_small(proc, name, stat, sizeof(stat));
        p = strrchr(stat, ')');         /* past the name, which may hold anything */
        if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %lu", &flags) != 1)
                return false;
        return flags & PF_TASK_KTHREAD;
}

/* Compare self with the mount namespace of a task known to be the host's:
 * only an answer from nsfs itself counts (a procfs that forbids the link
 * may show a placeholder of its own). */
static enum pf_ns_place compare_with(const char *proc, const char *pid, const struct stat *self)
{
        char path[4096];
        struct stat st;

        snprintf(path, sizeof(path), "%s/%s/ns/mnt", proc, pid);
        if (stat(path, &st) < 0 || st.st_dev != self->st_dev)
                return PF_NS_UNKNOWN;
        return st.st_ino == self->st_ino ? PF_NS_HOST : PF_NS_PRIVATE;
}

enum pf_ns_place pf_host_mount_ns(const char *proc)
{
        char path[4096];
        struct stat self;
        enum pf_ns_place place;

        snprintf(path, sizeof(path), "%s/self/ns/mnt", proc);
        if (stat(path, &self) < 0)
                return PF_NS_UNKNOWN;
        if (self.st_ino == PF_MNT_NS_INIT_INO)
                return PF_NS_HOST;
        place = compare_with(proc, "1", &self);
        if (place == PF_NS_UNKNOWN && is_kernel_thread(proc, "2"))
                place = compare_with(proc, "2", &self);
        if (place == PF_NS_UNKNOWN && kernel_numbers_initial_mount_ns(proc))
                place = PF_NS_PRIVATE;
        return place;
}

/* ---- sockets, from sock_diag (async-signal-safe, allocation-free) ---------- */

/* A dump request, with a bytecode filter on the local port (one or two)
 * when asked, so the kernel sends only those sockets. */
struct dump_request {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
        struct rtattr bytecode;
        struct inet_diag_bc_op op[5];
};

/* sport == A: a test and the port it compares. A match goes on to what
 * follows (here: the end, accept), no match jumps 12 bytes (past the end,
 * reject; or, after a JMP, to the next test). */
static size_t port_test(struct inet_diag_bc_op *op, uint16_t port)
{
        op[0] = (struct inet_diag_bc_op){ .code = INET_DIAG_BC_S_EQ, .yes = 8, .no = 12 };
        op[1] = (struct inet_diag_bc_op){ .no = port };
        return 2;
}

/* The filter for one port, or two as ss(8) writes "sport = A or sport = B":
 * TEST(A), JMP over TEST(B) to the end, TEST(B); every jump lands where the
 * kernel's audit can follow it. */
static size_t make_filter(const struct pf_socket_query *q, struct inet_diag_bc_op *op)
{
        size_t n = port_test(op, q->ports[0]);

        if (!q->ports[1])
                return n;
        op[n++] = (struct inet_diag_bc_op){ .code = INET_DIAG_BC_JMP, .yes = 4, .no = 12 };
        return n + port_test(op + n, q->ports[1]);
}

static size_t make_request(const struct pf_socket_query *q, uint32_t seq, struct dump_request *r)
{
        size_t filter;

        memset(r, 0, sizeof(*r));
        r->nlh.nlmsg_len = NLMSG_LENGTH(sizeof(r->req));
        r->nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
        r->nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        r->nlh.nlmsg_seq = seq;
        r->req.sdiag_family = (uint8_t)q->family;
        r->req.sdiag_protocol = q->proto == PF_UDP ? IPPROTO_UDP : IPPROTO_TCP;
        r->req.idiag_states = q->states ? q->states : ~0u;
        if (!q->ports[0])
                return r->nlh.nlmsg_len;
        filter = make_filter(q, r->op) * sizeof(struct inet_diag_bc_op);
        r->bytecode.rta_len = (unsigned short)RTA_LENGTH(filter);
        r->bytecode.rta_type = INET_DIAG_REQ_BYTECODE;
        r->nlh.nlmsg_len += RTA_LENGTH(filter);
        return r->nlh.nlmsg_len;
}

#define DUMP_DONE 1

/* One message of the answer: DUMP_DONE at its end, 0 to read on, or a
 * negative errno. Messages of other requests are skipped; an interrupted
 * dump (the table changed under it) is -EAGAIN, to be tried again. */
/* The one check of a sock_diag answer message (of the right sequence,
 * from the kernel): 1 with the socket it describes in *msg; 0 for the
 * kernel's "no such socket" (ENOENT); or a negative errno (its error, or a
 * message cut short or of another kind). */
static int diag_answer(const struct nlmsghdr *h, const struct inet_diag_msg **msg)
{
        if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);

                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)) || e->error >= 0)
                        return -EIO;
                return e->error == -ENOENT ? 0 : e->error;
        }
        if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
                return -EIO;
        *msg = NLMSG_DATA(h);
        return 1;
}

static int dump_message(const struct nlmsghdr *h, uint32_t seq, pf_socket_visit visit, void *ctx)
{
        const struct inet_diag_msg *msg;
        int r;

        if (h->nlmsg_seq != seq)
                return 0;
        if (h->nlmsg_flags & NLM_F_DUMP_INTR)
                return -EAGAIN;
        if (h->nlmsg_type == NLMSG_DONE)
                return DUMP_DONE;
        r = diag_answer(h, &msg);
        return r > 0 ? visit(msg, ctx) : r == 0 ? -ENOENT : r;
}

int pf_host_diag_open(void)
{
        int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

        return fd < 0 ? -errno : fd;
}

/* One request on a sock_diag socket, its answer to visit() until the end of
 * a dump or a visit() that returns DUMP_DONE (one request at a time: what is
 * left of an earlier answer is skipped by its sequence). Every message is
 * checked: from the kernel (sender port id 0, so no getsockname), of this
 * request's sequence, whole, and from a dump that was not interrupted. */
static int ask_kernel_on(int fd, const void *request, size_t size, uint32_t seq, pf_socket_visit visit,
                         void *ctx)
{
        char buf[8192] __attribute__((aligned(8)));
        int r = 0;

        if (send(fd, request, size, 0) < 0)
                r = -errno;
        while (r == 0) {
                struct sockaddr_nl from;
                socklen_t from_len = sizeof(from);
                ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &from_len);
                int left = (int)n;

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -EIO;
                        break;
                }
                if (from_len < sizeof(from) || from.nl_pid != 0)
                        continue;       /* not from the kernel */
                for (struct nlmsghdr *h = (struct nlmsghdr *)buf; r == 0 && NLMSG_OK(h, (unsigned)left);
                     h = NLMSG_NEXT(h, left))
                        r = dump_message(h, seq, visit, ctx);
                if (r == 0 && left > 0)
                        r = -EIO;       /* a message cut short */
        }
        return r < 0 ? r : 0;
}

static int ask_kernel(const void *request, size_t size, uint32_t seq, pf_socket_visit visit, void *ctx)
{
        int fd = pf_host_diag_open(), r;

        if (fd < 0)
                return fd;
        r = ask_kernel_on(fd, request, size, seq, visit, ctx);
        close(fd);
        return r;
}

static int dump_once(const struct pf_socket_query *q, pf_socket_visit visit, void *ctx)
{
        struct dump_request request;
        uint32_t seq = (uint32_t)q->ports[0] << 16 ^ 0x5046u;
        size_t size = make_request(q, seq, &request);

        return ask_kernel(&request, size, seq, visit, ctx);
}

/* The answer to request i of a pf_host_sockets_at() exchange (seq0 + i):
 * 1 with its inode, 0 for none, or a negative errno. */
static int socket_at_answer(const struct nlmsghdr *h, uint64_t *inode)
{
        const struct inet_diag_msg *msg;
        int r = diag_answer(h, &msg);

        if (r > 0)
                *inode = msg->idiag_inode;
        return r;
}

struct socket_at_request {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
};

/* The kernel's lookup of what receives at addr:port, as request seq. */
static void socket_at_request(struct socket_at_request *r, uint32_t seq, enum pf_proto proto,
                              const struct pf_addr *addr, uint16_t port)
{
        size_t bytes = addr->family == PF_IPV4 ? 4 : 16;

        *r = (struct socket_at_request){
                .nlh = { .nlmsg_len = sizeof(*r), .nlmsg_type = SOCK_DIAG_BY_FAMILY, .nlmsg_flags = NLM_F_REQUEST,
                         .nlmsg_seq = seq },
                .req = { .sdiag_family = addr->family == PF_IPV4 ? AF_INET : AF_INET6,
                         .sdiag_protocol = proto == PF_UDP ? IPPROTO_UDP : IPPROTO_TCP, .idiag_states = ~0u },
        };
        r->req.id.idiag_cookie[0] = r->req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
        if (proto == PF_UDP) {
                memcpy(r->req.id.idiag_dst, &addr->v6, bytes);
                r->req.id.idiag_dport = htons(port);
        } else {
                memcpy(r->req.id.idiag_src, &addr->v6, bytes);
                r->req.id.idiag_sport = htons(port);
        }
}

/* The kernel's own lookup, as for a segment or datagram arriving: sock_diag
 * without a dump, one hash lookup whatever the number of sockets (a dump
 * walks every bucket of the listening hash). TCP looks up a SYN to the
 * socket's source side, UDP a datagram to its destination side. Every
 * request goes in one message and the answers come back in one call.
 * The kernel answers within send(), so the answers are read without
 * waiting: a socket some other process reads too (a raw fork) gives
 * -EAGAIN, never a hang; answers left by an earlier exchange that was cut
 * short are told apart by their sequence, new for every exchange. */
int pf_host_sockets_at(int diag, enum pf_proto proto, const struct pf_addr *addr, const uint16_t *ports,
                       unsigned n, uint64_t *inodes)
{
        struct socket_at_request requests[PF_HOST_AT_MAX];
        char answers[PF_HOST_AT_MAX][512] __attribute__((aligned(8)));
        struct sockaddr_nl from[PF_HOST_AT_MAX];
        struct iovec iov[PF_HOST_AT_MAX];
        struct mmsghdr msgs[PF_HOST_AT_MAX];
        static uint32_t exchanges;
        uint32_t seq0 = __atomic_fetch_add(&exchanges, 1, __ATOMIC_RELAXED) * PF_HOST_AT_MAX + 0x5047u;
        unsigned answered = 0;  /* a bit per request */
        int found = 0;

        if (n == 0 || n > PF_HOST_AT_MAX)
                return -EINVAL;
        for (unsigned i = 0; i < n; i++) {
                socket_at_request(&requests[i], seq0 + i, proto, addr, ports[i]);
                inodes[i] = 0;
        }
        if (send(diag, requests, n * sizeof(requests[0]), 0) < 0)
                return -errno;
        /* Each request has one answer, queued before send() returned. */
        while (__builtin_popcount(answered) < (int)n) {
                int got;

                for (unsigned i = 0; i < n; i++) {
                        iov[i] = (struct iovec){ .iov_base = answers[i], .iov_len = sizeof(answers[i]) };
                        msgs[i] = (struct mmsghdr){ .msg_hdr = { .msg_name = &from[i], .msg_namelen = sizeof(from[i]),
                                                                 .msg_iov = &iov[i], .msg_iovlen = 1 } };
                }
                got = recvmmsg(diag, msgs, n - (unsigned)__builtin_popcount(answered), MSG_DONTWAIT, NULL);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0)
                        return got < 0 ? -errno : -EIO;
                for (int m = 0; m < got; m++) {
                        int left = (int)msgs[m].msg_len;

                        if (msgs[m].msg_hdr.msg_namelen < sizeof(from[m]) || from[m].nl_pid != 0)
                                continue;       /* not from the kernel */
                        if (msgs[m].msg_hdr.msg_flags & MSG_TRUNC)
                                return -EIO;
                        for (struct nlmsghdr *h = (struct nlmsghdr *)answers[m]; NLMSG_OK(h, (unsigned)left);
                             h = NLMSG_NEXT(h, left)) {
                                unsigned i = h->nlmsg_seq - seq0;
                                uint64_t inode = 0;
                                int r;

                                if (i >= n || (answered >> i & 1))
                                        continue;       /* not an answer of this exchange */
                                r = socket_at_answer(h, &inode);
                                if (r < 0)
                                        return r;
                                answered |= 1u << i;
                                found |= r << i;
                                inodes[i] = inode;
                        }
                }
        }
        return found;
}

int pf_host_sockets(const struct pf_socket_query *q, pf_socket_visit visit, void *ctx)
{
        int r = -EAGAIN;

        for (int attempt = 0; attempt < 3 && r == -EAGAIN; attempt++)
                r = dump_once(q, visit, ctx);
        return r;
}
