/* SPDX-License-Identifier: MIT */
/* Steering for 'portfence run' as root: run-steer.bpf.c loaded and linked to
 * the network namespace run starts in (sk_lookup) and to its interfaces (tc
 * egress), its maps and links left to the command as inherited descriptors
 * (see pf_bpf_run_steering()). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
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

/* A link kept for the command (keep() of pf_bpf_link_interfaces()). */
static int keep_link(int link, unsigned ifindex, void *ctx, char *why)
{
        struct pf_run_steering *out = ctx;
        int *grown = realloc(out->link_fds, (out->links + 1) * sizeof(*grown)), fd;

        (void)ifindex;
        fd = grown ? inheritable(link) : -1;
        close(link);
        if (grown)
                out->link_fds = grown;
        if (fd < 0)
                return pf_bpf_fail(-ENOMEM, why, "cannot keep a steering link: %s", strerror(errno));
        out->link_fds[out->links++] = fd;
        return 0;
}

static int attach_lookup(struct run_steer_bpf *skel, struct pf_run_steering *out, char *why)
{
        int netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC), r;
        struct bpf_link *link = netns < 0 ? NULL : bpf_program__attach_netns(skel->progs.pf_run_steer_lookup, netns);

        if (!link)
                r = pf_bpf_fail(-errno, why, "cannot attach the steering program to this network namespace: %s",
                                strerror(errno));
        else
                r = keep_link(dup(bpf_link__fd(link)), 0, out, why);
        if (netns >= 0)
                close(netns);
        bpf_link__destroy(link);        /* detaches only if no descriptor was kept */
        return r;
}

void pf_bpf_run_steering_close(struct pf_run_steering *s)
{
        for (size_t i = 0; i < PF_RUN_MAPS; i++) {
                if (s->map_fd[i] >= 0)
                        close(s->map_fd[i]);
                s->map_fd[i] = -1;
        }
        for (size_t i = 0; i < s->links; i++)
                close(s->link_fds[i]);
        free(s->link_fds);
        s->link_fds = NULL;
        s->links = 0;
}

/* The tc egress program on every interface (-EOPNOTSUPP: the kernel links
 * none). */
static int link_wire(struct run_steer_bpf *skel, struct pf_run_steering *out, char *why)
{
        return pf_bpf_link_interfaces(bpf_program__fd(skel->progs.pf_run_udp_out), PF_BPF_TCX_EGRESS, NULL,
                                      keep_link, out, why);
}

int pf_bpf_run_steering(struct pf_run_steering *out, char *why)
{
        struct run_steer_bpf *skel;
        bool wire;
        int r;

        *out = (struct pf_run_steering){ .map_fd = { -1, -1, -1, -1 } };
        skel = run_steer_bpf__open_and_load();
        if (!skel)
                return pf_bpf_fail(-errno, why, "cannot load the steering program: %s", strerror(errno));
        const struct bpf_map *maps[PF_RUN_MAPS] = {
                [PF_RUN_STEER] = skel->maps.run_steer, [PF_RUN_PORTS] = skel->maps.run_steered_ports,
                [PF_RUN_SOCKS] = skel->maps.run_socks, [PF_RUN_DATAGRAMS] = skel->maps.run_datagrams,
        };
        r = attach_lookup(skel, out, why);
        if (r == 0)
                r = link_wire(skel, out, why);
        wire = r == 0;
        if (r == -EOPNOTSUPP)
                r = 1;          /* TCP alone, and the note in why */
        for (size_t i = 0; r >= 0 && i < PF_RUN_MAPS; i++) {
                out->map_id[i] = map_id(maps[i]);
                out->map_fd[i] = inheritable(bpf_map__fd(maps[i]));
                if (!out->map_id[i] || out->map_fd[i] < 0)
                        r = pf_bpf_fail(-errno, why, "cannot keep the steering maps: %s", strerror(errno));
        }
        if (r >= 0 && wire && bpf_map_update_elem(bpf_map__fd(skel->maps.run_datagrams), &(uint32_t){ PF_RUN_WIRE },
                                                  &(uint32_t){ 1 }, BPF_ANY) < 0)
                r = pf_bpf_fail(-errno, why, "cannot write the steering maps: %s", strerror(errno));
        if (r < 0)
                pf_bpf_run_steering_close(out);
        run_steer_bpf__destroy(skel);
        return r;
}
