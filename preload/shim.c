/* SPDX-License-Identifier: MIT */
/* libportfence.so: an LD_PRELOAD shim that applies the policy to bind(),
 * follows remaps on connect()/sendto()/sendmsg(), and reports the requested
 * ports back through getsockname()/getpeername()/recvfrom()/recvmsg().
 *
 * Three layers per call (as socket_wrapper does): libc_X() (libc.c) calls
 * the real symbol, pf_X() holds the logic, X() is the exported one-line
 * forwarder.
 * The call path takes no lock, allocates nothing, keeps errno on success and
 * is async-signal-safe; what it does not guard goes to libc untouched. */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "host.h"
#include "libc.h"
#include "shim.h"

#define EXPORT __attribute__((visibility("default")))


/* ---- the policy ------------------------------------------------------------- */

enum { POLICY_NONE, POLICY_LOADING, POLICY_READY };

static const struct pf_policy *policy;  /* NULL when ready: everything passes */
static bool learning;                   /* 'portfence learn': record binds, decide nothing */
static bool uses_programs;              /* the policy has program conditions */
static unsigned client_first;           /* the first of client_ports; 0: none */
static int policy_state = POLICY_NONE;
static __thread int loading_here __attribute__((tls_model("initial-exec")));

/* The addresses of this host, read once: a connect() to one of them is local. */
static struct pf_addr local_addrs[2 * PF_HOST_LOCALS];
static unsigned local_count;

static void read_local_addresses(void)
{
        local_count = pf_host_local_addresses(local_addrs, 2 * PF_HOST_LOCALS);
}

static enum pf_log_level env_level(enum pf_log_level level)
{
        const char *text = secure_getenv("PORTFENCE_LOG_LEVEL");
        static const char *const names[] = { "error", "warn", "info", "debug" };

        for (int i = 0; text && i < 4; i++)
                if (strcmp(text, names[i]) == 0)
                        return (enum pf_log_level)i;
        return level;
}

/* The built-in default: this host's ephemeral range, refused. NULL (all
 * passes) only if even that cannot be read. */
static const struct pf_policy *builtin_policy(void)
{
        struct pf_policy *builtin = NULL;
        char why[PF_WHY_SIZE];

        if (pf_policy_default(&builtin, why) < 0)
                shim_log_text(PF_LEVEL_ERROR, why);
        return builtin;
}

/* A policy that cannot be used: on_error = refuse guards with the built-in
 * default; allow lets everything pass. */
static const struct pf_policy *fallback_policy(void)
{
        const char *on_error = secure_getenv("PORTFENCE_ON_ERROR");

        if (on_error && strcmp(on_error, "allow") == 0) {
                shim_log_once(PF_LEVEL_ERROR, "on-error", "on_error = allow: every bind passes");
                return NULL;
        }
        shim_log_once(PF_LEVEL_ERROR, "on-error", "on_error = refuse: guarding this host's ephemeral range");
        return builtin_policy();
}

static void load_policy(void)
{
        const char *path = secure_getenv("PORTFENCE_POLICY");
        struct pf_log_settings log = { .to = PF_LOG_STDERR, .level = PF_LEVEL_INFO };
        const struct pf_policy *loaded = NULL;
        int r = path && *path ? pf_policy_map(path, &loaded) : -ENOENT;

        read_local_addresses();
        shim_moves_open(r == 0 ? path : NULL);
        shim_steer_open();
        learning = secure_getenv("PORTFENCE_LEARN") && shim_learn_open(secure_getenv("PORTFENCE_LEARN"));
        if (r == 0) {
                pf_policy_log(loaded, &log);
                shim_log_open(&log, env_level(log.level));
                uses_programs = pf_policy_uses_programs(loaded);
                client_first = pf_portset_find(pf_policy_client_ports(loaded), 1, true);
                if (client_first > PF_PORT_MAX)
                        client_first = 0;
                policy = loaded;
                return;
        }
        shim_log_open(&log, env_level(log.level));
        if (!path || !*path) {  /* preloaded without 'portfence run' */
                policy = builtin_policy();
                return;
        }
        shim_log_once(PF_LEVEL_ERROR, "policy", r == -EINVAL ?
                      "the compiled policy in PORTFENCE_POLICY is damaged or of another build" :
                      r == -EPERM ?
                      "the compiled policy in PORTFENCE_POLICY is not this user's or root's, or others "
                      "can write it: not used" :
                      "cannot open the compiled policy in PORTFENCE_POLICY");
        policy = fallback_policy();
}

