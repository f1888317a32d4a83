/* SPDX-License-Identifier: MIT */
/* Another LD_PRELOAD library that wraps bind(), to show the shim stacks:
 * it reports the port it sees and calls the next bind in line. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <stdio.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
        int (*next)(int, const struct sockaddr *, socklen_t) =
                (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");

        if (addr && addr->sa_family == AF_INET)
                fprintf(stderr, "stack: bind port %u\n",
                        ntohs(((const struct sockaddr_in *)(const void *)addr)->sin_port));
        return next(fd, addr, len);
}
