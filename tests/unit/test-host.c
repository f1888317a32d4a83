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
#include <stdio.h>
#include <stdlib.h>
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

/* ---- the host's mount namespace, from a procfs of the test's own ---------- */

struct fake_proc {
        char root[64];
};

static void put(const struct fake_proc *p, const char *name, const char *text)
{
        char path[256], dir[256];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", p->root, name);
        for (char *slash = strchr(path + strlen(p->root) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
                snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
                mkdir(dir, 0700);
        }
        unlink(path);                   /* a file of its own, never a link's */
        f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

/* name becomes the same namespace (inode) as self/ns/mnt. */
static void same_as_self(const struct fake_proc *p, const char *name)
{
        char self[256], path[256];

        put(p, name, "");
        snprintf(self, sizeof(self), "%s/self/ns/mnt", p->root);
        snprintf(path, sizeof(path), "%s/%s", p->root, name);
        assert_int_equal(unlink(path), 0);
        assert_int_equal(link(self, path), 0);
}

static int fake_proc_setup(void **state)
{
        static struct fake_proc p;

        snprintf(p.root, sizeof(p.root), "/tmp/pf-test-proc-XXXXXX");
        assert_non_null(mkdtemp(p.root));
        put(&p, "self/ns/mnt", "");
        put(&p, "sys/kernel/osrelease", "6.1.0-13-amd64\n");
        put(&p, "2/stat", "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0\n");   /* PF_KTHREAD set */
        *state = &p;
        return 0;
}

static int fake_proc_teardown(void **state)
{
        const struct fake_proc *p = *state;
        char command[128];

        snprintf(command, sizeof(command), "rm -rf '%s'", p->root);
        return system(command) == 0 ? 0 : -1;
}

static void test_mount_ns_of_pid1(void **state)
{
        const struct fake_proc *p = *state;

        same_as_self(p, "1/ns/mnt");
        assert_int_equal(pf_host_mount_ns(p->root), PF_NS_HOST);
        put(p, "1/ns/mnt", "");                 /* a namespace of its own */
        assert_int_equal(pf_host_mount_ns(p->root), PF_NS_PRIVATE);
}

/* pid 1 cannot be read: a kernel thread answers, if pid 2 is one. */
static void test_mount_ns_of_a_kernel_thread(void **state)
{
        const struct fake_proc *p = *state;

        same_as_self(p, "2/ns/mnt");
        assert_int_equal(pf_host_mount_ns(p->root), PF_NS_HOST);
        put(p, "2/ns/mnt", "");
        assert_int_equal(pf_host_mount_ns(p->root), PF_NS_PRIVATE);
        /* A process calling itself ") S 0 0 0 0 -1 2129984" is no kernel thread. */
        same_as_self(p, "2/ns/mnt");
        put(p, "2/stat", "2 (x) S 0 0 0 0 -1 2129984) S 1 1 1 0 -1 4194560 0 0\n");
        assert_int_equal(pf_host_mount_ns(p->root), PF_NS_UNKNOWN);
}

/* Neither can be read: unknown, unless the kernel numbers its initial
 * namespace (6.18), whose number self does not carry. */
static void test_mount_ns_unknown_or_proved_by_number(void **state)
{
        const struct fake_proc *p = *state;

        assert_int_equal(pf_host_mount_ns(p->root), PF_NS_UNKNOWN);
        put(p, "sys/kernel/osrelease", "6.18.44-fc\n");
        assert_int_equal(pf_host_mount_ns(p->root), PF_NS_PRIVATE);
        put(p, "sys/kernel/osrelease", "7.0.1\n");
        assert_int_equal(pf_host_mount_ns(p->root), PF_NS_PRIVATE);
        put(p, "sys/kernel/osrelease", "6.17.9\n");
        assert_int_equal(pf_host_mount_ns(p->root), PF_NS_UNKNOWN);
}

/* A link that resolves elsewhere than nsfs (a procfs placeholder) says nothing. */
static void test_mount_ns_placeholder_says_nothing(void **state)
{
        const struct fake_proc *p = *state;
        char path[256];

        put(p, "1/ns/mnt", "");
        snprintf(path, sizeof(path), "%s/1/ns/mnt", p->root);
        assert_int_equal(unlink(path), 0);
        assert_int_equal(symlink("/dev/null", path), 0);
        assert_int_equal(pf_host_mount_ns(p->root), PF_NS_UNKNOWN);
}

static void test_landlock_abi(void **state)
{
        (void)state;
        assert_string_equal(pf_host_landlock_unusable(-ENOSYS),
                            "this kernel has no Landlock (Linux 5.13+, enabled in the lsm= boot list)");
        assert_string_equal(pf_host_landlock_unusable(-EOPNOTSUPP),
                            "this kernel has no Landlock (Linux 5.13+, enabled in the lsm= boot list)");
        assert_string_equal(pf_host_landlock_unusable(-EPERM), "Landlock cannot be asked for its version");
        assert_string_equal(pf_host_landlock_unusable(3),
                            "this kernel's Landlock has no network rules (ABI 4, Linux 6.7+)");
        assert_null(pf_host_landlock_unusable(4));
        assert_null(pf_host_landlock_unusable(7));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_port_filters),
                cmocka_unit_test(test_visitor_stops_the_dump),
                cmocka_unit_test(test_socket_at),
                cmocka_unit_test(test_landlock_abi),
                cmocka_unit_test_setup_teardown(test_mount_ns_of_pid1, fake_proc_setup, fake_proc_teardown),
                cmocka_unit_test_setup_teardown(test_mount_ns_of_a_kernel_thread, fake_proc_setup,
                                                fake_proc_teardown),
                cmocka_unit_test_setup_teardown(test_mount_ns_unknown_or_proved_by_number, fake_proc_setup,
                                                fake_proc_teardown),
                cmocka_unit_test_setup_teardown(test_mount_ns_placeholder_says_nothing, fake_proc_setup,
                                                fake_proc_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
