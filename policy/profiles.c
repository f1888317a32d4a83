/* SPDX-License-Identifier: MIT */
#include "host.h"
#include "profiles.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TCP PF_PROTO_BIT(PF_TCP)
#define UDP PF_PROTO_BIT(PF_UDP)
#define BOTH PF_PROTO_BOTH
#define R(lo, hi) { lo, hi }
#define NONE { 0, 0 }

#define SEED "the seed article's table (Selecting TCP Port Numbers for Fun, Profit, and Reliability)"

/* The seed's table, port numbers inclusive, then today's stacks and server
 * ranges. STCP is the one stack the seed gives separate TCP and UDP rows
 * for; every other row holds for both. */
static const struct pf_profile profiles[] = {
        { "iana", "IANA", BOTH, R(1, 1023), R(1024, 49151), R(49152, 65535), false, true, NONE, NULL,
          SEED "; RFC 6335 section 6" },
        { "tcp_os", "VOS TCP_OS", BOTH, R(1, 1023), R(5001, 65535), R(1024, 5000), false, true, NONE,
          NULL, SEED },
        { "stcp-pre-1098", "VOS STCP TCP before stcp-1098", TCP,
          R(1, 1023), R(1024, 9999), R(10000, 65535), false, true, NONE,
          "stcp-udp-pre-2119, stcp-udp", SEED },
        { "stcp", "VOS STCP TCP after stcp-1098", TCP,
          R(1, 1023), R(1024, 49151), R(49152, 65535), false, true, NONE,
          "stcp-udp-pre-2119, stcp-udp", SEED },
        /* The seed's text says the UDP dynamic range starts at 1024, its
         * table says 1025: take the wider. 1024 is then both well-known
         * (the table) and dynamic (the text): never safe either way. */
        { "stcp-udp-pre-2119", "VOS STCP UDP before stcp-2119", UDP,
          R(1, 1024), NONE, R(1024, 65535), false, true, NONE, "stcp-pre-1098, stcp",
          SEED "; its text puts 1024 in the dynamic range, its table in the well-known one: "
          "counted in both" },
        { "stcp-udp", "VOS STCP UDP after stcp-2119", UDP,
          R(1, 1023), R(1024, 49151), R(49152, 65535), false, true, NONE, "stcp-pre-1098, stcp", SEED },
        { "hpux-11", "HP-UX 11.x (default)", BOTH,
          R(1, 1023), R(1024, 49151), R(49152, 65535), false, true, NONE, NULL, SEED },
        { "ftx-3.3", "FTX 3.3 and earlier", BOTH, R(1, 1023), R(6124, 65535), R(1024, 6123), false, true,
          NONE, NULL, SEED },
        { "ftx-3.4", "FTX 3.4 and later", BOTH, R(1, 1023), R(1024, 49151), R(49152, 65535), false, true,
          NONE, NULL, SEED },
        /* Windows MaxUserPort defaults to 5000. */
        { "ftserver", "ftServer", BOTH, R(1, 1024), R(5001, 65535), R(1024, 5000), false, true, NONE, NULL,
          SEED },
        { "linux-2.2", "Linux 2.2 and earlier", BOTH, R(1, 1023), R(5000, 65535), R(1024, 4999), false,
          true, NONE, NULL, SEED },
        { "linux-2.4", "Linux 2.4 and later (as the seed gives it)", BOTH,
          R(1, 1023), R(1024, 32767), R(32768, 61000), false, true, NONE, NULL, SEED },

        /* net.ipv4.ip_local_port_range defaults to "32768 60999"
         * (Documentation/networking/ip-sysctl.rst), since Linux 4.2. */
        { "linux", "Linux 4.2 and later (default ip_local_port_range)", BOTH,
          R(1, 1023), R(1024, 32767), R(32768, 60999), false, false, NONE, NULL,
          "Linux Documentation/networking/ip-sysctl.rst, ip_local_port_range" },
        /* Microsoft KB 929851: the dynamic range is 49152-65535 since
         * Windows Vista and Windows Server 2008 (netsh int ipv4 show
         * dynamicport tcp). */
        { "windows", "Windows Vista / Server 2008 and later", BOTH,
          R(1, 1023), R(1024, 49151), R(49152, 65535), false, false, NONE, NULL,
          "Microsoft KB 929851 (netsh int ipv4 show dynamicport tcp)" },
        /* sys/netinet/in.h: IPPORT_EPHEMERALFIRST 10000, IPPORT_EPHEMERALLAST
         * 65535 (sysctl net.inet.ip.portrange.first/last). */
        { "freebsd", "FreeBSD", BOTH, R(1, 1023), NONE, R(10000, 65535), false, false, NONE, NULL,
          "FreeBSD sys/netinet/in.h IPPORT_EPHEMERALFIRST/LAST (net.inet.ip.portrange.first/last)" },
        /* sys/netinet/in.h: ports are picked at random between
         * IPPORT_RESERVED (1024) and IPPORT_USERRESERVED (49151) unless a
         * socket asks for the high range (net.inet.ip.portfirst/portlast). */
        { "openbsd", "OpenBSD (default port range)", BOTH, R(1, 1023), NONE, R(1024, 49151), false, false,
          NONE, NULL, "OpenBSD sys/netinet/in.h IPPORT_RESERVED..IPPORT_USERRESERVED "
          "(net.inet.ip.portfirst/portlast)" },
        /* sys/netinet/in.h: IPPORT_ANONMIN 49152, IPPORT_ANONMAX 65535. */
        { "netbsd", "NetBSD", BOTH, R(1, 1023), NONE, R(49152, 65535), false, false, NONE, NULL,
          "NetBSD sys/netinet/in.h IPPORT_ANONMIN/ANONMAX (net.inet.ip.anonportmin/max)" },
        /* XNU bsd/netinet/in.h: IPPORT_HIFIRSTAUTO 49152, IPPORT_HILASTAUTO
         * 65535, the default of net.inet.ip.portrange.first/last. */
        { "macos", "macOS", BOTH, R(1, 1023), NONE, R(49152, 65535), false, false, NONE, NULL,
          "XNU bsd/netinet/in.h IPPORT_HIFIRSTAUTO/HILASTAUTO (net.inet.ip.portrange.first/last)" },
        /* tcp_smallest_anon_port 32768, tcp_largest_anon_port 65535 (and
         * the same for UDP): ipadm show-prop -p smallest_anon_port tcp. */
        { "solaris", "Solaris and illumos", BOTH, R(1, 1023), NONE, R(32768, 65535), false, false, NONE,
          NULL, "Solaris/illumos tunables smallest_anon_port/largest_anon_port (ipadm show-prop)" },
        /* no -o tcp_ephemeral_low 32768, tcp_ephemeral_high 65535 (and the
         * udp_ ones). */
        { "aix", "AIX", BOTH, R(1, 1023), NONE, R(32768, 65535), false, false, NONE, NULL,
          "AIX network options tcp_ephemeral_low/high, udp_ephemeral_low/high (no -a)" },
        /* The Docker daemon publishes '-P' ports from the host's
         * ip_local_port_range, or 49153-65535 when it cannot read it
         * (libnetwork portallocator): servers, in the clients' range. */
        { "docker", "Docker published ports (-P), its fallback range", BOTH, R(1, 1023), NONE, NONE,
          false, false, R(49153, 65535), NULL,
          "Docker libnetwork portallocator: ip_local_port_range, else 49153-65535" },
        /* kube-apiserver --service-node-port-range defaults to 30000-32767:
         * kube-proxy listens there on every node. */
        { "kubernetes-nodeport", "Kubernetes NodePort services", BOTH, R(1, 1023), NONE, NONE, false,
          false, R(30000, 32767), NULL, "kube-apiserver --service-node-port-range (default 30000-32767)" },
        /* Nomad client's min_dynamic_port/max_dynamic_port default to 20000
         * and 32000: the ports it gives tasks' dynamic port labels. */
        { "nomad", "HashiCorp Nomad dynamic ports", BOTH, R(1, 1023), NONE, NONE, false, false,
          R(20000, 32000), NULL, "Nomad client configuration min_dynamic_port/max_dynamic_port "
          "(defaults 20000-32000)" },
        /* Consul's ports.sidecar_min_port/sidecar_max_port default to 21000
         * and 21255: Connect sidecar proxies listen there. */
        { "consul-sidecar", "HashiCorp Consul Connect sidecar proxies", BOTH, R(1, 1023), NONE, NONE, false,
          false, R(21000, 21255), NULL, "Consul agent configuration ports.sidecar_min_port/"
          "sidecar_max_port (defaults 21000-21255)" },
        /* The ECS agent's ECS_DYNAMIC_HOST_PORT_RANGE: dynamic host ports of
         * tasks in bridge mode, 49153-65535 when the host's range is not
         * read. */
        { "ecs", "Amazon ECS dynamic host ports", BOTH, R(1, 1023), NONE, NONE, false, false,
          R(49153, 65535), NULL, "Amazon ECS agent ECS_DYNAMIC_HOST_PORT_RANGE (fallback 49153-65535)" },
        { "host", "this host, read live", BOTH, R(1, 1023), NONE, NONE, true, false, NONE, NULL,
          "/proc/sys/net/ipv4/ip_local_port_range minus ip_local_reserved_ports" },
};

