/* SPDX-License-Identifier: MIT */
/* The address parser of the test probes: "HOST" "PORT" as IPv4 or IPv6. */
#pragma once

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static inline socklen_t make_addr(const char *host, const char *port, struct sockaddr_storage *ss)
{
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

        memset(ss, 0, sizeof(*ss));
        if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
                in->sin_family = AF_INET;
                in->sin_port = htons((uint16_t)atoi(port));
                return sizeof(*in);
        }
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) {
                fprintf(stderr, "probe: bad address '%s'\n", host);
                exit(2);
        }
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)atoi(port));
        return sizeof(*in6);
}
