/* SPDX-License-Identifier: MIT */
/* The moves table: which ports servers were moved away from, and which
 * sockets were moved, shared by every process that runs one compiled policy
 * as one user. It lives in a file beside the compiled policy in portfence's
 * run cache, mapped MAP_SHARED, so a client started by another 'portfence
 * run' follows only real moves, and a program that inherits a remapped
 * listener across exec still reports the port it asked for. Without that
 * file (a policy outside the cache, a directory someone else owns) the
 * table is private to this process and its forks.
 *
 * A bound socket is found by its real port and its inode (unique among live
 * sockets), in one of a few ways per port, so a socket that bound that port
 * itself is never mistaken for a moved one. Sockets accepted from a moved
 * listener and destinations of redirected connects are per process, indexed
 * by descriptor and checked by inode. Lock-free: every word is written
 * atomically; nothing allocates on the call path. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "host.h"
#include "libc.h"
#include "shim.h"

#define MOVES_MAGIC 0x35564d50u         /* "PMV5" */
#define MOVES_WAYS 4                    /* moved sockets remembered per real port */
#define PORT_WORDS ((PF_PORT_MAX + 1) / 64)
#define MAX_TRACKED_FDS (1 << 20)

/* One moved socket: its inode and the port it asked for, in one word each. */
struct moves_way {
        uint64_t inode;         /* 0: free */
        uint64_t requested;
};

struct moves_table {
        uint32_t magic;
        uint32_t size;
        uint32_t any_local;     /* set once a socket was moved: accept() looks only then */
        uint32_t pad;
        uint64_t moved_from[PF_PROTO_COUNT][PORT_WORDS];        /* ports servers asked for */
        uint64_t moved_to[PORT_WORDS];                          /* ports moves went to */
        /* Where the last server moved from a port went: a client follows
         * that, whatever its own decision's target (a rule with conditions
         * may have sent the server elsewhere than the client's rule would). */
        uint16_t target_of[PF_PROTO_COUNT][PF_PORT_MAX + 1];
        /* The network namespace (its inode) where the server moved from a
         * port is steered to: clients there connect as they ask. 0: none. */
        uint32_t steered_netns[PF_PROTO_COUNT][PF_PORT_MAX + 1];
        struct moves_way ways[PF_PORT_MAX + 1][MOVES_WAYS];     /* by real port */
};

/* Per descriptor of this process: an accepted or redirected socket. */
struct fd_move {
        uint64_t inode;
        uint16_t local_requested, local_real;
        uint16_t peer_requested, peer_real;
        uint8_t peer_proto;
        uint8_t steered;                /* a listener steered to: its connections come at the port asked for */
        uint32_t peer_checked;          /* coarse seconds: when the kernel last said the move holds */
};

/* How long a socket's redirect is trusted without asking the kernel again:
 * a datagram client sends many times to one destination, and the server it
 * followed may be gone (and another receive at the port asked for). */
#define PEER_TRUST_SECONDS 1

static uint32_t coarse_seconds(void)
{
        struct timespec now;

        return clock_gettime(CLOCK_MONOTONIC_COARSE, &now) == 0 ? (uint32_t)now.tv_sec : 0;
}

static struct moves_table *table;
static struct fd_move *fd_moves;
static unsigned fd_limit;
/* TCP sockets this process moved and has not put in the steering map: while
 * there are none under steering, an accepted socket needs nothing recorded
 * (its connection came addressed to the port asked for). */
static int unsteered_tcp_moves;
/* The file beside the compiled policy: DIR/HASH.pfc -> DIR/HASH.moves, in a
 * directory that only this user can write. */
