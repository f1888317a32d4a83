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

/* The seed's table, port numbers inclusive. STCP is the one stack the seed
 * gives separate TCP and UDP rows for; every other row holds for both. */
static const struct pf_profile profiles[] = {
        { "iana", "IANA", BOTH, R(1, 1023), R(1024, 49151), R(49152, 65535), false },
        { "tcp_os", "VOS TCP_OS", BOTH, R(1, 1023), R(5001, 65535), R(1024, 5000), false },
        { "stcp-pre-1098", "VOS STCP TCP before stcp-1098", TCP,
          R(1, 1023), R(1024, 9999), R(10000, 65535), false },
        { "stcp", "VOS STCP TCP after stcp-1098", TCP,
          R(1, 1023), R(1024, 49151), R(49152, 65535), false },
        /* The seed's text says the UDP dynamic range starts at 1024, its
         * table says 1025: take the wider. */
        { "stcp-udp-pre-2119", "VOS STCP UDP before stcp-2119", UDP,
          R(1, 1024), NONE, R(1024, 65535), false },
        { "stcp-udp", "VOS STCP UDP after stcp-2119", UDP,
          R(1, 1023), R(1024, 49151), R(49152, 65535), false },
        { "hpux-11", "HP-UX 11.x (default)", BOTH,
          R(1, 1023), R(1024, 49151), R(49152, 65535), false },
        { "ftx-3.3", "FTX 3.3 and earlier", BOTH, R(1, 1023), R(6124, 65535), R(1024, 6123), false },
        { "ftx-3.4", "FTX 3.4 and later", BOTH, R(1, 1023), R(1024, 49151), R(49152, 65535), false },
        /* Windows MaxUserPort defaults to 5000. */
        { "ftserver", "ftServer", BOTH, R(1, 1024), R(5001, 65535), R(1024, 5000), false },
        { "linux-2.2", "Linux 2.2 and earlier", BOTH, R(1, 1023), R(5000, 65535), R(1024, 4999), false },
        { "linux-2.4", "Linux 2.4 and later (as the seed gives it)", BOTH,
          R(1, 1023), R(1024, 32767), R(32768, 61000), false },
        { "host", "this host, read live", BOTH, R(1, 1023), NONE, NONE, true },
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

int pf_profiles_combine(const struct pf_profile *const *list, size_t count,
                        enum pf_proto proto, struct pf_portset *dynamic,
                        struct pf_portset *safe, char *why)
{
        struct pf_portset one;

        pf_portset_clear(dynamic);
        pf_portset_fill(safe);
        for (size_t i = 0; i < count; i++) {
                const struct pf_profile *profile = list[i];
                int r = pf_profile_dynamic(profile, proto, &one, why);

                if (r < 0)
                        return r;
                pf_portset_union(dynamic, &one);
                if (!(profile->protos & PF_PROTO_BIT(proto)))
                        continue;
                pf_portset_clear(&one);
                pf_portset_add_range(&one, profile->well_known.lo, profile->well_known.hi);
                pf_portset_subtract(safe, &one);
        }
        pf_portset_subtract(safe, dynamic);
        return 0;
}