/* The policy, loaded by the first caller (our constructor, or a guarded call
 * that came before it). Other threads wait for that load; a signal handler
 * interrupting the load on the loading thread passes through (NULL). */
static const struct pf_policy *shim_policy(void)
{
        int state = __atomic_load_n(&policy_state, __ATOMIC_ACQUIRE);
        int expected = POLICY_NONE;

        if (state == POLICY_READY)
                return policy;
        if (loading_here)       /* a signal handler interrupting our own load */
                return NULL;
        loading_here = 1;
        if (__atomic_compare_exchange_n(&policy_state, &expected, POLICY_LOADING, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                load_policy();
                __atomic_store_n(&policy_state, POLICY_READY, __ATOMIC_RELEASE);
                loading_here = 0;
                return policy;
        }
        loading_here = 0;
        while (__atomic_load_n(&policy_state, __ATOMIC_ACQUIRE) != POLICY_READY)
                sched_yield();
        return policy;
}

__attribute__((constructor)) static void shim_init(void)
{
        libc_resolve_all();
        shim_policy();
}

/* ---- requests --------------------------------------------------------------- */

/* An AF_INET/AF_INET6 address with a port, as the policy sees it. */
struct request {
        int family;
        uint16_t port;
        struct pf_query query;
        char comm[16];          /* the calling thread's name, when the policy asks */
        uint64_t inode;         /* the socket's, once read (0: not yet) */
        bool again;             /* sent on by an earlier call: nothing to decide or record */
};

/* Fill req from a caller's address; false for anything the shim does not
 * guard (NULL, short, other families, port 0), which then goes to libc. */
static bool read_request(const struct sockaddr *addr, socklen_t len, struct request *req)
{
        if (!addr || len < (socklen_t)sizeof(sa_family_t))
                return false;
        req->family = addr->sa_family;
        if (req->family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)addr;

                req->port = ntohs(in->sin_port);
                pf_addr_set_in4(&req->query.addr, &in->sin_addr);
        } else if (req->family == AF_INET6 && len >= PF_SIN6_LEN_MIN) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)addr;

                req->port = ntohs(in6->sin6_port);
                pf_addr_set_in6(&req->query.addr, &in6->sin6_addr);
        } else {
                return false;
        }
        req->query.port = req->port;
        req->query.program = NULL;      /* binds only: with_caller_program() */
        req->inode = 0;
        req->again = false;
        return req->port != 0;
}

/* A bind's program condition is about the calling thread's name, the comm
 * the kernel keeps (what the cgroup programs see too): one prctl(2), only
 * for a policy that has such a condition. Connects and name calls, decided
 * with no program, never ask. */
static void with_caller_program(struct request *req)
{
        if (uses_programs && prctl(PR_GET_NAME, req->comm) == 0) {
                req->comm[sizeof(req->comm) - 1] = '\0';
                req->query.program = req->comm;
        }
}

#define PF_IPPROTO_MPTCP 262    /* IPPROTO_MPTCP, newer than some libc headers */

/* The socket's protocol, asked of the socket itself (flags such as
 * SOCK_CLOEXEC do not matter). False for sockets that are not TCP or UDP and
 * for bad descriptors, which then go to libc for the real error. */
static bool socket_proto(int fd, enum pf_proto *proto)
{
        int value = 0;
        socklen_t len = sizeof(value);
        int saved = errno;

        if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &value, &len) < 0) {
                errno = saved;
                return false;
        }
        if (value == IPPROTO_TCP || value == PF_IPPROTO_MPTCP)     /* MPTCP: TCP to the policy */
                *proto = PF_TCP;
        else if (value == IPPROTO_UDP || value == IPPROTO_UDPLITE)     /* UDP-Lite: UDP to the policy */
                *proto = PF_UDP;
        else
                return false;
        return true;
}

