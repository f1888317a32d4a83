/* SPDX-License-Identifier: MIT */
/* The policy core: load a libconfig policy file, validate it whole, compile it
 * into per-port tables, and answer "what happens to this bind?". Every
 * enforcer asks pf_decide(); none re-implements a decision. */
#pragma once

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <stdint.h>

#include "portset.h"
#include "profiles.h"

enum pf_action { PF_ALLOW, PF_LOG, PF_REFUSE, PF_REMAP };
enum pf_family { PF_IPV4, PF_IPV6 };
enum pf_on_error { PF_ON_ERROR_REFUSE, PF_ON_ERROR_ALLOW };
enum pf_log_to { PF_LOG_STDERR, PF_LOG_SYSLOG, PF_LOG_FILE };
enum pf_log_level { PF_LEVEL_ERROR, PF_LEVEL_WARN, PF_LEVEL_INFO, PF_LEVEL_DEBUG };
enum pf_log_format { PF_FORMAT_TEXT, PF_FORMAT_JSON };
/* What getsockname() reports on a remapped socket. */
enum pf_getsockname { PF_GETSOCKNAME_REQUESTED, PF_GETSOCKNAME_REAL };

/* Where the built-in default is used: no -c, no $PORTFENCE_CONFIG and no
 * /etc/portfence.conf. */
#define PF_POLICY_BUILTIN "(built-in)"
#define PF_POLICY_SYSTEM "/etc/portfence.conf"

/* A socket address as the policy sees it. An IPv4-mapped IPv6 address is
 * stored as IPv4 (pf_addr_set_in6 does that). */
struct pf_addr {
        enum pf_family family;
        union {
                struct in_addr v4;
                struct in6_addr v6;
        };
};

struct pf_query {
        enum pf_proto proto;
        struct pf_addr addr;
        uint16_t port;          /* host byte order; 0 = kernel's choice */
        const char *program;    /* program name (basename), NULL if unknown */
};

struct pf_verdict {
        enum pf_action action;
        uint16_t target;        /* PF_REMAP: the port bound instead; else 0 */
        int err;                /* PF_REFUSE: the errno to return; else 0 */
        unsigned rule;          /* 1-based index of the matching rule; 0: none */
        bool guarded;           /* the port is in the guarded (ephemeral) set */
};

/* Errors of one load, each "FILE:LINE: text" (or "FILE: text" if line 0). */
struct pf_diag_entry {
        unsigned line;
        char *text;
        char *file;             /* an @include'd file it is in; NULL: the policy's own */
};

struct pf_diag {
        char *file;
        struct pf_diag_entry *entries;
        size_t count;
};

void pf_diag_free(struct pf_diag *diag);
/* Format entry i as "FILE:LINE: text" into buf; returns buf. */
const char *pf_diag_format(const struct pf_diag *diag, size_t i, char *buf, size_t size);

struct pf_policy;

/* Choose the policy file: explicit (-c) if not NULL, else $PORTFENCE_CONFIG
 * (ignored in secure-execution mode), else /etc/portfence.conf if it exists,
 * else PF_POLICY_BUILTIN. */
const char *pf_policy_path(const char *explicit_path);

/* Load and compile a policy. Returns 0 and sets *out, or a negative errno
 * (-EINVAL for a broken policy, the I/O error otherwise) with every problem
 * found in diag and *out untouched. path PF_POLICY_BUILTIN loads the default. */
int pf_policy_load(const char *path, struct pf_policy **out, struct pf_diag *diag);
/* The same from text in memory; name is used in messages. */
int pf_policy_load_text(const char *text, const char *name, struct pf_policy **out,
                        struct pf_diag *diag);
void pf_policy_free(struct pf_policy *policy);
/* Where rules go in a policy's text, as its parser sees it: the offset just
 * after the "(" that opens the text's own 'rules' list (returns 1), or the
 * end of the text when it has none (returns 0). -EXDEV when an @include'd
 * file holds the list, -EINVAL when the text does not parse (the loader
 * says why). include_dir: where its @include files are, or NULL. */
