/* SPDX-License-Identifier: MIT */
/* A preloaded library that makes the process's kernel one before Linux
 * 6.6, for tc links alone: bpf(BPF_LINK_CREATE) of a tc attach point fails
 * with EINVAL, as such a kernel answers. libbpf calls bpf() through
 * syscall(). */
#include <dlfcn.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stdarg.h>
#include <sys/syscall.h>

#define TCX_INGRESS 46
#define TCX_EGRESS 47

long syscall(long number, ...)
{
        static long (*real)(long, ...);
        long a[6];
        va_list ap;

        va_start(ap, number);
        for (int i = 0; i < 6; i++)
                a[i] = va_arg(ap, long);
        va_end(ap);
        if (number == SYS_bpf && a[0] == BPF_LINK_CREATE) {
                const union bpf_attr *attr = (const union bpf_attr *)a[1];

                if (attr->link_create.attach_type == TCX_INGRESS || attr->link_create.attach_type == TCX_EGRESS) {
                        errno = EINVAL;
                        return -1;
                }
        }
        if (!real)
                real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
        return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
