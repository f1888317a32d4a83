/* SPDX-License-Identifier: MIT */
/* Steering for 'portfence run' as root: run-steer.bpf.c loaded and linked to
 * the network namespace run starts in, its map and link left to the command
 * as inherited descriptors (see pf_bpf_run_steering()). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader.h"
#include "run-steer.skel.h"
#include "tables.h"

/* A descriptor the command inherits: not close-on-exec, above 2. */
static int inheritable(int fd)
{
        return fcntl(fd, F_DUPFD, 3);
}

/* The map's id, 0 if it cannot be read. */
static uint32_t map_id(const struct bpf_map *map)
{
        struct bpf_map_info info = {};
        uint32_t len = sizeof(info);

        return bpf_obj_get_info_by_fd(bpf_map__fd(map), &info, &len) == 0 ? info.id : 0;
}

int pf_bpf_run_steering(struct pf_run_steering *out, char *why)
{
        int *const fds[] = { &out->map_fd, &out->ports_fd, &out->link_fd };
        struct run_steer_bpf *skel;
        struct bpf_link *link;
        int netns, r = 0;

        out->map_fd = out->ports_fd = out->link_fd = -1;
        skel = run_steer_bpf__open_and_load();
        if (!skel)
                return pf_bpf_fail(-errno, why, "cannot load the steering program: %s", strerror(errno));
        netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        link = netns < 0 ? NULL : bpf_program__attach_netns(skel->progs.pf_run_steer_lookup, netns);
        if (!link)
                r = pf_bpf_fail(-errno, why, "cannot attach the steering program to this network namespace: %s",
                                strerror(errno));
        if (netns >= 0)
                close(netns);
        if (r == 0) {
                out->map_id = map_id(skel->maps.run_steer);
                out->ports_id = map_id(skel->maps.run_steered_ports);
                out->map_fd = inheritable(bpf_map__fd(skel->maps.run_steer));
                out->ports_fd = inheritable(bpf_map__fd(skel->maps.run_steered_ports));
                out->link_fd = inheritable(bpf_link__fd(link));
                if (!out->map_id || !out->ports_id)
                        r = pf_bpf_fail(-errno, why, "cannot read the steering maps: %s", strerror(errno));
                else if (out->map_fd < 0 || out->ports_fd < 0 || out->link_fd < 0)
                        r = pf_bpf_fail(-errno, why, "%s", strerror(errno));
        }
        if (r < 0) {
                for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
                        if (*fds[i] >= 0)
                                close(*fds[i]);
                        *fds[i] = -1;
                }
        } else {
                bpf_link__disconnect(link);     /* out->link_fd keeps it attached */
        }
        bpf_link__destroy(link);
        run_steer_bpf__destroy(skel);
        return r;
}
