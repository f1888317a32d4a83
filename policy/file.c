/* SPDX-License-Identifier: MIT */
/* The compiled policy as a file: written whole and renamed, mapped back
 * read-only with every offset checked, named by its hash. */
#include "host.h"
#include "policy-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t pf_policy_hash(const struct pf_policy *p)
{
        const unsigned char *bytes = (const unsigned char *)p;
        uint64_t hash = 0xcbf29ce484222325u;    /* FNV-1a */

        for (uint64_t i = 0; i < p->size; i++)
                hash = (hash ^ bytes[i]) * 0x100000001b3u;
        return hash;
}

int pf_policy_save_at(const struct pf_policy *p, int dirfd, const char *name)
{
        char tmp[300];
        const char *data = (const char *)p;
        size_t done = 0;
        int fd = -1, r = 0;

        if (strchr(name, '/') || snprintf(tmp, sizeof(tmp), ".%s.%d", name, (int)getpid()) >= (int)sizeof(tmp))
                return -EINVAL;
        unlinkat(dirfd, tmp, 0);        /* a leftover of a run of ours that died */
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        while (done < p->size) {
                ssize_t n = write(fd, data + done, p->size - done);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -EIO;
                        break;
                }
                done += (size_t)n;
        }
        if (r == 0 && fchmod(fd, 0644) < 0)     /* whatever the umask: the shim checks the mode */
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
                r = -errno;
        if (r < 0)
                unlinkat(dirfd, tmp, 0);
        return r;
}

int pf_policy_save(const struct pf_policy *p, const char *path)
{
        const char *slash = strrchr(path, '/');
        char dir[4096];
        int dirfd, r;

        if (slash && (size_t)(slash - path) >= sizeof(dir))
                return -ENAMETOOLONG;
        snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
        dirfd = open(slash == path ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return -errno;
        r = pf_policy_save_at(p, dirfd, slash ? slash + 1 : path);
        close(dirfd);
        return r;
}

static bool section_fits(const struct pf_policy *p, uint64_t offset, uint64_t count, size_t item)
{
        return offset >= sizeof(*p) && offset % 8 == 0 && offset <= p->size &&
               count <= (p->size - offset) / item;
}

/* Every offset and index decide() follows stays inside the block (slots:
 * see pf_decide). */
static bool policy_valid(const struct pf_policy *p, uint64_t file_size)
{
        const struct pf_rule *rules;
        const char *strings;

        if (file_size < sizeof(*p) || p->magic != PF_POLICY_MAGIC ||
            p->header_size != sizeof(*p) || p->size != file_size)
                return false;
        if (!section_fits(p, p->rules, p->rule_count, sizeof(struct pf_rule)) ||
            !section_fits(p, p->ranges, p->range_count, sizeof(struct pf_range)) ||
            !section_fits(p, p->pool_ranges, p->pool_range_count, sizeof(struct pf_pool_range)) ||
            !section_fits(p, p->rule_kind, p->rule_count, 1) ||
            !section_fits(p, p->strings, p->strings_size, 1) || p->strings_size == 0)
                return false;
        strings = pf_string_at(p, 0);
        if (strings[p->strings_size - 1] != '\0' || p->name >= p->strings_size ||
            p->log_path >= p->strings_size || p->rule_count > UINT16_MAX ||
            p->default_action > PF_REMAP || p->unbound_listen > PF_REMAP)
                return false;
        if (p->pool_count != pf_portset_count(&p->pool) ||
            p->pool_range_count != pf_portset_range_count(&p->pool))
                return false;
        rules = pf_rules_of(p);
        for (uint32_t i = 0; i < p->rule_count; i++) {
                if ((uint64_t)rules[i].first_range + rules[i].range_count > p->range_count ||
                    rules[i].program >= p->strings_size || rules[i].action > PF_REMAP ||
                    (rules[i].action == PF_REMAP && !rules[i].has_to && p->pool_count == 0))
                        return false;
        }
        /* Slots are checked by decide() as it reads them: touching all
         * 512 KiB here would cost every wrapped program that much memory. */
        return !(p->default_action == PF_REMAP && p->pool_count == 0);
}

int pf_policy_map_fd(int fd, const struct pf_policy **out)
{
        struct stat st;
        void *map;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(struct pf_policy))
                return -EINVAL;
        /* Written by this user or root, and by no one else since. */
        if (!pf_host_trusted(&st, S_IFREG, geteuid(), true, 0022))
                return -EPERM;
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED)
                return -errno;
        if (!policy_valid(map, (uint64_t)st.st_size)) {
                munmap(map, (size_t)st.st_size);
                return -EINVAL;
        }
        *out = map;
        return 0;
}

int pf_policy_map(const char *path, const struct pf_policy **out)
{
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), r;

        if (fd < 0)
                return -errno;
        r = pf_policy_map_fd(fd, out);
        close(fd);
        return r;
}

void pf_policy_unmap(const struct pf_policy *p)
{
        if (p)
                munmap((void *)p, p->size);
}

