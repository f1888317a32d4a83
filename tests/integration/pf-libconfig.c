/* SPDX-License-Identifier: MIT */
/* A program that uses libconfig itself, then binds a guarded port: the shim
 * must neither disturb its libconfig nor be disturbed by it. */
#include <arpa/inet.h>
#include <errno.h>
#include <libconfig.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(void)
{
        struct sockaddr_in in = { .sin_family = AF_INET };
        config_t cfg;
        int port = 0, fd, r;

        config_init(&cfg);
        if (config_read_string(&cfg, "server = { port = 20003; };") != CONFIG_TRUE ||
            config_lookup_int(&cfg, "server.port", &port) != CONFIG_TRUE) {
                printf("libconfig failed\n");
                return 1;
        }
        config_destroy(&cfg);
        in.sin_port = htons((uint16_t)port);
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        r = bind(fd, (struct sockaddr *)&in, sizeof(in));
        printf("libconfig port %d bind %d %s\n", port, r, r < 0 ? strerror(errno) : "0");
        return r < 0;
}
