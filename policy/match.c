/* SPDX-License-Identifier: MIT */
/* The small matchers decide() uses: addresses, CIDRs, program globs, and the
 * names of enum values. All pure and allocation-free. */
#include "policy-internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

static const struct {
        const char *name;
        int value;
} errno_names[] = {
        { "EADDRINUSE", EADDRINUSE },       { "EADDRNOTAVAIL", EADDRNOTAVAIL },
        { "EACCES", EACCES },               { "EPERM", EPERM },
        { "ECONNREFUSED", ECONNREFUSED },   { "EINVAL", EINVAL },
        { "ENOBUFS", ENOBUFS },             { "ENOMEM", ENOMEM },
        { "EAGAIN", EAGAIN },               { "ENETUNREACH", ENETUNREACH },
        { "EHOSTUNREACH", EHOSTUNREACH },   { "EOPNOTSUPP", EOPNOTSUPP },
        { "EAFNOSUPPORT", EAFNOSUPPORT },   { "EPROTONOSUPPORT", EPROTONOSUPPORT },
        { "ETIMEDOUT", ETIMEDOUT },         { "EBUSY", EBUSY },
        { "EINTR", EINTR },                 { "ENOTSUP", ENOTSUP },
};

const char *pf_errno_name(int err)
{
        const char *name;

        for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
                if (errno_names[i].value == err)
                        return errno_names[i].name;
        name = strerrorname_np(err);    /* EINPROGRESS, ECONNREFUSED, ... */
        return name ? name : "EUNKNOWN";
}

int pf_errno_parse(const char *name, int *out)
{
        for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
                if (strcmp(errno_names[i].name, name) == 0) {
                        *out = errno_names[i].value;
                        return 0;
                }
        }
        return -EINVAL;
}

static const char *const action_names[] = {
        [PF_ALLOW] = "allow", [PF_LOG] = "log", [PF_REFUSE] = "refuse", [PF_REMAP] = "remap",
};

const char *pf_action_name(enum pf_action action)
{
        return action_names[action];
}

int pf_action_parse(const char *name, enum pf_action *out)
{
        for (size_t i = 0; i < sizeof(action_names) / sizeof(action_names[0]); i++) {
                if (strcmp(action_names[i], name) == 0) {
                        *out = (enum pf_action)i;
                        return 0;
                }
        }
        return -EINVAL;
}

int pf_sockaddr_port(const struct sockaddr *addr, socklen_t len)
{
        if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in))
                return ntohs(((const struct sockaddr_in *)(const void *)addr)->sin_port);
        if (addr && addr->sa_family == AF_INET6 && len >= PF_SIN6_LEN_MIN)
                return ntohs(((const struct sockaddr_in6 *)(const void *)addr)->sin6_port);
        return -1;
}

void pf_sockaddr_set_port(struct sockaddr *addr, uint16_t port)
{
        if (addr->sa_family == AF_INET)
                ((struct sockaddr_in *)(void *)addr)->sin_port = htons(port);
        else
                ((struct sockaddr_in6 *)(void *)addr)->sin6_port = htons(port);
}

bool pf_addr_is_local(const struct pf_addr *addr, const struct pf_addr *locals, unsigned count)
{
        static const uint8_t zero[16];

        if (addr->family == PF_IPV4) {
                uint32_t a = ntohl(addr->v4.s_addr);

                if (a >> 24 == 127 || a == 0)
                        return true;
        } else if (IN6_IS_ADDR_LOOPBACK(&addr->v6) || memcmp(&addr->v6, zero, 16) == 0) {
                return true;
        }
        for (unsigned i = 0; i < count; i++)
                if (locals[i].family == addr->family &&
                    memcmp(&locals[i].v6, &addr->v6, addr->family == PF_IPV4 ? sizeof(addr->v4) : sizeof(addr->v6)) == 0)
                        return true;
        return false;
}

void pf_addr_wildcard_as_loopback(struct pf_addr *addr)
{
        if (addr->family == PF_IPV4 && addr->v4.s_addr == htonl(INADDR_ANY))
                addr->v4.s_addr = htonl(INADDR_LOOPBACK);
        else if (addr->family == PF_IPV6 && IN6_IS_ADDR_UNSPECIFIED(&addr->v6))
                addr->v6 = in6addr_loopback;
}

