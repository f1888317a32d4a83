/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "policy.h"

struct pf_socket {
        enum pf_proto proto;
        int family;             /* AF_INET or AF_INET6 */
        uint8_t addr[16];
        uint16_t port;
        uint16_t peer_port;
        bool listening;         /* TCP LISTEN, or UDP bound and not connected */
        bool time_wait;         /* a closed TCP connection the kernel still keeps */
        unsigned long inode;
        pid_t pid;              /* 0 when no process of ours can be seen holding it */
        char program[32];
};

/* Every TCP and UDP socket of this network namespace; free() the list. */
int pf_sockets_read(struct pf_socket **list, size_t *count);
/* Fill pid and program from /proc/PID/fd. */
void pf_sockets_owners(struct pf_socket *list, size_t count);
/* The local address: "::1"; with its port: "[::1]:80". */
void pf_socket_address(const struct pf_socket *s, char *buf, size_t size);
void pf_socket_format(const struct pf_socket *s, char *buf, size_t size);