static bool socket_family_is(int fd, int family)
{
        int value = 0;
        socklen_t len = sizeof(value);
        int saved = errno;
        bool same = getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &len) == 0 && value == family;

        errno = saved;
        return same;
}

/* Decide a connect's destination for the socket's protocol. Returns false
 * (pass through) for a port every bind may take (one bit, no system call),
 * for sockets the shim does not guard and for an allowed port; else the
 * protocol is asked of the socket (one getsockopt) and decided. */
static bool decide_request(const struct pf_policy *p, int fd, struct request *req,
                           struct pf_verdict *out)
{
        if (pf_policy_plain_allow(p, req->port) || !socket_proto(fd, &req->query.proto))
                return false;
        pf_decide(p, &req->query, out);
        return out->action != PF_ALLOW;
}

/* A copy of the caller's address with another port; the caller's stays as
 * it was. */
static socklen_t with_port(const struct sockaddr *addr, socklen_t len, uint16_t port,
                           struct sockaddr_storage *copy)
{
        socklen_t n = len < (socklen_t)sizeof(*copy) ? len : (socklen_t)sizeof(*copy);

        memcpy(copy, addr, (size_t)n);
        pf_sockaddr_set_port((struct sockaddr *)copy, port);
        return n;
}

static void log_decision(const char *call, const struct request *req, const struct sockaddr *addr,
                         const struct pf_verdict *v, int err, enum pf_log_level level)
{
        struct shim_event event;

        if (!shim_log_enabled(level))
                return;         /* nothing built below the level */
        event = (struct shim_event){
                .call = call, .proto = req->query.proto, .addr = addr, .port = req->port,
                .action = v->action, .target = v->target, .err = err, .rule = v->rule,
                .rule_file = v->rule ? pf_policy_rule_file(policy, v->rule) : NULL,
                .rule_line = v->rule ? pf_policy_rule_line(policy, v->rule) : 0,
        };
        shim_log_event(level, &event);
}

/* ---- bind ------------------------------------------------------------------ */

static uint16_t bound_port(int fd, int *family);

/* A socket bound already: the kernel fails a second bind with EINVAL, and
 * that is what the program must see, whatever the policy says. */
static bool bound_already(int fd)
{
        int family;

        return bound_port(fd, &family) != 0;
}

/* ---- IP_LOCAL_PORT_RANGE: a port "the kernel chose" that the program chose -- */

#ifndef IP_LOCAL_PORT_RANGE
#define IP_LOCAL_PORT_RANGE 51          /* Linux 6.3 */
#endif

/* Has the program narrowed the socket's local range (IP_LOCAL_PORT_RANGE)?
 * Then the port the kernel gives a bind of port 0 is the program's choice:
 * a range of one guarded port is a bind of that port. */
static bool range_narrowed(int fd)
{
        uint32_t range = 0;
        socklen_t len = sizeof(range);
        int saved = errno;
        bool narrowed = getsockopt(fd, IPPROTO_IP, IP_LOCAL_PORT_RANGE, &range, &len) == 0 && range != 0;

        errno = saved;
        return narrowed;
}

/* A bind cannot be undone: the socket is replaced by a fresh one of the same
 * kind at the same descriptor (its options are lost: the call failed). */
static void unbind_by_replacing(int fd)
{
        int domain = 0, type = 0, protocol = 0, fresh, fd_flags = fcntl(fd, F_GETFD), fl_flags = fcntl(fd, F_GETFL);
        socklen_t len = sizeof(int);

        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
            getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) < 0)
                return;
        fresh = socket(domain, type | (fl_flags > 0 && (fl_flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0), protocol);
        if (fresh < 0)
                return;
        dup3(fresh, fd, fd_flags > 0 && (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0);
        close(fresh);
}

/* The port the kernel chose inside a narrowed range, decided as a bind of
 * it: 0, or -1 with the refusal's errno (a port the policy refuses or moves
 * is refused: it cannot be moved once taken). The cgroup programs do the
 * same in post_bind. */
static int check_chosen_port(int fd, const struct pf_policy *p)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        struct pf_verdict v;
        struct request req;

        if (libc_getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
            !read_request((struct sockaddr *)&ss, len, &req))
                return 0;
        with_caller_program(&req);
        if (pf_policy_plain_allow(p, req.port) || !socket_proto(fd, &req.query.proto))
                return 0;
        pf_decide_chosen(p, &req.query, &v);
        if (v.action == PF_ALLOW)
                return 0;
        if (v.action == PF_LOG) {
                log_decision("bind", &req, (struct sockaddr *)&ss, &v, 0, PF_LEVEL_INFO);
                return 0;
        }
        unbind_by_replacing(fd);
        log_decision("bind", &req, (struct sockaddr *)&ss, &v, v.err, PF_LEVEL_INFO);
        errno = v.err;
        return -1;
}

