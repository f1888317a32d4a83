/* SPDX-License-Identifier: MIT */
/* Facts of this host that enforcers ask at run time. Async-signal-safe and
 * allocation-free, so the shim may ask them on its call path. */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "host.h"

/* The request: every socket of family/proto whose local port is `port`
 * (a sock_diag bytecode filter, so the kernel sends only those). */
struct port_request {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
        struct rtattr bytecode;
        struct inet_diag_bc_op op[2];   /* S_EQ and the port it compares */
};

static void make_request(int family, enum pf_proto proto, uint16_t port, struct port_request *r)
{
        memset(r, 0, sizeof(*r));
        r->nlh.nlmsg_len = sizeof(*r);
        r->nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
        r->nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        r->nlh.nlmsg_seq = 1;
        r->req.sdiag_family = (uint8_t)family;
        r->req.sdiag_protocol = proto == PF_UDP ? IPPROTO_UDP : IPPROTO_TCP;
        r->req.idiag_states = proto == PF_UDP ? ~0u : 1u << TCP_LISTEN;
        r->bytecode.rta_len = RTA_LENGTH(sizeof(r->op));
        r->bytecode.rta_type = INET_DIAG_REQ_BYTECODE;
        /* Match: jump to the end (accept); no match: past it (reject). */
        r->op[0] = (struct inet_diag_bc_op){ .code = INET_DIAG_BC_S_EQ, .yes = sizeof(r->op),
                                             .no = sizeof(r->op) + 4 };
        r->op[1].no = port;
}

/* Would a packet to addr:port reach this socket? Its local address is the
 * destination or a wildcard, and a UDP socket is not connected elsewhere. */
static bool receives(const struct inet_diag_msg *m, const struct pf_addr *addr)
{
        static const uint8_t any[16];
        const uint8_t *src = (const uint8_t *)m->id.idiag_src;

        if (m->idiag_family == AF_INET6 && memcmp(src, any, 16) == 0)
                return true;    /* [::] takes IPv4 too unless IPV6_V6ONLY */
        if (m->idiag_family == AF_INET6 && addr->family == PF_IPV6)
                return memcmp(src, &addr->v6, 16) == 0;
        if (m->idiag_family == AF_INET6)        /* ::ffff:a.b.c.d */
                return memcmp(src, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0 &&
                       memcmp(src + 12, &addr->v4, 4) == 0;
        if (addr->family != PF_IPV4)
                return false;
        return memcmp(src, any, 4) == 0 || memcmp(src, &addr->v4, 4) == 0;
}

/* 1 if a socket of family receives at addr:port, 0 if none, or -errno. */
static int family_receives(int family, enum pf_proto proto, const struct pf_addr *addr,
                           uint16_t port)
{
        struct port_request request;
        char buf[8192] __attribute__((aligned(8)));
        int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG), found = 0;

        if (fd < 0)
                return -errno;
        make_request(family, proto, port, &request);
        if (send(fd, &request, sizeof(request), 0) < 0) {
                found = -errno;
                goto out;
        }
        for (;;) {
                ssize_t n = recv(fd, buf, sizeof(buf), 0);
                int left = (int)n;

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        found = n < 0 ? -errno : -EIO;
                        goto out;
                }
                for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)left);
                     h = NLMSG_NEXT(h, left)) {
                        const struct inet_diag_msg *m = NLMSG_DATA(h);

                        if (h->nlmsg_seq != 1)
                                continue;
                        if (h->nlmsg_type == NLMSG_DONE)
                                goto out;
                        if (h->nlmsg_type == NLMSG_ERROR) {
                                const struct nlmsgerr *e = NLMSG_DATA(h);

                                found = e->error < 0 ? e->error : -EIO;
                                goto out;
                        }
                        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
                                continue;
                        if (ntohs(m->id.idiag_sport) == port &&
                            (proto == PF_TCP || m->id.idiag_dport == 0) && receives(m, addr))
                                found = 1;      /* read on to the end of the dump */
                }
        }
out:
        close(fd);
        return found;
}

int pf_host_port_receives(enum pf_proto proto, const struct pf_addr *addr, uint16_t port)
{
        int saved = errno;
        int r = family_receives(AF_INET6, proto, addr, port);

        if (r == 0 && addr->family == PF_IPV4)
                r = family_receives(AF_INET, proto, addr, port);
        errno = saved;
        return r;
}
