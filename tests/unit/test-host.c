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

struct receives {
        const struct pf_addr *addr;
        ino_t inode;
        int result;
};

static int check_receives(const struct inet_diag_msg *m, void *ctx)
{
        struct receives *r = ctx;

        if (m->idiag_inode == r->inode)
                r->result = pf_host_socket_receives(m, PF_TCP, r->addr);
        return 0;
}

static void test_receives(void **state)
{
        struct pf_addr here, there;
        uint16_t port;
        ino_t inode;
        int fd = listener(&port, &inode);
        struct pf_socket_query q = { .family = AF_INET, .proto = PF_TCP, .ports = { port } };
        struct receives r = { .addr = &here, .inode = inode, .result = -1 };

        (void)state;
        assert_int_equal(pf_addr_parse("127.0.0.1", &here), 0);
        assert_int_equal(pf_addr_parse("127.0.0.2", &there), 0);
        assert_int_equal(pf_host_sockets(&q, check_receives, &r), 0);
        assert_int_equal(r.result, 1);
        r.addr = &there;        /* bound to 127.0.0.1: not reached at 127.0.0.2 */
        r.result = -1;
        assert_int_equal(pf_host_sockets(&q, check_receives, &r), 0);
        assert_int_equal(r.result, 0);
        close(fd);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_port_filters),
                cmocka_unit_test(test_visitor_stops_the_dump),
                cmocka_unit_test(test_receives),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
