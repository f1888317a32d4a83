/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "policy.h"

#define PF_SOCKET_OWNERS 8      /* owners listed per socket: a fork-server shares it among many */

struct pf_socket {
        enum pf_proto proto;
        int family;             /* AF_INET or AF_INET6 */
        uint8_t addr[16];
        uint16_t port;
        uint16_t peer_port;
        bool listening;         /* TCP LISTEN, or UDP bound and not connected */
        bool time_wait;         /* a closed TCP connection the kernel still keeps */
        unsigned long inode;
        unsigned owner_count;   /* processes seen holding it (0: none visible) */
        struct pf_socket_owner {
                pid_t pid;
                char program[32];
        } owners[PF_SOCKET_OWNERS];
};

/* Every TCP and UDP socket of this network namespace; free() the list. */
int pf_sockets_read(struct pf_socket **list, size_t *count);
/* Fill the owners from /proc/PID/fd (every process we may look into). */
void pf_sockets_owners(struct pf_socket *list, size_t count);
/* The local address: "::1"; with its port: "[::1]:80". */
void pf_socket_address(const struct pf_socket *s, char *buf, size_t size);
void pf_socket_format(const struct pf_socket *s, char *buf, size_t size);
