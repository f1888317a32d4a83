/* SPDX-License-Identifier: MIT */
/* A preloaded library whose constructor binds a guarded port: whichever of
 * it and the shim is initialised first, the policy must apply. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

__attribute__((constructor)) static void bind_early(void)
{
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(20002) };
        socklen_t len = sizeof(in);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int r;

        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        r = bind(fd, (struct sockaddr *)&in, sizeof(in));
        getsockname(fd, (struct sockaddr *)&in, &len);
        fprintf(stderr, "ctor bind %d %s port %u\n", r, r < 0 ? strerror(errno) : "0",
                ntohs(in.sin_port));
}