int pf_policy_rules_opening(const char *text, const char *include_dir, size_t *offset);

/* The built-in default without any file: guard this host's ephemeral range,
 * refuse. Returns 0, or a negative errno with a reason in why. */
int pf_policy_default(struct pf_policy **out, char *why);
/* The learn file ('portfence learn'): one JSON object per bind on a line,
 * written by the shim, read by learn. Its keys, named once for both. */
#define PF_LEARN_CALL "call"
#define PF_LEARN_PROTO "proto"
#define PF_LEARN_FAMILY "family"
#define PF_LEARN_ADDRESS "address"
#define PF_LEARN_PORT "port"           /* the port asked for */
#define PF_LEARN_BOUND "bound"         /* the port the kernel gave */
#define PF_LEARN_PID "pid"
#define PF_LEARN_PROGRAM "program"
/* A policy that guards what base guards and only logs: nothing refused or
 * moved, every guarded bind said (learning). 0, or -ENOMEM. */
int pf_policy_log_only(const struct pf_policy *base, struct pf_policy **out);

/* A compiled policy as a file: written whole (to a temporary name, then
 * renamed, all below one directory descriptor), and mapped back read-only
 * with every offset checked: only a regular file (no symlink followed) of
 * this user or root that no one else can write (-EPERM otherwise). For the
 * enforcers that must not link libconfig. Negative errno on failure. */
int pf_policy_save(const struct pf_policy *policy, const char *path);
int pf_policy_save_at(const struct pf_policy *policy, int dirfd, const char *name);
int pf_policy_map(const char *path, const struct pf_policy **out);
int pf_policy_map_fd(int fd, const struct pf_policy **out);
void pf_policy_unmap(const struct pf_policy *policy);
/* A hash of the compiled block, e.g. to name its file. */
uint64_t pf_policy_hash(const struct pf_policy *policy);

/* The decision for one bind. Pure: no syscall, no allocation, no lock. */
void pf_decide(const struct pf_policy *policy, const struct pf_query *query,
               struct pf_verdict *out);

/* The decision for a port the kernel chose for a bind of port 0 in a range
 * the program narrowed to it (IP_LOCAL_PORT_RANGE): a bind of that port,
 * but one the policy moves is refused (the port is taken by then: it can
 * no longer be moved). The cgroup programs' check_chosen() keeps a copy. */
void pf_decide_chosen(const struct pf_policy *policy, const struct pf_query *query, struct pf_verdict *out);

/* For enforcers that cannot call pf_decide() (the BPF programs): the rules
 * that can decide a bind of port, in order. Every step but the last has
 * conditions (family, address, program) to check per call; the last has
 * none: a rule, the default for a guarded port, or allow. Fills at most max
 * steps and returns their count, or -E2BIG when the port needs more. */
struct pf_step {
        enum pf_action action;
        uint16_t target;        /* PF_REMAP */
        unsigned rule;          /* 1-based, 0 for the default / not guarded */
        bool conditional;
};
int pf_policy_chain(const struct pf_policy *policy, enum pf_proto proto, unsigned port,
                    struct pf_step *steps, unsigned max);
/* The unconditional verdict for port: what happens to a bind of it when no
 * rule with conditions matches (the last step of its chain). Enforcers and
 * exports that cannot check conditions use this, never a verdict of their
 * own. */
void pf_policy_fallback(const struct pf_policy *policy, enum pf_proto proto, unsigned port,
                        struct pf_step *out);

/* The conditions of a rule, for the same enforcers. */
struct pf_conditions {
        bool has_family;
        enum pf_family family;
        bool has_cidr;
        struct pf_addr cidr_addr;
        unsigned cidr_prefix;
        const char *program;    /* glob, or NULL */
};
void pf_policy_conditions(const struct pf_policy *policy, unsigned rule, struct pf_conditions *out);
bool pf_conditions_match(const struct pf_conditions *conditions, const struct pf_query *query);

