/* SPDX-License-Identifier: MIT */
/* Internals of libportfence.so shared by its files. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "policy.h"

/* One decision worth a log line. */
struct shim_event {
        const char *call;               /* "bind", "connect", "listen", ... */
        enum pf_proto proto;
        const struct sockaddr *addr;    /* the address asked for */
        uint16_t port;                  /* the port asked for */
        enum pf_action action;
        uint16_t target;                /* PF_REMAP: where it went */
        int err;                        /* the errno the call returned, 0 if none */
        unsigned rule;                  /* the rule that decided, 0: the default */
        const char *rule_file;          /* where that rule is written (rule != 0) */
        unsigned rule_line;
};

/* Open the log destination of the policy (at load, never on the call path). */
void shim_log_open(const struct pf_log_settings *settings, enum pf_log_level level);
bool shim_log_enabled(enum pf_log_level level);
/* One write(2) per line, formatted without stdio: async-signal-safe. */
void shim_log_event(enum pf_log_level level, const struct shim_event *event);
void shim_log_text(enum pf_log_level level, const char *text);
/* The same, once for a whole command tree: the first process that says it
 * marks the environment its children inherit (PORTFENCE_REPORTED). Only at
 * load, before the program runs. */
void shim_log_once(enum pf_log_level level, const char *kind, const char *text);
/* true the first time kind is reported in this command tree (and marks it). */
bool shim_mark_reported(const char *kind);

/* Learning ('portfence learn'): every bind goes through as asked, and is
 * written to the learn file as one JSON line with the port the kernel gave. */
bool shim_learn_open(const char *path);
void shim_learn_record(const char *call, enum pf_proto proto, const struct sockaddr *addr,
                       uint16_t requested, uint16_t bound);

/* Format an IPv4/IPv6 address without stdio; returns the length written. */
size_t shim_format_addr(const struct sockaddr *addr, char *buf, size_t size);

/* The moves table (moves.c). A local move: a socket bound to `real` instead
 * of `requested`; a peer move: a socket whose destination `requested` was
 * sent to `real`. */
enum shim_move { SHIM_MOVE_LOCAL, SHIM_MOVE_PEER };

/* Map the table shared by the processes of the compiled policy at
 * policy_path (NULL or unusable: a table private to this process). */
void shim_moves_open(const char *policy_path);
/* inode: fd's when the caller read it already, 0 to read it here. */
void shim_moves_record(int fd, uint64_t inode, enum shim_move kind, enum pf_proto proto, uint16_t requested,
                       uint16_t real);
/* The port fd's move of this kind came from, if `real` is where it went. */
bool shim_moves_restore(int fd, enum shim_move kind, uint16_t real, uint16_t *requested);
/* A socket accepted from a moved listener reports what the listener does. */
void shim_moves_inherit(int listener, int accepted);
/* Was a server under this policy ever moved away from port (either
 * protocol)? If not, no connect to it is redirected. */
bool shim_moves_any_from(uint16_t port);
/* Where the last server moved from requested went (0: none). */
uint16_t shim_moves_target(enum pf_proto proto, uint16_t requested);
/* fd's destination `requested` was sent on by an earlier call of this
 * process (a nonblocking client asking again whether it is done, a
 * client's next datagram) to where the server still is, and the kernel said
 * so less than a second ago: that port, with no decision and no kernel
 * asked; 0 otherwise (then the caller decides and asks again). *inode: fd's inode when it had
 * to be read (0: not read), for shim_moves_record(). */
uint16_t shim_moves_redirected(int fd, uint16_t requested, uint64_t *inode);
/* Does a connect to addr:requested follow the move to real? Only when a
 * server under this policy was moved away from requested and still listens
 * at real, and nothing receives at requested now. The table first; the
 * kernel (two sock_diag lookups, never a dump) only for a port some server
 * was moved from. */
bool shim_moves_follow(enum pf_proto proto, const struct pf_addr *addr, uint16_t requested,
                       uint16_t real);
/* What a bind of addr:port meets in this network namespace, as far as the
 * kernel (one sock_diag exchange) and the table know. */
enum shim_bind_place {
        SHIM_BIND_FREE,         /* free, or held by clients only: a move may take the server away */
        SHIM_BIND_SERVER,       /* a server receives there: the kernel answers the bind as asked */
        SHIM_BIND_HELD,         /* a server under this policy was moved from it and still holds its target */
};
enum shim_bind_place shim_moves_bind_place(enum pf_proto proto, const struct pf_addr *addr, uint16_t port,
                                           uint16_t *held);
/* The port a listener of this process was moved from (0: not moved). */
uint16_t shim_moves_listening_from(int listener);
/* A server moved from requested (fd: a TCP listener, a UDP socket) is
 * steered to in the network namespace netns (steer.c): its connections and
 * datagrams come addressed to requested, and accepted ones are not
 * recorded. A new move from requested ends that. */
void shim_moves_steered(int fd, enum pf_proto proto, uint16_t requested, uint32_t netns);
/* Is every server moved from port (TCP, UDP) steered to in this process's
 * network namespace, so that a client connects or sends as it asked, of
 * either protocol, before it is asked which one it speaks? */
bool shim_moves_steered_here(uint16_t port);

/* Steering under 'portfence run' as root (steer.c): read PORTFENCE_STEER at
 * load; is there steering; this process's network namespace; put a moved
 * TCP listener in the steering map under the port it asked for; describe a
 * moved UDP socket to the programs that steer datagrams. */
void shim_steer_open(void);
bool shim_steer_active(void);
uint32_t shim_steer_netns(void);
bool shim_steer_listener(int fd, uint16_t requested);
bool shim_steer_datagrams(int fd, uint16_t requested, uint16_t target);
