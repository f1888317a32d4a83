/* SPDX-License-Identifier: MIT */
/* pf-uring: bind or connect through io_uring, past libc's bind() and
 * connect(): the shim cannot see it, the cgroup programs do.
 *   pf-uring bind ADDR PORT       IORING_OP_BIND (Linux 6.11), then the real port
 *   pf-uring connect ADDR PORT    IORING_OP_CONNECT (Linux 5.5)
 * Prints "WORD RET ERRNO[ PORT]" as pf-probe does; exit 77 without the op. */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "probe-addr.h"

#define PF_IORING_OP_BIND 56    /* newer than liburing's headers here */

int main(int argc, char **argv)
{
        struct sockaddr_storage ss, got;
        socklen_t len, got_len = sizeof(got);
        struct io_uring ring;
        struct io_uring_sqe *sqe;
        struct io_uring_cqe *cqe;
        bool bind_op;
        int fd, r;

        if (argc != 4 || (strcmp(argv[1], "bind") && strcmp(argv[1], "connect"))) {
                fprintf(stderr, "usage: pf-uring bind|connect ADDR PORT\n");
                return 2;
        }
        bind_op = argv[1][0] == 'b';
        len = make_addr(argv[2], argv[3], &ss);
        fd = socket(ss.ss_family, SOCK_STREAM, 0);
        if (fd < 0 || io_uring_queue_init(4, &ring, 0) < 0)
                return 77;
        sqe = io_uring_get_sqe(&ring);
        if (bind_op)
                io_uring_prep_rw(PF_IORING_OP_BIND, sqe, fd, &ss, 0, len);     /* addr2: the length */
        else
                io_uring_prep_connect(sqe, fd, (struct sockaddr *)&ss, len);
        if (io_uring_submit(&ring) != 1 || io_uring_wait_cqe(&ring, &cqe) < 0)
                return 77;
        r = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        if (bind_op && r == -EINVAL)
                return 77;              /* a kernel without IORING_OP_BIND */
        getsockname(fd, (struct sockaddr *)&got, &got_len);
        printf("%s %d %s %u\n", argv[1], r < 0 ? -1 : 0, r < 0 ? strerrorname_np(-r) : "0",
               ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
                                              : ((struct sockaddr_in6 *)&got)->sin6_port));
        io_uring_queue_exit(&ring);
        close(fd);
        return 0;
}