static int open_file(const char *policy_path)
{
        const char *slash = strrchr(policy_path, '/'), *base = slash ? slash + 1 : policy_path;
        const char *dot = strrchr(base, '.');
        char dir[4096], name[256], tmp[280];
        size_t dir_len = slash ? (size_t)(slash - policy_path) : 0, base_len = dot ? (size_t)(dot - base) : strlen(base);
        struct stat st;
        int dirfd, fd;

        if (!slash || dir_len >= sizeof(dir) || base_len + 7 > sizeof(name))
                return -1;
        memcpy(dir, policy_path, dir_len ? dir_len : 1);
        dir[dir_len ? dir_len : 1] = '\0';
        memcpy(name, base, base_len);
        memcpy(name + base_len, ".moves", 7);
        dirfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dirfd < 0)
                return -1;
        if (fstat(dirfd, &st) < 0 || !pf_host_trusted(&st, S_IFDIR, geteuid(), false, 0022)) {
                close(dirfd);
                return -1;
        }
        fd = openat(dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
                /* Made whole under a private name, then linked: no process
                 * ever maps a file shorter than the table. */
                snprintf(tmp, sizeof(tmp), ".%s.%d", name, (int)getpid());
                fd = openat(dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd >= 0 && (ftruncate(fd, sizeof(struct moves_table)) < 0 ||
                                linkat(dirfd, tmp, dirfd, name, 0) < 0)) {
                        close(fd);
                        fd = openat(dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
                }
                unlinkat(dirfd, tmp, 0);
        }
        close(dirfd);
        if (fd >= 0 && (fstat(fd, &st) < 0 || !pf_host_trusted(&st, S_IFREG, geteuid(), false, 0077) ||
                        st.st_size != (off_t)sizeof(struct moves_table))) {
                close(fd);
                fd = -1;
        }
        return fd;
}