/* bind(port 0) on a socket whose range the program narrowed. */
static int bind_in_narrowed_range(int fd, const struct sockaddr *addr, socklen_t len, const struct pf_policy *p)
{
        int saved = errno, r = libc_bind(fd, addr, len);

        if (r == 0 && (r = check_chosen_port(fd, p)) == 0)
                errno = saved;
        return r;
}

static bool port_zero(const struct sockaddr *addr, socklen_t len)
{
        return pf_sockaddr_port(addr, len) == 0;
}

/* Learning: the bind as asked, and a record of it with the port it got. */
static int learn_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
        int saved = errno, family, r = libc_bind(fd, addr, len);
        enum pf_proto proto;
        struct request req;

        if (r == 0 && addr && len >= (socklen_t)sizeof(struct sockaddr_in) &&
            (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) && socket_proto(fd, &proto)) {
                read_request(addr, len, &req);
                shim_learn_record("bind", proto, addr, req.port, bound_port(fd, &family));
        }
        errno = r == 0 ? saved : errno;
        return r;
}

/* Linux binds an AF_INET socket given AF_UNSPEC and INADDR_ANY as AF_INET
 * (any other AF_UNSPEC bind fails with EAFNOSUPPORT): so it is decided, as
 * the same address with AF_INET. */
static const struct sockaddr *unspec_as_inet(int fd, const struct sockaddr *addr, socklen_t len,
                                             struct sockaddr_in *as_inet)
{
        if (!addr || len < (socklen_t)sizeof(*as_inet) || addr->sa_family != AF_UNSPEC)
                return addr;
        memcpy(as_inet, addr, sizeof(*as_inet));
        if (as_inet->sin_addr.s_addr != htonl(INADDR_ANY) || !socket_family_is(fd, AF_INET))
                return addr;
        as_inet->sin_family = AF_INET;
        return (const struct sockaddr *)as_inet;
}

/* The decision, with what the namespace holds now: a port a server under
 * this policy was moved from, and that it still holds, goes where it went
 * (whatever a rule with conditions says of this caller: but a refusal), so
 * the kernel answers there as it would have at the port (EADDRINUSE, or a
 * SO_REUSEPORT group joined); a port a server holds is not the collision a
 * remap prevents, and goes to the kernel as asked. Only a bind the policy
 * moves, or of a port a move came from, asks the kernel (sock_diag). */
static void meet_the_namespace(const struct request *req, struct pf_verdict *v)
{
        uint16_t held;

        if (v->action == PF_REFUSE || (v->action != PF_REMAP && !shim_moves_any_from(req->port)))
                return;
        switch (shim_moves_bind_place(req->query.proto, &req->query.addr, req->port, &held)) {
        case SHIM_BIND_HELD:
                v->action = PF_REMAP;
                v->target = held;
                break;
        case SHIM_BIND_SERVER:
                if (v->action == PF_REMAP)
                        v->action = PF_ALLOW;
                break;
        case SHIM_BIND_FREE:
                break;
        }
}

static bool is_loopback(const struct pf_addr *addr)
{
        return addr->family == PF_IPV4 ? ntohl(addr->v4.s_addr) >> 24 == 127 : IN6_IS_ADDR_LOOPBACK(&addr->v6);
}

/* A UDP socket this process moved, under 'portfence run' as root: its
 * datagrams are steered to it from now on. */
