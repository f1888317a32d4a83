/* SPDX-License-Identifier: MIT */
/* UDP steering's tc programs (steer.bpf.h), linked to the interfaces of the
 * network namespace this thread is in. */
#include <errno.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "loader.h"
#include "tables.h"

/* The programs read headers at Ethernet's offsets: interfaces that have one,
 * and loopback. Asked of a socket, which lives in this thread's namespace
 * (/sys/class/net shows the namespace sysfs was mounted in). */
static bool has_ethernet_header(int sock, const char *name)
{
        struct ifreq ifr = { 0 };

        if (strlen(name) >= sizeof(ifr.ifr_name))
                return false;
        strcpy(ifr.ifr_name, name);
        if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0)
                return false;
        return ifr.ifr_hwaddr.sa_family == ARPHRD_ETHER || ifr.ifr_hwaddr.sa_family == ARPHRD_LOOPBACK;
}

int pf_bpf_link_interfaces(int prog_fd, int attach_type, pf_wire_wanted wanted, pf_wire_keep keep, void *ctx,
                           char *why)
{
        struct if_nameindex *names = if_nameindex();
        int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), r = 0;
        unsigned linked = 0;

        if (!names || sock < 0)
                r = pf_bpf_fail(-errno, why, "cannot list this namespace's interfaces: %s", strerror(errno));
        for (struct if_nameindex *i = names; r == 0 && i && i->if_index; i++) {
                int link;

                if (!has_ethernet_header(sock, i->if_name) || (wanted && !wanted(i->if_index, ctx)))
                        continue;
                link = bpf_link_create(prog_fd, (int)i->if_index, attach_type, NULL);
                if (link < 0 && errno == EINVAL && !linked) {
                        r = pf_bpf_fail(-EOPNOTSUPP, why, "this kernel links no tc programs (Linux 6.6 or later "
                                        "does): UDP is not steered");
                        break;
                }
                if (link < 0) {
                        r = pf_bpf_fail(-errno, why, "cannot link UDP steering to interface '%s': %s",
                                        i->if_name, strerror(errno));
                        break;
                }
                linked++;
                r = keep(link, i->if_index, ctx, why);
        }
        if (names)
                if_freenameindex(names);
        if (sock >= 0)
                close(sock);
        return r;
}
