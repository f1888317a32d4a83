/* SPDX-License-Identifier: MIT */
/* portfence run --landlock: the command and its children restricted to
 * binding the TCP ports the policy lets a server take (Landlock network
 * rules, Linux 6.7+), static binaries, Go programs, io_uring and raw system
 * calls included: what the shim cannot see is still refused (EACCES). No
 * privilege is needed. */
#include <errno.h>
#include <linux/types.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cli.h"
#include "host.h"

/* The kernel's interface (linux/landlock.h of Linux 6.7 and later: older
 * headers lack the network part; the numbers are the kernel's ABI). */
#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_RULE_NET_PORT 2
#define LL_ACCESS_NET_BIND_TCP (1ULL << 0)

struct ll_ruleset_attr {
        __u64 handled_access_fs;
        __u64 handled_access_net;
};

struct ll_net_port_attr {
        __u64 allowed_access;
        __u64 port;
} __attribute__((packed));

int pf_landlock_abi(void)
{
        long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);

        return abi < 0 ? -errno : (int)abi;
}

static int allow_port(int fd, unsigned port)
{
        struct ll_net_port_attr rule = { .allowed_access = LL_ACCESS_NET_BIND_TCP, .port = port };

        return syscall(SYS_landlock_add_rule, fd, LL_RULE_NET_PORT, &rule, 0) < 0 ? -errno : 0;
}

/* A ruleset allowing binds of port 0 (the kernel chooses, as every enforcer
 * lets it) and of exactly ports: a descriptor, or -errno. */
static int make_ruleset(const struct pf_portset *ports, unsigned *rules)
{
        struct ll_ruleset_attr attr = { .handled_access_net = LL_ACCESS_NET_BIND_TCP };
        int fd = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0), r;

        *rules = 0;
        if (fd < 0)
                return -errno;
        r = allow_port(fd, 0);
        /* No range rules in Landlock: one per port (see docs/performance.md). */
        for (unsigned port = pf_portset_find(ports, 1, true); r == 0 && port <= PF_PORT_MAX;
             port = pf_portset_find(ports, port + 1, true)) {
                r = allow_port(fd, port);
                ++*rules;
        }
        if (r < 0) {
                close(fd);
                return r;
        }
        return fd;
}

int pf_landlock_restrict(const struct pf_policy *policy, unsigned *rules, char *why)
{
        const char *unusable = pf_host_landlock_unusable(pf_landlock_abi());
        struct pf_portset ports;
        int fd, r = 0;

        if (unusable) {
                snprintf(why, PF_WHY_SIZE, "%s", unusable);
                return -EOPNOTSUPP;
        }
        pf_policy_landlock_tcp(policy, &ports);
        fd = make_ruleset(&ports, rules);
        if (fd < 0) {
                snprintf(why, PF_WHY_SIZE, "cannot make the Landlock ruleset: %s", strerror(-fd));
                return fd;
        }
        /* Landlock asks that no child gain privileges the ruleset would not
         * bind (setuid programs run without them). */
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || syscall(SYS_landlock_restrict_self, fd, 0) < 0) {
                r = -errno;
                snprintf(why, PF_WHY_SIZE, "cannot restrict this process with Landlock: %s", strerror(-r));
        }
        close(fd);
        return r;
}