/* Accessors for enforcers and the command line. */
const char *pf_policy_name(const struct pf_policy *policy);
const struct pf_portset *pf_policy_guarded(const struct pf_policy *policy, enum pf_proto proto);
const struct pf_portset *pf_policy_pool(const struct pf_policy *policy);
/* client_ports: local ports outgoing connects take (empty: the kernel's). */
const struct pf_portset *pf_policy_client_ports(const struct pf_policy *policy);
/* The ports the policy gives to servers of proto: ports of unconditional
 * allow rules (the guarded ones for a rule without ports), and every remap
 * target (a rule's "to" range, the pool when a remap uses it). Clients must
 * stay off them. */
/* The TCP ports a bind may take under Landlock, which allows or refuses a
 * port whoever binds it and knows no remap: every port some step of its
 * chain allows or logs (a program or address condition counts as met: a
 * rule that allows some callers allows the port), and every port a remap
 * sends servers to. Port 0 is the caller's to add. */
void pf_policy_landlock_tcp(const struct pf_policy *policy, struct pf_portset *out);

/* The ports servers of the policy may take (either protocol: the kernel's
 * reservations are for both) that a network namespace with this
 * ip_local_port_range and these reservations could hand to a client: what
 * a reservation there must add (empty: the servers are safe there). */
void pf_policy_unreserved_server_ports(const struct pf_policy *policy, const struct pf_portset *range,
                                       const struct pf_portset *reserved, struct pf_portset *out);
void pf_policy_server_ports(const struct pf_policy *policy, enum pf_proto proto,
                            struct pf_portset *out);
unsigned pf_policy_rule_count(const struct pf_policy *policy);
unsigned pf_policy_rule_line(const struct pf_policy *policy, unsigned rule);
/* How ports moved into the pool share it (the default remap and rules
 * without "to" all count from the pool's start, and wrap around it):
 * sources (TCP ports moved there), the most any one pool port receives,
 * and where: two ports of proto that both go to target. */
struct pf_pool_share {
        unsigned sources;
        unsigned most;
        enum pf_proto proto;
        uint16_t target;
        uint16_t example[2];
};
int pf_policy_pool_share(const struct pf_policy *policy, struct pf_pool_share *out);   /* 0 or -ENOMEM */

/* The file rule is written in: the policy's, or an @include'd one. */
const char *pf_policy_rule_file(const struct pf_policy *policy, unsigned rule);
enum pf_action pf_policy_rule_action(const struct pf_policy *policy, unsigned rule);
/* A bind of port is allowed, without a word, over TCP and UDP whatever the
 * caller (no rule with conditions covers it, no log): what pf_decide()
 * would say for every query, in one bit. */
bool pf_policy_plain_allow(const struct pf_policy *p, unsigned port);
/* All of them at once (for the kernel programs' copy). */
const struct pf_portset *pf_policy_plain_allow_set(const struct pf_policy *p);
bool pf_policy_redirect_connect(const struct pf_policy *policy);
/* Does a cgroup fence steer new connections to a moved server's port to it? */
bool pf_policy_steer(const struct pf_policy *policy);
/* May a bind be moved: a rule that remaps, or a default remap of guarded ports? */
bool pf_policy_moves_servers(const struct pf_policy *policy);
/* Does portfence run restrict its command with Landlock by default? */
bool pf_policy_landlock(const struct pf_policy *policy);
enum pf_getsockname pf_policy_getsockname(const struct pf_policy *policy);
enum pf_action pf_policy_unbound_listen(const struct pf_policy *policy);
enum pf_on_error pf_policy_on_error(const struct pf_policy *policy);
int pf_policy_refuse_errno(const struct pf_policy *policy);

struct pf_log_settings {
        enum pf_log_to to;
        const char *path;       /* PF_LOG_FILE; points into the policy */
        enum pf_log_level level;
        enum pf_log_format format;
};
void pf_policy_log(const struct pf_policy *policy, struct pf_log_settings *out);