const struct pf_profile *pf_profiles(size_t *count)
{
        *count = sizeof(profiles) / sizeof(profiles[0]);
        return profiles;
}

const struct pf_profile *pf_profile_find(const char *name)
{
        for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
                if (strcmp(profiles[i].name, name) == 0)
                        return &profiles[i];
        return NULL;
}

const char *pf_proto_name(enum pf_proto proto)
{
        return proto == PF_UDP ? "udp" : "tcp";
}

int pf_proto_parse(const char *name, enum pf_proto *out)
{
        if (strcmp(name, "tcp") == 0)
                *out = PF_TCP;
        else if (strcmp(name, "udp") == 0)
                *out = PF_UDP;
        else
                return -EINVAL;
        return 0;
}

int pf_profile_dynamic(const struct pf_profile *profile, enum pf_proto proto,
                       struct pf_portset *out, char *why)
{
        if (!(profile->protos & PF_PROTO_BIT(proto))) {
                pf_portset_clear(out);
                return 0;
        }
        if (profile->live)
                return pf_host_ephemeral_read(PF_PROC_PORT_RANGE, PF_PROC_RESERVED, out, why);
        pf_portset_clear(out);
        pf_portset_add_range(out, profile->dynamic.lo, profile->dynamic.hi);
        return 0;
}