static bool steer_datagrams(int fd, uint16_t requested, uint16_t target)
{
        if (!shim_steer_active() || !shim_steer_datagrams(fd, requested, target))
                return false;
        shim_moves_steered(fd, PF_UDP, requested, shim_steer_netns());
        return true;
}

/* A server moved on an address others can reach and not steered to: once
 * per process, what the shim cannot do for its clients. (A TCP server under
 * steering is steered to when it listens.) */
static void say_unfollowed_clients(enum pf_proto proto)
{
        static int said;

        if ((proto == PF_TCP && shim_steer_active()) || !shim_log_enabled(PF_LEVEL_WARN) ||
            __atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
                return;
        if (shim_steer_active())
                shim_log_text(PF_LEVEL_WARN, "a UDP server moved on an address other hosts can reach could not "
                              "be steered to: UDP clients on other hosts, in other network namespaces and "
                              "programs started without portfence send to the port it asked for. Reserve "
                              "that port ('portfence export sysctl') or refuse it");
        else
                shim_log_text(PF_LEVEL_WARN, "a server moved on an address other hosts can reach: only clients "
                              "portfence runs or fences follow it; clients on other hosts, in other network "
                              "namespaces (published container ports) and local programs started without "
                              "portfence connect to the port it asked for and are refused. Run it as root "
                              "('portfence run' then steers TCP clients from anywhere to it), fence its cgroup "
                              "('portfence cgroup attach' does the same), reserve that port ('portfence "
                              "export sysctl') or refuse it");
}

/* A guarded bind the policy has a say in: decided, met with what the
 * namespace holds, and done. */
static int bind_decided(const struct pf_policy *p, int fd, const struct sockaddr *addr, socklen_t len,
                        struct request *req)
{
        struct sockaddr_storage copy;
        struct pf_verdict v;
        int saved = errno, r;

        /* Plain ports were let through by pf_bind() already, but for an
         * AF_UNSPEC address, whose port is read only now. */
        if (pf_policy_plain_allow(p, req->port) || !socket_proto(fd, &req->query.proto))
                return libc_bind(fd, addr, len);
        with_caller_program(req);
        pf_decide(p, &req->query, &v);
        meet_the_namespace(req, &v);    /* an allowed port a moved server holds goes where it went */
        switch (v.action) {
        case PF_ALLOW:
                return libc_bind(fd, addr, len);
        case PF_REFUSE:
                if (!socket_family_is(fd, req->family) || bound_already(fd))
                        return libc_bind(fd, addr, len);        /* the kernel's own error */
                log_decision("bind", req, addr, &v, v.err, PF_LEVEL_INFO);
                errno = v.err;
                return -1;
        case PF_REMAP:
                r = libc_bind(fd, (struct sockaddr *)&copy, with_port(addr, len, v.target, &copy));
                if (r == 0)
                        shim_moves_record(fd, 0, SHIM_MOVE_LOCAL, req->query.proto, req->port, v.target);
                log_decision("bind", req, addr, &v, r < 0 ? errno : 0, PF_LEVEL_INFO);
                if (r == 0 && !(req->query.proto == PF_UDP && steer_datagrams(fd, req->port, v.target)) &&
                    !is_loopback(&req->query.addr))
                        say_unfollowed_clients(req->query.proto);
                break;
        default:        /* PF_LOG */
                r = libc_bind(fd, addr, len);
                log_decision("bind", req, addr, &v, r < 0 ? errno : 0, PF_LEVEL_INFO);
                break;
        }
        if (r == 0)
                errno = saved;
        return r;
}

/* The request is read once; the policy asked for once. */
static int pf_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
        const struct pf_policy *p = shim_policy();
        struct sockaddr_in as_inet;
        struct request req;
        int port;

        if (!p)
                return libc_bind(fd, addr, len);
        /* The common case first: a port every bind may take, one bit. */
        port = pf_sockaddr_port(addr, len);
        if (port > 0 && !learning && pf_policy_plain_allow(p, (unsigned)port))
                return libc_bind(fd, addr, len);
        addr = unspec_as_inet(fd, addr, len, &as_inet);
        if (learning)
                return learn_bind(fd, addr, len);
        if (read_request(addr, len, &req))
                return bind_decided(p, fd, addr, len, &req);
        if (port_zero(addr, len) && range_narrowed(fd))
                return bind_in_narrowed_range(fd, addr, len, p);
        return libc_bind(fd, addr, len);
}

EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
        return pf_bind(fd, addr, len);
}

/* ---- connect, sendto, sendmsg: follow remaps to local servers ----------------- */

static bool is_local(const struct pf_addr *addr)
{
        return pf_addr_is_local(addr, local_addrs, local_count);
}

/* Where a local destination's server was moved to: the policy remaps its
 * port, a server under this policy was really moved away from it and still
 * holds its socket at the target, and nothing receives at the port now (a
 * port-0 listener, a client's source port is reached as addressed; if the
 * kernel cannot be asked, the move is followed).
 * The destination is decided as a bind of that address with no program:
 * rules conditioned on a program cannot be followed from another process. */
static bool redirect_target(int fd, const struct sockaddr *addr, socklen_t len,
                            struct request *req, struct pf_verdict *v)
{
        const struct pf_policy *p;
        uint16_t again;

        /* Most ports no server was ever moved from: one bit, nothing else.
         * One steered to here is reached at the port asked for. */
        if (!read_request(addr, len, req) || !shim_moves_any_from(req->port) ||
            shim_moves_steered_here(req->port) || !(p = shim_policy()) ||
            !pf_policy_redirect_connect(p) || !is_local(&req->query.addr))
                return false;
        again = shim_moves_redirected(fd, req->port, &req->inode);
        req->again = again != 0;
        if (again) {
                *v = (struct pf_verdict){ .action = PF_REMAP, .target = again };
                return true;
        }
        if (!decide_request(p, fd, req, v) || v->action != PF_REMAP)
                return false;
        /* Where the server really went, as the kernel's registry says too. */
        v->target = shim_moves_target(req->query.proto, req->port);
        return v->target && shim_moves_follow(req->query.proto, &req->query.addr, req->port, v->target);
}

/* client_ports: an unbound socket takes the first free one of them as its
 * local port, as if the kernel had handed it out; a test's way to make a
 * client sit on a server's port. */
static void take_client_port(const struct pf_policy *p, int fd)
{
        const struct pf_portset *ports = pf_policy_client_ports(p);
        struct sockaddr_storage ss;
        int family, saved = errno;

        if (bound_port(fd, &family) != 0 || (family != AF_INET && family != AF_INET6))
                return;
        for (unsigned port = client_first; port <= PF_PORT_MAX; port = pf_portset_find(ports, port + 1, true)) {
                socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);

                memset(&ss, 0, sizeof(ss));     /* the wildcard address */
                ss.ss_family = (sa_family_t)family;
                pf_sockaddr_set_port((struct sockaddr *)&ss, (uint16_t)port);
                if (libc_bind(fd, (struct sockaddr *)&ss, len) == 0) {
                        shim_log_text(PF_LEVEL_DEBUG, "connect: took a local port from client_ports");
                        break;
                }
                if (errno != EADDRINUSE)
                        break;
        }
        errno = saved;
}

static int pf_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
        const struct pf_policy *p = shim_policy();
        struct sockaddr_storage copy;
        struct pf_verdict v;
        struct request req;
        int saved = errno, r, port = pf_sockaddr_port(addr, len);

        /* The common case first: no server was moved from the port, one bit. */
        if (!client_first && (port <= 0 || !shim_moves_any_from((uint16_t)port)))
                return libc_connect(fd, addr, len);
        if (client_first && p && addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6))
                take_client_port(p, fd);
        if (!redirect_target(fd, addr, len, &req, &v))
                return libc_connect(fd, addr, len);
        r = libc_connect(fd, (struct sockaddr *)&copy, with_port(addr, len, v.target, &copy));
        if (!req.again && (r == 0 || errno == EINPROGRESS))
                shim_moves_record(fd, req.inode, SHIM_MOVE_PEER, req.query.proto, req.port, v.target);
        if (!req.again)         /* one line per decision, not per completion check */
                log_decision("connect", &req, addr, &v, r < 0 ? errno : 0, PF_LEVEL_DEBUG);
        if (r == 0)
                errno = saved;
        return r;
}

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
        return pf_connect(fd, addr, len);
}

