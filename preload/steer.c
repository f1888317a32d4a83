/* SPDX-License-Identifier: MIT */
/* Steering under 'portfence run' as root. run attaches a BPF sk_lookup
 * program to its network namespace and hands the command the program's
 * SOCKHASH and its set of steered ports as inherited descriptors, named in
 * PORTFENCE_STEER ("FD:ID:FD:ID").
 * A TCP listener the shim moved goes into that map when it listens, keyed
 * by the port it asked for, its family and its address (bpf/steer.bpf.h
 * looks them up): every new connection to that port then reaches it, from
 * other hosts and namespaces and from programs the shim does not run, and
 * local clients connect as they asked, with no redirect. The map drops a
 * socket when it closes. Without the variable (not root, a kernel that
 * cannot), nothing here runs. */
#include <errno.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "libc.h"
#include "portfence-api.bpf.h"
#include "shim.h"

static struct {
        int fd;                 /* the socket map; -1: no steering */
        int ports_fd;           /* the ports steered from (PF_BPF_STEERED_PORTS) */
        uint32_t map_id;        /* the maps run made: the descriptors are checked against them */
        uint32_t ports_id;
        uint32_t netns;         /* the inode of this process's network namespace, read once */
} steering = { .fd = -1, .ports_fd = -1 };

static long sys_bpf(int cmd, union bpf_attr *attr)
{
        return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

static bool steering_maps_are_ours(void);

/* At load: steering only if the descriptors named are run's maps still (a
 * daemon may have closed them before it exec'd this program). */
void shim_steer_open(void)
{
        const char *value = secure_getenv("PORTFENCE_STEER");
        int fd, ports_fd, saved = errno;
        unsigned id, ports_id;
        char end;

        if (!value || sscanf(value, "%d:%u:%d:%u%c", &fd, &id, &ports_fd, &ports_id, &end) != 4 || fd < 3 ||
            ports_fd < 3)
                return;
        steering.fd = fd;
        steering.map_id = id;
        steering.ports_fd = ports_fd;
        steering.ports_id = ports_id;
        if (!steering_maps_are_ours())
                steering.fd = steering.ports_fd = -1;
        errno = saved;
}

bool shim_steer_active(void)
{
        return steering.fd >= 0;
}

uint32_t shim_steer_netns(void)
{
        uint32_t netns = __atomic_load_n(&steering.netns, __ATOMIC_RELAXED);
        struct stat st;
        int saved = errno;

        if (!netns && stat("/proc/self/ns/net", &st) == 0) {
                netns = (uint32_t)st.st_ino;
                __atomic_store_n(&steering.netns, netns, __ATOMIC_RELAXED);
        }
        errno = saved;
        return netns;
}

/* fd names the map id of that type: the program may have closed run's
 * descriptor and reused its number. */
static bool map_is(int fd, uint32_t id, uint32_t type)
{
        struct bpf_map_info info = { 0 };
        union bpf_attr attr = { 0 };

        attr.info.bpf_fd = (uint32_t)fd;
        attr.info.info_len = sizeof(info);
        attr.info.info = (uint64_t)(uintptr_t)&info;
        return sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) == 0 && info.id == id && info.type == type;
}

static bool steering_maps_are_ours(void)
{
        return map_is(steering.fd, steering.map_id, BPF_MAP_TYPE_SOCKHASH) &&
               map_is(steering.ports_fd, steering.ports_id, BPF_MAP_TYPE_HASH);
}

static int map_update(int fd, const void *key, const void *value, uint64_t flags)
{
        union bpf_attr attr = { 0 };

        attr.map_fd = (uint32_t)fd;
        attr.key = (uint64_t)(uintptr_t)key;
        attr.value = (uint64_t)(uintptr_t)value;
        attr.flags = flags;
        return (int)sys_bpf(BPF_MAP_UPDATE_ELEM, &attr);
}

/* The listener in the first free slot of its key (all taken: the group it
 * belongs to is reached through the others). */
static bool insert_listener(struct pf_bpf_steer_key *key, uint64_t socket)
{
        for (key->slot = 0; key->slot < PF_BPF_STEER_SLOTS; key->slot++)
                if (map_update(steering.fd, key, &socket, BPF_NOEXIST) == 0)
                        return true;
        return false;
}

/* The key of a listener: the port it asked for, its family and address. */
static bool listener_key(int fd, uint16_t requested, struct pf_bpf_steer_key *key)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        *key = (struct pf_bpf_steer_key){ .port = requested, .proto = PF_BPF_TCP };
        if (libc_getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
                return false;
        key->family = (uint8_t)ss.ss_family;
        if (ss.ss_family == AF_INET)
                memcpy(key->addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        else if (ss.ss_family == AF_INET6)
                memcpy(key->addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        else
                return false;
        return true;
}

bool shim_steer_listener(int fd, uint16_t requested)
{
        struct pf_bpf_steer_key key;
        uint64_t socket = (uint64_t)fd;
        uint32_t port = requested;
        uint8_t one = 1;
        int saved = errno;
        bool steered;

        /* The port first: a lookup never skips a listener in the map. */
        steered = listener_key(fd, requested, &key) && steering_maps_are_ours() &&
                  map_update(steering.ports_fd, &port, &one, BPF_ANY) == 0 && insert_listener(&key, socket);
        errno = saved;
        return steered;
}