/* A row asked for a protocol it has no numbers for: name the rows that do. */
static int not_described(const struct pf_profile *profile, enum pf_proto proto, char *why)
{
        snprintf(why, PF_WHY_SIZE, "profile '%s' describes %s only; for %s use %s", profile->name,
                 pf_proto_name(proto == PF_TCP ? PF_UDP : PF_TCP), pf_proto_name(proto),
                 profile->others ? profile->others : "another profile");
        return -EINVAL;
}

int pf_profiles_combine(const struct pf_profile *const *list, size_t count,
                        enum pf_proto proto, struct pf_portset *dynamic,
                        struct pf_portset *safe, char *why)
{
        struct pf_portset one;

        pf_portset_clear(dynamic);
        pf_portset_fill(safe);
        for (size_t i = 0; i < count; i++) {
                const struct pf_profile *profile = list[i];
                int r;

                if (!(profile->protos & PF_PROTO_BIT(proto)))
                        return not_described(profile, proto, why);
                r = pf_profile_dynamic(profile, proto, &one, why);
                if (r < 0)
                        return r;
                pf_portset_union(dynamic, &one);
                pf_portset_clear(&one);
                if (profile->well_known.lo)
                        pf_portset_add_range(&one, profile->well_known.lo, profile->well_known.hi);
                if (profile->servers.lo)
                        pf_portset_add_range(&one, profile->servers.lo, profile->servers.hi);
                pf_portset_subtract(safe, &one);
        }
        pf_portset_subtract(safe, dynamic);
        return 0;
}