static ssize_t pf_sendto(int fd, const void *buf, size_t n, int flags,
                         const struct sockaddr *addr, socklen_t len)
{
        struct sockaddr_storage copy;
        struct pf_verdict v;
        struct request req;

        if (!redirect_target(fd, addr, len, &req, &v))
                return libc_sendto(fd, buf, n, flags, addr, len);
        if (!req.again)
                shim_moves_record(fd, req.inode, SHIM_MOVE_PEER, req.query.proto, req.port, v.target);
        return libc_sendto(fd, buf, n, flags, (struct sockaddr *)&copy,
                           with_port(addr, len, v.target, &copy));
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                      const struct sockaddr *addr, socklen_t len)
{
        return pf_sendto(fd, buf, n, flags, addr, len);
}

static ssize_t pf_sendmsg(int fd, const struct msghdr *msg, int flags)
{
        struct sockaddr_storage copy;
        struct msghdr moved;
        struct pf_verdict v;
        struct request req;

        if (!msg || !redirect_target(fd, msg->msg_name, msg->msg_namelen, &req, &v))
                return libc_sendmsg(fd, msg, flags);
        moved = *msg;
        moved.msg_namelen = with_port(msg->msg_name, msg->msg_namelen, v.target, &copy);
        moved.msg_name = &copy;
        if (!req.again)
                shim_moves_record(fd, req.inode, SHIM_MOVE_PEER, req.query.proto, req.port, v.target);
        return libc_sendmsg(fd, &moved, flags);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
        return pf_sendmsg(fd, msg, flags);
}

/* ---- listen ------------------------------------------------------------------ */

static uint16_t bound_port(int fd, int *family)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int saved = errno, port;

        *family = AF_UNSPEC;
        if (libc_getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
                errno = saved;
                return 0;
        }
        *family = ss.ss_family;
        port = pf_sockaddr_port((struct sockaddr *)&ss, len);
        return port > 0 ? (uint16_t)port : 0;
}

/* A listener that was never bound gets an ephemeral port from the kernel:
 * the very collision portfence is about. unbound_listen says what to do. */
/* Learning: a listener the kernel gave a port to is recorded with it. */
static int learn_listen(int fd, int backlog)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int family, saved = errno, r;
        bool unbound = bound_port(fd, &family) == 0 && (family == AF_INET || family == AF_INET6);
        enum pf_proto proto;

        r = libc_listen(fd, backlog);
        if (r == 0 && unbound && socket_proto(fd, &proto) &&
            libc_getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
                shim_learn_record("listen", proto, (struct sockaddr *)&ss, 0, bound_port(fd, &family));
        errno = r == 0 ? saved : errno;
        return r;
}

static int listen_decided(int fd, int backlog)
{
        const struct pf_policy *p = shim_policy();
        enum pf_action action = p ? pf_policy_unbound_listen(p) : PF_ALLOW;
        int family, r;
        enum pf_proto proto;

        if (learning)
                return learn_listen(fd, backlog);
        if (p && range_narrowed(fd) && bound_port(fd, &family) == 0 && (family == AF_INET || family == AF_INET6)) {
                /* The kernel's autobind would take the program's range: bound
                 * here instead, on the wildcard, and checked. */
                struct sockaddr_storage any = { .ss_family = (sa_family_t)family };

                if (bind_in_narrowed_range(fd, (struct sockaddr *)&any, family == AF_INET ?
                                           sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6), p) < 0)
                        return -1;
                return libc_listen(fd, backlog);
        }
        if (action == PF_ALLOW && !shim_log_enabled(PF_LEVEL_DEBUG))
                return libc_listen(fd, backlog);
        if (bound_port(fd, &family) != 0 || (family != AF_INET && family != AF_INET6) ||
            !socket_proto(fd, &proto))
                return libc_listen(fd, backlog);
        if (action == PF_REFUSE) {
                shim_log_text(PF_LEVEL_INFO, "listen on an unbound socket refused (unbound_listen)");
                errno = pf_policy_refuse_errno(p);
                return -1;
        }
        r = libc_listen(fd, backlog);
        if (r == 0)
                shim_log_text(action == PF_LOG ? PF_LEVEL_INFO : PF_LEVEL_DEBUG,
                              "listen on an unbound socket: the kernel chose an ephemeral port");
        return r;
}