void pf_addr_set_in4(struct pf_addr *addr, const struct in_addr *in)
{
        memset(addr, 0, sizeof(*addr));
        addr->family = PF_IPV4;
        addr->v4 = *in;
}

void pf_addr_set_in6(struct pf_addr *addr, const struct in6_addr *in6)
{
        if (IN6_IS_ADDR_V4MAPPED(in6)) {
                struct in_addr v4;

                memcpy(&v4, &in6->s6_addr[12], sizeof(v4));
                pf_addr_set_in4(addr, &v4);
                return;
        }
        memset(addr, 0, sizeof(*addr));
        addr->family = PF_IPV6;
        addr->v6 = *in6;
}

int pf_addr_parse(const char *text, struct pf_addr *addr)
{
        struct in_addr v4;
        struct in6_addr v6;

        if (inet_pton(AF_INET, text, &v4) == 1) {
                pf_addr_set_in4(addr, &v4);
                return 0;
        }
        if (inet_pton(AF_INET6, text, &v6) == 1) {
                pf_addr_set_in6(addr, &v6);
                return 0;
        }
        return -EINVAL;
}

int pf_cidr_parse(const char *text, struct pf_cidr *out)
{
        char buf[INET6_ADDRSTRLEN + 8];
        const char *slash = strchr(text, '/');
        size_t len = slash ? (size_t)(slash - text) : strlen(text);
        struct in6_addr v6;
        unsigned prefix, max;
        bool mapped;

        if (len == 0 || len >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, text, len);
        buf[len] = '\0';
        if (pf_addr_parse(buf, &out->addr) < 0)
                return -EINVAL;
        /* A v4-mapped prefix counts its bits from the IPv6 form. */
        mapped = inet_pton(AF_INET6, buf, &v6) == 1 && IN6_IS_ADDR_V4MAPPED(&v6);
        max = out->addr.family == PF_IPV4 && !mapped ? 32 : 128;
        prefix = max;
        if (slash) {
                const char *p = slash + 1;

                if (*p < '0' || *p > '9' || strlen(p) > 3)
                        return -EINVAL;
                prefix = 0;
                for (; *p; p++) {
                        if (*p < '0' || *p > '9')
                                return -EINVAL;
                        prefix = prefix * 10 + (unsigned)(*p - '0');
                }
                if (prefix > max)
                        return -EINVAL;
        }
        if (mapped) {
                if (prefix < 96)
                        return -EINVAL;
                prefix -= 96;
        }
        out->prefix = prefix;
        return 0;
}

bool pf_cidr_match(const struct pf_cidr *cidr, const struct pf_addr *addr)
{
        const uint8_t *a, *b;
        unsigned full, rest;

        if (cidr->addr.family != addr->family)
                return false;
        a = addr->family == PF_IPV4 ? (const uint8_t *)&addr->v4 : addr->v6.s6_addr;
        b = cidr->addr.family == PF_IPV4 ? (const uint8_t *)&cidr->addr.v4 : cidr->addr.v6.s6_addr;
        full = cidr->prefix / 8;
        rest = cidr->prefix % 8;
        for (unsigned i = 0; i < full; i++)
                if (a[i] != b[i])
                        return false;
        if (rest) {
                uint8_t mask = (uint8_t)(0xff << (8 - rest));

                if ((a[full] & mask) != (b[full] & mask))
                        return false;
        }
        return true;
}

/* Match one bracket expression at *pattern (just past '['); advances *pattern
 * past the closing ']'. An unterminated '[' matches a literal '['. */
static bool match_class(const char **pattern, char c)
{
        const char *p = *pattern;
        bool negate = false, found = false;

        if (*p == '!' || *p == '^') {
                negate = true;
                p++;
        }
        for (bool first = true; *p && (first || *p != ']'); first = false) {
                char lo = *p, hi = lo;

                if (p[1] == '-' && p[2] && p[2] != ']') {
                        hi = p[2];
                        p += 3;
                } else {
                        p++;
                }
                if (c >= lo && c <= hi)
                        found = true;
        }
        if (*p != ']') {
                *pattern = *pattern - 1;        /* literal '[' */
                return false;
        }
        *pattern = p + 1;
        return found != negate;
}

