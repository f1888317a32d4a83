/* SPDX-License-Identifier: MIT */
/* The shim's first layer: libc_X() calls the real symbol X (the next
 * definition after the shim's own), or the system call while dlsym() itself
 * is resolving one. Every part of the shim that needs a socket call uses
 * these, never the exported names: the shim is never re-entered from
 * inside. Inline: a call costs what a direct one does. */
#pragma once

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

enum real_symbol {
        REAL_BIND, REAL_CONNECT, REAL_LISTEN, REAL_GETSOCKNAME, REAL_GETPEERNAME,
        REAL_SENDTO, REAL_SENDMSG, REAL_RECVFROM, REAL_RECVMSG, REAL_ACCEPT, REAL_ACCEPT4,
        REAL_COUNT
};

extern void *libc_real_functions[REAL_COUNT];

/* Resolve a real symbol (libc.c): NULL while a resolution is under way on
 * this thread (dlsym itself may bind or connect): the caller then makes the
 * system call directly. */
void *libc_resolve(enum real_symbol which);
/* Resolve every one now (at load, before the program runs). */
void libc_resolve_all(void);

static inline void *real(enum real_symbol which)
{
        void *fn = __atomic_load_n(&libc_real_functions[which], __ATOMIC_ACQUIRE);

        return fn ? fn : libc_resolve(which);
}

typedef int (*addr_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*name_fn)(int, struct sockaddr *, socklen_t *);
typedef ssize_t (*sendto_fn)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
typedef ssize_t (*recvfrom_fn)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);

static inline int libc_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
        addr_fn fn = (addr_fn)real(REAL_BIND);

        return fn ? fn(fd, addr, len) : (int)syscall(SYS_bind, fd, addr, len);
}

static inline int libc_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
        addr_fn fn = (addr_fn)real(REAL_CONNECT);

        return fn ? fn(fd, addr, len) : (int)syscall(SYS_connect, fd, addr, len);
}

static inline int libc_listen(int fd, int backlog)
{
        int (*fn)(int, int) = (int (*)(int, int))real(REAL_LISTEN);

        return fn ? fn(fd, backlog) : (int)syscall(SYS_listen, fd, backlog);
}

static inline int libc_getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
        name_fn fn = (name_fn)real(REAL_GETSOCKNAME);

        return fn ? fn(fd, addr, len) : (int)syscall(SYS_getsockname, fd, addr, len);
}

static inline int libc_getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
        name_fn fn = (name_fn)real(REAL_GETPEERNAME);

        return fn ? fn(fd, addr, len) : (int)syscall(SYS_getpeername, fd, addr, len);
}

static inline ssize_t libc_sendto(int fd, const void *buf, size_t n, int flags,
                           const struct sockaddr *addr, socklen_t len)
{
        sendto_fn fn = (sendto_fn)real(REAL_SENDTO);

        return fn ? fn(fd, buf, n, flags, addr, len) : syscall(SYS_sendto, fd, buf, n, flags, addr, len);
}

static inline ssize_t libc_sendmsg(int fd, const struct msghdr *msg, int flags)
{
        sendmsg_fn fn = (sendmsg_fn)real(REAL_SENDMSG);

        return fn ? fn(fd, msg, flags) : syscall(SYS_sendmsg, fd, msg, flags);
}

static inline ssize_t libc_recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                             socklen_t *len)
{
        recvfrom_fn fn = (recvfrom_fn)real(REAL_RECVFROM);

        return fn ? fn(fd, buf, n, flags, addr, len) : syscall(SYS_recvfrom, fd, buf, n, flags, addr, len);
}

static inline ssize_t libc_recvmsg(int fd, struct msghdr *msg, int flags)
{
        recvmsg_fn fn = (recvmsg_fn)real(REAL_RECVMSG);

        return fn ? fn(fd, msg, flags) : syscall(SYS_recvmsg, fd, msg, flags);
}

static inline int libc_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
        int (*fn)(int, struct sockaddr *, socklen_t *, int) =
                (int (*)(int, struct sockaddr *, socklen_t *, int))real(REAL_ACCEPT4);

        return fn ? fn(fd, addr, len, flags) : (int)syscall(SYS_accept4, fd, addr, len, flags);
}

static inline int libc_accept(int fd, struct sockaddr *addr, socklen_t *len)
{
        name_fn fn = (name_fn)real(REAL_ACCEPT);

        return fn ? fn(fd, addr, len) : libc_accept4(fd, addr, len, 0);
}