/* A TCP listener this process moved, under 'portfence run' as root: put in
 * the steering map, so that connections to the port it asked for reach it
 * from anywhere. */
static void steer_if_moved(int fd)
{
        uint16_t requested = shim_moves_listening_from(fd);
        enum pf_proto proto;
        int saved = errno;

        if (requested && socket_proto(fd, &proto) && proto == PF_TCP && shim_steer_listener(fd, requested))
                shim_moves_steered(fd, PF_TCP, requested, shim_steer_netns());
        errno = saved;
}

static int pf_listen(int fd, int backlog)
{
        int r = listen_decided(fd, backlog);

        if (r == 0 && shim_steer_active())
                steer_if_moved(fd);
        return r;
}

EXPORT int listen(int fd, int backlog)
{
        return pf_listen(fd, backlog);
}

/* ---- the name calls: report requested ports --------------------------------- */

/* If addr, as the kernel filled it, holds the port this very socket was
 * moved to, put the requested one back. size is the caller's buffer, len
 * the length the kernel returned: an address cut short is left alone, and
 * nothing beyond the caller's buffer is ever read or written. */
static void restore_port(int fd, struct sockaddr *addr, socklen_t size, socklen_t len,
                         enum shim_move kind)
{
        const struct pf_policy *p = shim_policy();
        struct request req;
        uint16_t requested;

        if (!p || (kind == SHIM_MOVE_LOCAL && pf_policy_getsockname(p) != PF_GETSOCKNAME_REQUESTED) ||
            len > size || !read_request(addr, len, &req) ||
            !shim_moves_restore(fd, kind, req.port, &requested))
                return;
        pf_sockaddr_set_port(addr, requested);
}

static int pf_getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
        socklen_t size = len ? *len : 0;
        int r = libc_getsockname(fd, addr, len);

        if (r == 0 && len)
                restore_port(fd, addr, size, *len, SHIM_MOVE_LOCAL);
        return r;
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
        return pf_getsockname(fd, addr, len);
}

static int pf_getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
        socklen_t size = len ? *len : 0;
        int r = libc_getpeername(fd, addr, len);

        if (r == 0 && len)
                restore_port(fd, addr, size, *len, SHIM_MOVE_PEER);
        return r;
}

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
        return pf_getpeername(fd, addr, len);
}

static ssize_t pf_recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                           socklen_t *len)
{
        socklen_t size = addr && len ? *len : 0;
        ssize_t r = libc_recvfrom(fd, buf, n, flags, addr, len);

        if (r >= 0 && addr && len)
                restore_port(fd, addr, size, *len, SHIM_MOVE_PEER);
        return r;
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                        socklen_t *len)
{
        return pf_recvfrom(fd, buf, n, flags, addr, len);
}

static ssize_t pf_recvmsg(int fd, struct msghdr *msg, int flags)
{
        socklen_t size = msg ? msg->msg_namelen : 0;
        ssize_t r = libc_recvmsg(fd, msg, flags);

        if (r >= 0 && msg && msg->msg_name)
                restore_port(fd, msg->msg_name, size, msg->msg_namelen, SHIM_MOVE_PEER);
        return r;
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
        return pf_recvmsg(fd, msg, flags);
}

/* ---- accept: a connection of a moved listener reports what it reports ------- */

static int pf_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags, bool with_flags)
{
        int r = with_flags ? libc_accept4(fd, addr, len, flags) : libc_accept(fd, addr, len);

        if (r >= 0)
                shim_moves_inherit(fd, r);
        return r;
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
        return pf_accept4(fd, addr, len, 0, false);
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
        return pf_accept4(fd, addr, len, flags, true);
}