/* Names for the enums above, as the policy file spells them. */
const char *pf_action_name(enum pf_action action);
const char *pf_errno_name(int err);
int pf_errno_parse(const char *name, int *out);  /* 0, or -EINVAL for an unknown name */

/* Fill a pf_addr from network-order data; maps ::ffff:a.b.c.d to IPv4. */
void pf_addr_set_in4(struct pf_addr *addr, const struct in_addr *in);
/* Is a destination this host's own: loopback, the wildcard, or one of
 * locals (this host's addresses, pf_host_local_addresses())? The cgroup
 * programs' is_local() keeps a copy (the parity tests hold the two alike). */
bool pf_addr_is_local(const struct pf_addr *addr, const struct pf_addr *locals, unsigned count);
/* The wildcard address as a destination: loopback, where a connect to it
 * goes and every server on all addresses receives. Others unchanged. */
void pf_addr_wildcard_as_loopback(struct pf_addr *addr);
/* The port of an AF_INET or AF_INET6 socket address of len bytes (an IPv6
 * one as short as the kernel takes, without sin6_scope_id, included), or -1
 * for anything else. */
#define PF_SIN6_LEN_MIN ((socklen_t)offsetof(struct sockaddr_in6, sin6_scope_id))
int pf_sockaddr_port(const struct sockaddr *addr, socklen_t len);
/* Set the port of an AF_INET or AF_INET6 socket address (checked before). */
void pf_sockaddr_set_port(struct sockaddr *addr, uint16_t port);
void pf_addr_set_in6(struct pf_addr *addr, const struct in6_addr *in6);
/* Parse "127.0.0.1", "::1" or "::ffff:10.0.0.1" into addr. */
int pf_addr_parse(const char *text, struct pf_addr *addr);

/* Escaping of text a program controls (escape.c): the form of byte c in a
 * JSON string or on a text line, or NULL when c is written as it is. */
#define PF_ESCAPE_SIZE 8
const char *pf_json_escape(unsigned char c, char buf[PF_ESCAPE_SIZE]);
const char *pf_text_escape(unsigned char c, char buf[PF_ESCAPE_SIZE]);

/* Glob match on a program name: '*', '?', '[...]' (with '!' or '^'). */
bool pf_glob_match(const char *pattern, const char *name);
/* A program condition: glob against a thread's comm (at most 15 characters,
 * what the kernel keeps of a name), the glob cut as the cgroup programs cut
 * it, so both enforcers give one answer. */
bool pf_program_match(const char *glob, const char *comm);
/* Does any rule of the policy have a program condition? */
bool pf_policy_uses_programs(const struct pf_policy *policy);

/* How a glob fares against the kernel's 16-byte comm (15 characters of the
 * name), which the cgroup programs match as HEAD or HEAD*TAIL with '?'. */
enum pf_comm_glob {
        PF_COMM_EXACT,          /* matched as the shim matches it */
        PF_COMM_TRUNCATED,      /* a part longer than 15 characters: cut to 15 */
        PF_COMM_UNSUPPORTED,    /* '[' or more than one '*' */
};
enum pf_comm_glob pf_glob_comm_form(const char *glob);
/* The glob as the kernel matches it: HEAD, or HEAD*TAIL, each cut to the
 * 15 characters a comm keeps ('?' matches any one). Filled unless
 * PF_COMM_UNSUPPORTED. */
#define PF_COMM_LEN 15
struct pf_comm_parts {
        char head[PF_COMM_LEN + 1];
        char tail[PF_COMM_LEN + 1];
        size_t head_len, tail_len;
        bool star;
};
enum pf_comm_glob pf_glob_comm_split(const char *glob, struct pf_comm_parts *out);
/* What a user should know of a program glob (its matching differs from
 * a plain name match, or the kernel refuses it), or NULL. */
const char *pf_program_glob_note(const char *glob);
/* A note saying what the kernel does with such a glob. */
const char *pf_comm_glob_note(enum pf_comm_glob form);
