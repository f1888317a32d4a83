/* SPDX-License-Identifier: MIT */
/* The real socket calls, resolved once (libc.h has the calls). */
#include <dlfcn.h>

#include "libc.h"

static const char *const real_names[REAL_COUNT] = {
        "bind", "connect", "listen", "getsockname", "getpeername",
        "sendto", "sendmsg", "recvfrom", "recvmsg", "accept", "accept4",
};

void *libc_real_functions[REAL_COUNT];
static __thread int resolving __attribute__((tls_model("initial-exec")));

void *libc_resolve(enum real_symbol which)
{
        void *fn;

        if (resolving)
                return NULL;
        resolving = 1;
        fn = dlsym(RTLD_NEXT, real_names[which]);
        resolving = 0;
        __atomic_store_n(&libc_real_functions[which], fn, __ATOMIC_RELEASE);
        return fn;
}

void libc_resolve_all(void)
{
        for (int i = 0; i < REAL_COUNT; i++)
                real(i);
}