bool pf_glob_match(const char *pattern, const char *name)
{
        const char *star = NULL, *resume = NULL;

        while (*name) {
                if (*pattern == '*') {
                        star = ++pattern;
                        resume = name;
                        continue;
                }
                if (*pattern == '[') {
                        const char *p = pattern + 1;

                        if (match_class(&p, *name)) {
                                pattern = p;
                                name++;
                                continue;
                        }
                        if (p == pattern && *name == '[') {     /* literal '[' */
                                pattern++;
                                name++;
                                continue;
                        }
                } else if (*pattern && (*pattern == '?' || *pattern == *name)) {
                        pattern++;
                        name++;
                        continue;
                }
                if (!star)
                        return false;
                pattern = star;
                name = ++resume;
        }
        while (*pattern == '*')
                pattern++;
        return *pattern == '\0';
}

enum pf_comm_glob pf_glob_comm_split(const char *glob, struct pf_comm_parts *out)
{
        const char *star = strchr(glob, '*');
        size_t head = star ? (size_t)(star - glob) : strlen(glob);
        size_t tail = star ? strlen(star + 1) : 0;

        *out = (struct pf_comm_parts){ .star = star != NULL };
        if (strchr(glob, '[') || (star && strchr(star + 1, '*')))
                return PF_COMM_UNSUPPORTED;
        /* A comm keeps 15 characters: the head's first, the tail's last. */
        out->head_len = head > PF_COMM_LEN ? PF_COMM_LEN : head;
        memcpy(out->head, glob, out->head_len);
        if (star) {
                out->tail_len = tail > PF_COMM_LEN ? PF_COMM_LEN : tail;
                memcpy(out->tail, star + 1 + (tail - out->tail_len), out->tail_len);
        }
        return head > PF_COMM_LEN || tail > PF_COMM_LEN ? PF_COMM_TRUNCATED : PF_COMM_EXACT;
}

bool pf_program_match(const char *glob, const char *comm)
{
        struct pf_comm_parts parts;
        char cut[2 * PF_COMM_LEN + 2];
        size_t n = 0;

        if (pf_glob_comm_split(glob, &parts) != PF_COMM_TRUNCATED)
                return pf_glob_match(glob, comm);
        /* The glob as the kernel keeps it: HEAD's first, TAIL's last 15. */
        memcpy(cut, parts.head, parts.head_len);
        n = parts.head_len;
        if (parts.star) {
                cut[n++] = '*';
                memcpy(cut + n, parts.tail, parts.tail_len);
                n += parts.tail_len;
        }
        cut[n] = '\0';
        return pf_glob_match(cut, comm);
}

enum pf_comm_glob pf_glob_comm_form(const char *glob)
{
        struct pf_comm_parts parts;

        return pf_glob_comm_split(glob, &parts);
}

const char *pf_program_glob_note(const char *glob)
{
        struct pf_comm_parts parts;

        switch (pf_glob_comm_split(glob, &parts)) {
        case PF_COMM_UNSUPPORTED:
                return pf_comm_glob_note(PF_COMM_UNSUPPORTED);
        case PF_COMM_TRUNCATED:
                return "a thread's name keeps 15 characters (its comm): this glob is matched cut to 15, "
                       "by both enforcers";
        default:
                break;
        }
        if (parts.star && parts.tail_len)
                return "a name longer than 15 characters is cut: its end is never seen, so this tail "
                       "matches only names of 15 characters or less";
        if (!parts.star && parts.head_len == PF_COMM_LEN)
                return "15 characters: this also matches every longer name that starts with them "
                       "(a name keeps 15 characters)";
        return NULL;
}

const char *pf_comm_glob_note(enum pf_comm_glob form)
{
        switch (form) {
        case PF_COMM_TRUNCATED:
                return "the cgroup programs see the 16-byte comm, the first 15 characters of the "
                       "name: they match this glob cut to 15 characters";
        case PF_COMM_UNSUPPORTED:
                return "the cgroup programs match the comm against HEAD or HEAD*TAIL with '?' only: "
                       "'portfence cgroup attach' refuses this glob (the shim matches it whole)";
        default:
                return "matched exactly";
        }
}
