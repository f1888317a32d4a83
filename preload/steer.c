/* SPDX-License-Identifier: MIT */
/* Steering under 'portfence run' as root. run attaches a BPF sk_lookup
 * program to its network namespace and tc programs to its interfaces, and
 * hands the command their maps as inherited descriptors, named in
 * PORTFENCE_STEER ("FD:ID" for each of enum pf_run_map, joined by ':').
 * A TCP listener the shim moved goes into that map when it listens, keyed
 * by the port it asked for, its family and its address (bpf/steer.bpf.h
 * looks them up): every new connection to that port then reaches it, from
 * other hosts and namespaces and from programs the shim does not run, and
 * local clients connect as they asked, with no redirect. The map drops a
 * socket when it closes. A UDP socket the shim moved goes into the map when
 * it binds, its storage holding its ports: the tc egress program sends its
 * answers from the port it asked for (bpf/steer.bpf.h). Without the variable (not root, a
 * kernel that cannot), nothing here runs. */
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

static const uint32_t map_types[PF_RUN_MAPS] = {
        [PF_RUN_STEER] = BPF_MAP_TYPE_SOCKHASH, [PF_RUN_PORTS] = BPF_MAP_TYPE_HASH,
        [PF_RUN_SOCKS] = BPF_MAP_TYPE_SK_STORAGE, [PF_RUN_DATAGRAMS] = BPF_MAP_TYPE_ARRAY,
};

static struct {
        int fd[PF_RUN_MAPS];           /* -1: no steering */
        uint32_t id[PF_RUN_MAPS];      /* the maps run made: the descriptors are checked against them */
        uint32_t netns;         /* the inode of this process's network namespace, read once */
} steering = { .fd = { -1, -1, -1, -1 } };

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
        int fd[PF_RUN_MAPS], saved = errno;
        unsigned id[PF_RUN_MAPS];
        char end;

        if (!value || sscanf(value, "%d:%u:%d:%u:%d:%u:%d:%u%c", &fd[0], &id[0], &fd[1], &id[1], &fd[2], &id[2],
                             &fd[3], &id[3], &end) != 2 * PF_RUN_MAPS)
                return;
        for (int i = 0; i < PF_RUN_MAPS; i++) {
                if (fd[i] < 3)
                        return;
                steering.fd[i] = fd[i];
                steering.id[i] = id[i];
        }
        if (!steering_maps_are_ours())
                for (int i = 0; i < PF_RUN_MAPS; i++)
                        steering.fd[i] = -1;
        errno = saved;
}

bool shim_steer_active(void)
{
        return steering.fd[PF_RUN_STEER] >= 0;
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
        for (int i = 0; i < PF_RUN_MAPS; i++)
                if (!map_is(steering.fd[i], steering.id[i], map_types[i]))
                        return false;
        return true;
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

static bool map_holds(int fd, uint32_t key, uint32_t value)
{
        union bpf_attr attr = { 0 };
        uint32_t found = 0;

        attr.map_fd = (uint32_t)fd;
        attr.key = (uint64_t)(uintptr_t)&key;
        attr.value = (uint64_t)(uintptr_t)&found;
        return sys_bpf(BPF_MAP_LOOKUP_ELEM, &attr) == 0 && found == value;
}

/* The listener in the first free slot of its key (all taken: the group it
 * belongs to is reached through the others). */
static bool insert_listener(struct pf_bpf_steer_key *key, uint64_t socket)
{
        for (key->slot = 0; key->slot < PF_BPF_STEER_SLOTS; key->slot++)
                if (map_update(steering.fd[PF_RUN_STEER], key, &socket, BPF_NOEXIST) == 0)
                        return true;
        return false;
}

/* The key of a listener (or UDP socket): the port it asked for, its family
 * and address. */
static bool listener_key(int fd, uint16_t requested, uint8_t proto, struct pf_bpf_steer_key *key)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        *key = (struct pf_bpf_steer_key){ .port = requested, .proto = proto };
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
        steered = listener_key(fd, requested, PF_BPF_TCP, &key) && steering_maps_are_ours() &&
                  map_update(steering.fd[PF_RUN_PORTS], &port, &one, BPF_ANY) == 0 && insert_listener(&key, socket);
        errno = saved;
        return steered;
}

bool shim_steer_datagrams(int fd, uint16_t requested, uint16_t target)
{
        struct pf_bpf_sock moved = { .requested = requested, .bound = target, .proto = PF_BPF_UDP, .steered = 1 };
        uint32_t port = requested, any = PF_RUN_ANY_DATAGRAM, yes = 1;
        int saved = errno, protocol = 0;
        socklen_t len = sizeof(protocol);
        struct pf_bpf_steer_key key;
        uint64_t socket = (uint64_t)fd;
        uint8_t one = 1;
        bool steered;

        /* UDP only (the programs read no UDP-Lite header), where run linked
         * the programs (a kernel before Linux 6.6 links none) */
        if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) < 0 || protocol != IPPROTO_UDP ||
            !map_holds(steering.fd[PF_RUN_DATAGRAMS], PF_RUN_WIRE, 1)) {
                errno = saved;
                return false;
        }

        /* Its storage and the egress gate before it is found: its first
         * answer leaves from the port asked for; then the port, then the
         * socket, as for a listener. */
        steered = listener_key(fd, requested, PF_BPF_UDP, &key) && steering_maps_are_ours() &&
                  map_update(steering.fd[PF_RUN_SOCKS], &fd, &moved, BPF_ANY) == 0 &&
                  map_update(steering.fd[PF_RUN_DATAGRAMS], &any, &yes, BPF_ANY) == 0 &&
                  map_update(steering.fd[PF_RUN_PORTS], &port, &one, BPF_ANY) == 0 && insert_listener(&key, socket);
        errno = saved;
        return steered;
}