/* Room for every descriptor this process may open, reserved, not touched. */
static void open_fd_moves(void)
{
        struct rlimit limit;
        void *p;

        if (getrlimit(RLIMIT_NOFILE, &limit) < 0)
                return;
        fd_limit = limit.rlim_cur > MAX_TRACKED_FDS ? MAX_TRACKED_FDS : (unsigned)limit.rlim_cur;
        p = mmap(NULL, (size_t)fd_limit * sizeof(*fd_moves), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
                fd_limit = 0;
        else
                fd_moves = p;
}

static struct moves_table *map_table(int fd)
{
        void *p = mmap(NULL, sizeof(struct moves_table), PROT_READ | PROT_WRITE,
                       fd < 0 ? MAP_SHARED | MAP_ANONYMOUS : MAP_SHARED, fd, 0);

        return p == MAP_FAILED ? NULL : p;
}

static void diag_forget(void);

void shim_moves_open(const char *policy_path)
{
        int fd = policy_path ? open_file(policy_path) : -1;
        struct moves_table *t = map_table(fd);
        uint32_t zero = 0;

        if (fd >= 0)
                close(fd);
        if (!t && fd >= 0)
                t = map_table(-1);
        if (!t)
                return;         /* no table: nothing is followed or restored */
        /* A new file is all zeros: claim it. One another shim laid out
         * differently is left alone (this process keeps a private table). */
        __atomic_compare_exchange_n(&t->size, &zero, (uint32_t)sizeof(*t), false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        zero = 0;
        __atomic_compare_exchange_n(&t->magic, &zero, MOVES_MAGIC, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
        if (t->size != sizeof(*t) || t->magic != MOVES_MAGIC) {
                munmap(t, sizeof(*t));
                t = fd >= 0 ? map_table(-1) : NULL;
                if (t) {
                        t->size = (uint32_t)sizeof(*t);
                        t->magic = MOVES_MAGIC;
                }
        }
        table = t;
        open_fd_moves();
        pthread_atfork(NULL, NULL, diag_forget);
}

static void set_bit(uint64_t *bits, uint16_t port)
{
        __atomic_fetch_or(&bits[port / 64], (uint64_t)1 << (port % 64), __ATOMIC_RELEASE);
}

static bool test_bit(const uint64_t *bits, uint16_t port)
{
        return __atomic_load_n(&bits[port / 64], __ATOMIC_ACQUIRE) >> (port % 64) & 1;
}

static uint64_t socket_inode(int fd)
{
        struct stat st;
        int saved = errno;

        if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
                errno = saved;
                return 0;
        }
        return (uint64_t)st.st_ino;
}

/* A bound socket moved from `requested` to `real`, in the shared table: a
 * free way, else the way of the oldest socket (inodes only grow). */
static void insert_way(uint64_t inode, uint16_t real, uint16_t requested)
{
        struct moves_way *ways = table->ways[real];
        unsigned oldest = 0;

        for (unsigned i = 0; i < MOVES_WAYS; i++) {
                uint64_t owner = __atomic_load_n(&ways[i].inode, __ATOMIC_ACQUIRE);

                if (owner == inode || (owner == 0 && __atomic_compare_exchange_n(
                                &ways[i].inode, &owner, inode, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))) {
                        __atomic_store_n(&ways[i].requested, requested, __ATOMIC_RELEASE);
                        return;
                }
                if (owner < __atomic_load_n(&ways[oldest].inode, __ATOMIC_ACQUIRE))
                        oldest = i;
        }
        __atomic_store_n(&ways[oldest].requested, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&ways[oldest].inode, inode, __ATOMIC_RELEASE);
        __atomic_store_n(&ways[oldest].requested, requested, __ATOMIC_RELEASE);
}

static uint16_t find_way(uint64_t inode, uint16_t real)
{
        const struct moves_way *ways = table->ways[real];

        for (unsigned i = 0; i < MOVES_WAYS; i++)
                if (__atomic_load_n(&ways[i].inode, __ATOMIC_ACQUIRE) == inode)
                        return (uint16_t)__atomic_load_n(&ways[i].requested, __ATOMIC_ACQUIRE);
        return 0;
}

static struct fd_move *fd_move_of(int fd)
{
        return fd >= 0 && (unsigned)fd < fd_limit ? &fd_moves[fd] : NULL;
}

void shim_moves_record(int fd, uint64_t inode, enum shim_move kind, enum pf_proto proto, uint16_t requested,
                       uint16_t real)
{
        struct fd_move *m = fd_move_of(fd);

        if (!table)
                return;
        if (kind == SHIM_MOVE_LOCAL) {
                /* not steered to until it listens (TCP) or is described (UDP) */
                __atomic_store_n(&table->steered_netns[proto][requested], 0, __ATOMIC_RELEASE);
                if (proto == PF_TCP)
                        __atomic_fetch_add(&unsteered_tcp_moves, 1, __ATOMIC_RELAXED);
                __atomic_store_n(&table->target_of[proto][requested], real, __ATOMIC_RELEASE);
                set_bit(table->moved_from[proto], requested);
                __atomic_store_n(&table->any_local, 1, __ATOMIC_RELEASE);
        }
        set_bit(table->moved_to, real);
        if (!inode)
                inode = socket_inode(fd);
        if (!inode)
                return;
        if (kind == SHIM_MOVE_LOCAL) {
                insert_way(inode, real, requested);
                return;
        }
        if (!m)
                return;
        if (m->inode != inode)
                *m = (struct fd_move){ .inode = inode };
        m->peer_requested = requested;
        m->peer_real = real;
        m->peer_proto = (uint8_t)proto;
        m->peer_checked = coarse_seconds();
}

bool shim_moves_restore(int fd, enum shim_move kind, uint16_t real, uint16_t *requested)
{
        const struct fd_move *m = fd_move_of(fd);
        uint64_t inode;
        uint16_t found = 0;

        /* Most ports were never a move's target: no system call for them. */
        if (!table || !test_bit(table->moved_to, real))
                return false;
        inode = socket_inode(fd);
        if (!inode)
                return false;
        if (m && m->inode == inode)
                found = kind == SHIM_MOVE_LOCAL ? (m->local_real == real ? m->local_requested : 0)
                                                : (m->peer_real == real ? m->peer_requested : 0);
        if (!found && kind == SHIM_MOVE_LOCAL)
                found = find_way(inode, real);
        if (!found)
                return false;
        *requested = found;
        return true;
}

/* Where a listener is bound and the port it asked for (0: not moved): read
 * at its first accept and kept in its descriptor's slot, so every later
 * accept costs one fstat. Threads accepting on one listener may fill the
 * slot together: the inode is stored last and read first. */
static const struct fd_move *listener_move(int listener, uint64_t inode)
{
        struct fd_move *l = fd_move_of(listener);
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        uint16_t real;

        if (!l)
                return NULL;
        if (__atomic_load_n(&l->inode, __ATOMIC_ACQUIRE) == inode)
                return l;
        if (libc_getsockname(listener, (struct sockaddr *)&ss, &len) < 0 ||
            (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
                return NULL;
        real = (uint16_t)pf_sockaddr_port((struct sockaddr *)&ss, len);
        __atomic_store_n(&l->inode, 0, __ATOMIC_RELEASE);
        l->steered = 0;
        l->local_real = real;
        l->local_requested = test_bit(table->moved_to, real) ? find_way(inode, real) : 0;
        __atomic_store_n(&l->inode, inode, __ATOMIC_RELEASE);
        return l;
}

void shim_moves_inherit(int listener, int accepted)
{
        struct fd_move *m = fd_move_of(accepted);
        const struct fd_move *l;
        int saved = errno;
        uint64_t inode;

        if (!table || !m || !__atomic_load_n(&table->any_local, __ATOMIC_ACQUIRE) ||
            (shim_steer_active() && __atomic_load_n(&unsteered_tcp_moves, __ATOMIC_RELAXED) <= 0))
                return;
        inode = socket_inode(listener);
        l = inode ? listener_move(listener, inode) : NULL;
        inode = l && l->local_requested && !l->steered ? socket_inode(accepted) : 0;
        if (inode)
                *m = (struct fd_move){ .inode = inode, .local_requested = l->local_requested,
                                       .local_real = l->local_real };
        errno = saved;
}

uint16_t shim_moves_listening_from(int listener)
{
        const struct fd_move *l;
        uint64_t inode;

        if (!table || !fd_move_of(listener))
                return 0;
        inode = socket_inode(listener);
        l = inode ? listener_move(listener, inode) : NULL;
        return l ? l->local_requested : 0;
}

void shim_moves_steered(int fd, enum pf_proto proto, uint16_t requested, uint32_t netns)
{
        struct fd_move *l = fd_move_of(fd);

        if (!table)
                return;
        __atomic_store_n(&table->steered_netns[proto][requested], netns, __ATOMIC_RELEASE);
        if (proto == PF_TCP && l && !l->steered) {      /* filled by shim_moves_listening_from() */
                l->steered = 1;
                __atomic_fetch_sub(&unsteered_tcp_moves, 1, __ATOMIC_RELAXED);
        }
}

bool shim_moves_steered_here(uint16_t port)
{
        uint32_t here = 0;

        if (!table)
                return false;
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                uint32_t steered;

                if (!test_bit(table->moved_from[proto], port))
                        continue;
                steered = __atomic_load_n(&table->steered_netns[proto][port], __ATOMIC_ACQUIRE);
                if (!here)
                        here = shim_steer_netns();
                if (!steered || steered != here)
                        return false;
        }
        return here != 0;
}

bool shim_moves_any_from(uint16_t port)
{
        return table && (test_bit(table->moved_from[PF_TCP], port) || test_bit(table->moved_from[PF_UDP], port));
}

uint16_t shim_moves_target(enum pf_proto proto, uint16_t requested)
{
        return table ? __atomic_load_n(&table->target_of[proto][requested], __ATOMIC_ACQUIRE) : 0;
}

uint16_t shim_moves_redirected(int fd, uint16_t requested, uint64_t *inode)
{
        const struct fd_move *m = fd_move_of(fd);

        *inode = 0;
        if (!table || !m || m->peer_requested != requested || m->peer_proto >= PF_PROTO_COUNT ||
            m->peer_real != shim_moves_target((enum pf_proto)m->peer_proto, requested) ||
            coarse_seconds() - m->peer_checked >= PEER_TRUST_SECONDS)
                return 0;
        *inode = socket_inode(fd);      /* the descriptor may name another socket now */
        return *inode && m->inode == *inode ? m->peer_real : 0;
}

/* One sock_diag socket per process for the follow check: making one costs
 * more than the lookups (~7 us here). Checked by inode before each use (the
 * program may have closed it and taken its number: that number is then
 * left alone), used by one thread at a time (another, or a signal handler,
 * makes its own for the call), and not shared with a child (fork). */
static struct {
        int fd;
        int busy;
        uint64_t inode;
} diag = { .fd = -1 };

static int diag_take(bool *own)
{
        *own = __atomic_exchange_n(&diag.busy, 1, __ATOMIC_ACQUIRE) != 0;
        if (*own)
                return pf_host_diag_open();
        if (diag.fd >= 0 && socket_inode(diag.fd) == diag.inode)
                return diag.fd;
        diag.fd = pf_host_diag_open();
        diag.inode = diag.fd >= 0 ? socket_inode(diag.fd) : 0;
        if (diag.fd >= 0 && !diag.inode) {
                close(diag.fd);
                diag.fd = -1;
        }
        return diag.fd;
}

static void diag_give(int fd, bool own)
{
        if (own) {
                if (fd >= 0)
                        close(fd);
                return;
        }
        __atomic_store_n(&diag.busy, 0, __ATOMIC_RELEASE);
}

/* In a child: the parent's socket is closed, not shared. */
static void diag_forget(void)
{
        if (diag.fd >= 0 && socket_inode(diag.fd) == diag.inode)
                close(diag.fd);
        diag.fd = -1;
        diag.busy = 0;
}

/* The kernel's lookups in one exchange (never a dump: that walks every
 * bucket of the listening hash): does something receive at addr:port (bit
 * 0), and at addr:also (bit 1, when also is not 0)? The wildcard address
 * asks for loopback. A negative errno if the kernel cannot be asked. */
static int sockets_at(enum pf_proto proto, const struct pf_addr *addr, uint16_t port, uint16_t also,
                      uint64_t inodes[2])
{
        struct pf_addr at = *addr;
        bool own;
        int found, fd;

        pf_addr_wildcard_as_loopback(&at);
        inodes[1] = 0;
        fd = diag_take(&own);
        found = fd < 0 ? fd
                       : pf_host_sockets_at(fd, proto, &at, (uint16_t[]){ port, also }, also ? 2 : 1, inodes);
        diag_give(fd, own);
        return found;
}

bool shim_moves_follow(enum pf_proto proto, const struct pf_addr *addr, uint16_t requested,
                       uint16_t real)
{
        uint64_t inodes[2];
        int saved = errno, found;

        if (!table || !test_bit(table->moved_from[proto], requested) || !test_bit(table->moved_to, real))
                return false;
        found = sockets_at(proto, addr, requested, real, inodes);
        errno = saved;
        if (found < 0)
                return true;    /* the kernel cannot be asked: the table is trusted */
        return found == 2 && inodes[1] && find_way(inodes[1], real) == requested;
}

enum shim_bind_place shim_moves_bind_place(enum pf_proto proto, const struct pf_addr *addr, uint16_t port,
                                           uint16_t *held)
{
        uint64_t inodes[2];
        uint16_t target;
        int saved = errno, found;

        *held = 0;
        if (!table)
                return SHIM_BIND_FREE;
        target = test_bit(table->moved_from[proto], port) ? shim_moves_target(proto, port) : 0;
        found = sockets_at(proto, addr, port, target, inodes);
        errno = saved;
        if (found < 0)
                return SHIM_BIND_FREE;  /* the kernel cannot be asked: the policy decides alone */
        /* The kernel's lookup runs steering programs too: a moved server
         * steered to is found at the port it asked for, and holds it. */
        if ((found & 2) && inodes[1] && find_way(inodes[1], target) == port &&
            (!(found & 1) || inodes[0] == inodes[1])) {
                *held = target;
                return SHIM_BIND_HELD;
        }
        if (found & 1)
                return SHIM_BIND_SERVER;
        return SHIM_BIND_FREE;
}
