/* SPDX-License-Identifier: MIT */
/* policy/host.c against the real kernel: the sock_diag filter on one or two
 * ports, and which sockets receive at an address. Only sockets this test
 * opens are counted (by inode): the host may have others. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "host.h"

#define SOCKETS 3

struct seen {
        ino_t inodes[SOCKETS];
        unsigned hits[SOCKETS];
        unsigned others;        /* sockets of ours the filter should have left out */
};

static int listener(uint16_t *port, ino_t *inode)
{
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(in);
        struct stat st;
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof(in)), 0);
        assert_int_equal(listen(fd, 1), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&in, &len), 0);
        assert_int_equal(fstat(fd, &st), 0);
        *port = ntohs(in.sin_port);
        *inode = st.st_ino;
        return fd;
}

static int count(const struct inet_diag_msg *m, void *ctx)
{
        struct seen *seen = ctx;

        for (int i = 0; i < SOCKETS; i++)
                if (m->idiag_inode == seen->inodes[i])
                        seen->hits[i]++;
        return 0;
}

static void test_port_filters(void **state)
{
        struct seen seen = { 0 };
        uint16_t ports[SOCKETS];
        int fds[SOCKETS];

        (void)state;
        for (int i = 0; i < SOCKETS; i++)
                fds[i] = listener(&ports[i], &seen.inodes[i]);

        struct pf_socket_query two = { .family = AF_INET, .proto = PF_TCP, .states = 1u << TCP_LISTEN,
                                       .ports = { ports[0], ports[2] } };
        assert_int_equal(pf_host_sockets(&two, count, &seen), 0);
        assert_int_equal(seen.hits[0], 1);
        assert_int_equal(seen.hits[1], 0);      /* filtered out by the kernel */
        assert_int_equal(seen.hits[2], 1);

        memset(seen.hits, 0, sizeof(seen.hits));
        struct pf_socket_query one = { .family = AF_INET, .proto = PF_TCP, .ports = { ports[1] } };
        assert_int_equal(pf_host_sockets(&one, count, &seen), 0);
        assert_int_equal(seen.hits[0] + seen.hits[2], 0);
        assert_int_equal(seen.hits[1], 1);

        memset(seen.hits, 0, sizeof(seen.hits));
        struct pf_socket_query all = { .family = AF_INET, .proto = PF_TCP };
        assert_int_equal(pf_host_sockets(&all, count, &seen), 0);
        for (int i = 0; i < SOCKETS; i++)
                assert_int_equal(seen.hits[i], 1);

        memset(seen.hits, 0, sizeof(seen.hits));
        struct pf_socket_query udp = { .family = AF_INET, .proto = PF_UDP, .ports = { ports[0] } };
        assert_int_equal(pf_host_sockets(&udp, count, &seen), 0);
        assert_int_equal(seen.hits[0], 0);      /* a TCP socket is no UDP one */
        for (int i = 0; i < SOCKETS; i++)
                close(fds[i]);
}

static int stop_at_first(const struct inet_diag_msg *m, void *ctx)
{
        (void)m;
        (void)ctx;
        return -ECANCELED;
}

static void test_visitor_stops_the_dump(void **state)
{
        struct pf_socket_query all = { .family = AF_INET, .proto = PF_TCP };
        uint16_t port;
        ino_t inode;
        int fd = listener(&port, &inode);

        (void)state;
        assert_int_equal(pf_host_sockets(&all, stop_at_first, NULL), -ECANCELED);
        close(fd);
}

static int udp_socket(int family, const char *addr, uint16_t *port, ino_t *inode, bool v6only)
{
        struct sockaddr_storage ss = { .ss_family = (sa_family_t)family };
        socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        struct stat st;
        int one = 1, fd = socket(family, SOCK_DGRAM, 0);

        assert_true(fd >= 0);
        if (family == AF_INET6) {
                assert_int_equal(inet_pton(AF_INET6, addr, &((struct sockaddr_in6 *)&ss)->sin6_addr), 1);
                if (v6only)
                        assert_int_equal(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)), 0);
        } else {
                assert_int_equal(inet_pton(AF_INET, addr, &((struct sockaddr_in *)&ss)->sin_addr), 1);
        }
        assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
        assert_int_equal(fstat(fd, &st), 0);
        *port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                        : ((struct sockaddr_in6 *)&ss)->sin6_port);
        *inode = st.st_ino;
        return fd;
}

/* The kernel's lookup finds what receives at an address, as a connection
 * or a datagram to it would: the listener's own inode, nothing at another
 * address, a dual-stack [::] socket for IPv4 unless IPV6_V6ONLY. */
static void test_socket_at(void **state)
{
        struct pf_addr here, there;
        uint64_t found[PF_HOST_AT_MAX];
        uint16_t port, uport, v6port, onlyport;
        ino_t inode, uinode, v6inode, onlyinode;
        int fd = listener(&port, &inode);
        int u = udp_socket(AF_INET, "127.0.0.1", &uport, &uinode, false);
        int v6 = udp_socket(AF_INET6, "::", &v6port, &v6inode, false);
        int only = udp_socket(AF_INET6, "::", &onlyport, &onlyinode, true);
        int diag = pf_host_diag_open();

        (void)state;
        assert_true(diag >= 0);
        assert_int_equal(pf_addr_parse("127.0.0.1", &here), 0);
        assert_int_equal(pf_addr_parse("127.0.0.2", &there), 0);
        assert_int_equal(pf_host_sockets_at(diag, PF_TCP, &here, &port, 1, found), 1);
        assert_int_equal(found[0], inode);
        assert_int_equal(pf_host_sockets_at(diag, PF_TCP, &there, &port, 1, found), 0);
        assert_int_equal(pf_host_sockets_at(diag, PF_UDP, &here, &port, 1, found), 0);
        assert_int_equal(pf_host_sockets_at(diag, PF_UDP, &here, &uport, 1, found), 1);
        assert_int_equal(found[0], uinode);
        assert_int_equal(pf_host_sockets_at(diag, PF_UDP, &here, &v6port, 1, found), 1);
        assert_int_equal(found[0], v6inode);
        assert_int_equal(pf_host_sockets_at(diag, PF_UDP, &here, &onlyport, 1, found), 0);
        /* Several in one exchange, each answered in its place. */
        assert_int_equal(pf_host_sockets_at(diag, PF_UDP, &here, (uint16_t[]){ onlyport, uport, port, v6port }, 4,
                                            found), 0xa);
        assert_int_equal(found[0], 0);
        assert_int_equal(found[1], uinode);
        assert_int_equal(found[3], v6inode);
        assert_int_equal(pf_host_sockets_at(diag, PF_TCP, &here, (uint16_t[]){ uport, port }, 2, found), 2);
        assert_int_equal(found[1], inode);
        assert_int_equal(pf_host_sockets_at(diag, PF_TCP, &here, &port, 0, found), -EINVAL);
        assert_int_equal(pf_host_sockets_at(diag, PF_TCP, &here, &port, PF_HOST_AT_MAX + 1, found), -EINVAL);
        close(fd);
        close(u);
        close(v6);
        close(only);
        assert_int_equal(pf_host_sockets_at(diag, PF_TCP, &here, &port, 1, found), 0);
        close(diag);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_port_filters),
                cmocka_unit_test(test_visitor_stops_the_dump),
                cmocka_unit_test(test_socket_at),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
