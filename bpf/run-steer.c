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

int pf_bpf_run_steering(struct pf_run_steering *out, char *why)
{
        struct bpf_map_info info = {};
        uint32_t len = sizeof(info);
        struct run_steer_bpf *skel;
        struct bpf_link *link;
        int netns, r = 0;

        out->map_fd = out->link_fd = -1;
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
        if (r == 0 && bpf_obj_get_info_by_fd(bpf_map__fd(skel->maps.run_steer), &info, &len) < 0)
                r = pf_bpf_fail(-errno, why, "cannot read the steering map: %s", strerror(errno));
        if (r == 0) {
                out->map_fd = inheritable(bpf_map__fd(skel->maps.run_steer));
                out->link_fd = inheritable(bpf_link__fd(link));
                out->map_id = info.id;
                if (out->map_fd < 0 || out->link_fd < 0)
                        r = pf_bpf_fail(-errno, why, "%s", strerror(errno));
        }
        if (r < 0) {
                if (out->map_fd >= 0)
                        close(out->map_fd);
                if (out->link_fd >= 0)
                        close(out->link_fd);
                out->map_fd = out->link_fd = -1;
        } else {
                bpf_link__disconnect(link);     /* out->link_fd keeps it attached */
        }
        bpf_link__destroy(link);
        run_steer_bpf__destroy(skel);
        return r;
}
