/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "host.h"
#include "loader.h"
#include "portfence-api.bpf.h"
#include "portfence.skel.h"
#include "tables.h"

/* The pinned objects of one fenced cgroup, below PF_BPF_PIN_ROOT/<id>/. */
static const char *const hook_names[] = {
        "bind4", "bind6", "connect4", "connect6", "sendmsg4", "sendmsg6",
        "getsockname4", "getsockname6", "getpeername4", "getpeername6", "recvmsg4", "recvmsg6",
        "post_bind4", "post_bind6", "sock_release", "setsockopt", "sock_ops", "steer_lookup",
};
static const char *const map_names[] = {
        "spans", "blocks", "rules", "settings", "live", "events", "counters", "moved", "moved_back", "fenced",
        "host", "peers", "decided", "steer", "steer_netns",
};
/* Pins of fences made by older versions, removed with the rest. */
static const char *const old_map_names[] = { "verdicts" };

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The kernel's numbers mean the policy's enums. */
_Static_assert(PF_BPF_ALLOW == PF_ALLOW && PF_BPF_LOG == PF_LOG && PF_BPF_REFUSE == PF_REFUSE &&
               PF_BPF_REMAP == PF_REMAP, "BPF actions are enum pf_action");
_Static_assert(PF_BPF_TCP == PF_TCP && PF_BPF_UDP == PF_UDP && PF_BPF_PROTOS == PF_PROTO_COUNT,
               "BPF protocols are enum pf_proto");
_Static_assert(PF_BPF_IPV4 == PF_IPV4 && PF_BPF_IPV6 == PF_IPV6, "BPF families are enum pf_family");
_Static_assert(PF_BPF_COUNTERS == PF_FENCE_COUNTERS, "one counter per action, then the others");


static bool verbose_libbpf;

/* libbpf's chatter (the verifier's log among it) only under -v. */
static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
        (void)level;
        return verbose_libbpf ? vfprintf(stderr, fmt, ap) : 0;
}

static void pin_dir(const struct pf_cgroup *cgroup, char *out, size_t size)
{
        snprintf(out, size, "%s/%llu", PF_BPF_PIN_ROOT, (unsigned long long)cgroup->id);
}

#define PF_NEW_PREFIX "new-"    /* bpffs refuses names with a dot */

/* Where an attach builds the fence before renaming it into pin_dir(). */
static void building_dir(const struct pf_cgroup *cgroup, char *out, size_t size)
{
        snprintf(out, size, "%s/" PF_NEW_PREFIX "%llu", PF_BPF_PIN_ROOT, (unsigned long long)cgroup->id);
}

/* bpffs at /sys/fs/bpf, mounted if it is not, but only where the pins
 * outlive this command: a bpffs mounted in a private mount namespace dies
 * with it, and the fence with it. */
int pf_bpf_ready(char *why)
{
        enum pf_ns_place place;
        struct statfs fs;

        if (statfs("/sys/fs/bpf", &fs) == 0 && fs.f_type == BPF_FS_MAGIC)
                return 0;
        place = pf_host_mount_ns("/proc");
        if (place == PF_NS_PRIVATE)
                return pf_bpf_fail(-EPERM, why, "no bpffs at '/sys/fs/bpf' in this mount namespace, which is "
                            "not the host's: a fence pinned in a bpffs mounted here would end with "
                            "the namespace; mount bpffs there in the host's namespace (or run this "
                            "in it)");
        if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") < 0)
                return pf_bpf_fail(-errno, why, "cannot mount bpffs at '/sys/fs/bpf': %s", strerror(errno));
        if (place == PF_NS_HOST)
                return 0;
        snprintf(why, PF_WHY_SIZE, "mounted bpffs at '/sys/fs/bpf', not knowing whether this mount "
                 "namespace is the host's: if it is private, its fences end with it");
        return 1;
}

/* ---- filling the maps from the compiled policy: a policy's tables, made
 * whole once, frozen, shared ---------------------------------------------- */

struct tables {
        struct pf_bpf_span *spans;
        uint32_t span_count;
        struct pf_bpf_block *blocks;    /* PF_BPF_BLOCKS of them */
        struct pf_bpf_rule *rules;
        uint32_t rule_count;
};

static void free_tables(struct tables *t)
{
        free(t->spans);
        free(t->blocks);
        free(t->rules);
}

/* A fence's maps of tables, or one generation's tables: descriptors. */
enum { SPANS, BLOCKS, RULES, TABLES };
static const char *const table_maps[TABLES] = { "spans", "blocks", "rules" };

static void close_all(int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (fds[i] >= 0)
                        close(fds[i]);
                fds[i] = -1;
        }
}

/* Does map fd hold exactly count values of size, as in values? */
static bool table_equal(int fd, uint32_t size, const void *values, uint32_t count)
{
        struct bpf_map_info info = { 0 };
        uint32_t len = sizeof(info);
        unsigned char value[sizeof(struct pf_bpf_rule) + sizeof(struct pf_bpf_block)];

        if (bpf_obj_get_info_by_fd(fd, &info, &len) < 0 || info.type != BPF_MAP_TYPE_ARRAY ||
            info.value_size != size || info.max_entries != count || size > sizeof(value))
                return false;
        for (uint32_t key = 0; key < count; key++)
                if (bpf_map_lookup_elem(fd, &key, value) < 0 ||
                    memcmp(value, (const unsigned char *)values + (size_t)key * size, size) != 0)
                        return false;
        return true;
}

/* The table generation `generation` of outer map fd refers to, as a
 * descriptor, if it holds exactly values; else -1. */
static int table_if_equal(int outer, uint32_t generation, uint32_t size, const void *values, uint32_t count)
{
        uint32_t id;
        int fd;

        if (outer < 0 || bpf_map_lookup_elem(outer, &generation, &id) < 0 ||
            (fd = bpf_map_get_fd_by_id(id)) < 0)
                return -1;
        if (table_equal(fd, size, values, count))
                return fd;
        close(fd);
        return -1;
}

static int open_fence_map(const char *dir, const char *name)
{
        char path[4400];

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return bpf_obj_get(path);
}

/* The values, size and count of table i of t. */
static const void *table_values(const struct tables *t, int i, uint32_t *size, uint32_t *count)
{
        switch (i) {
        case SPANS:
                *size = sizeof(*t->spans), *count = t->span_count;
                return t->spans;
        case BLOCKS:
                *size = sizeof(*t->blocks), *count = PF_BPF_BLOCKS;
                return t->blocks;
        default:
                *size = sizeof(*t->rules), *count = t->rule_count;
                return t->rules;
        }
}

/* The tables another fence uses for this very policy (found by its hash,
 * taken only when equal value by value): 0 with fds[SPANS..RULES], or -1. */
static int find_shared(const struct tables *t, uint64_t hash, int fds[TABLES])
{
        DIR *root = opendir(PF_BPF_PIN_ROOT);
        struct dirent *e;
        bool found = false;

        for (int i = 0; i < TABLES; i++)
                fds[i] = -1;
        while (root && !found && (e = readdir(root))) {
                char dir[4200];
                struct pf_bpf_settings s;
                uint32_t zero = 0, generation;
                int live, settings, outer[TABLES];

                if (!strtoull(e->d_name, NULL, 10))
                        continue;       /* ".", "..", new-<id> */
                snprintf(dir, sizeof(dir), "%s/%s", PF_BPF_PIN_ROOT, e->d_name);
                live = open_fence_map(dir, "live");
                settings = open_fence_map(dir, "settings");
                for (int i = 0; i < TABLES; i++)
                        outer[i] = open_fence_map(dir, table_maps[i]);
                if (live >= 0 && settings >= 0 && bpf_map_lookup_elem(live, &zero, &generation) == 0 &&
                    (generation &= 1, bpf_map_lookup_elem(settings, &generation, &s) == 0) &&
                    s.magic == PF_BPF_MAGIC && s.policy_hash == hash && s.span_count == t->span_count) {
                        found = true;
                        for (int i = 0; i < TABLES && found; i++) {
                                uint32_t size, count;
                                const void *values = table_values(t, i, &size, &count);

                                fds[i] = table_if_equal(outer[i], generation, size, values, count);
                                found = fds[i] >= 0;
                        }
                        if (!found)
                                close_all(fds, TABLES);
                }
                close_all(outer, TABLES);
                close_all((int[]){ live, settings }, 2);
        }
        if (root)
                closedir(root);
        return found ? 0 : -1;
}

/* Some maps are one for the whole host: the registry of moved ports (a
 * client in one fence follows a server another fence moved, when its own
 * policy remaps that port too), its way back, the list of fenced cgroups,
 * the host's counts, the redirected sockets' destinations and the marks of
 * the fence that decided a call. Each fence
 * after the first costs nothing for them. Taken from
 * any fence that has one of the same shape. */
static void share_host_map(struct bpf_map *moved, const char *name)
{
        DIR *root = opendir(PF_BPF_PIN_ROOT);
        struct dirent *e;
        bool shared = false;

        while (root && !shared && (e = readdir(root))) {
                struct bpf_map_info info = { 0 };
                uint32_t len = sizeof(info);
                char dir[4200];
                int fd;

                if (!strtoull(e->d_name, NULL, 10))
                        continue;
                snprintf(dir, sizeof(dir), "%s/%s", PF_BPF_PIN_ROOT, e->d_name);
                fd = open_fence_map(dir, name);
                if (fd < 0)
                        continue;
                shared = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
                         info.type == bpf_map__type(moved) && info.key_size == bpf_map__key_size(moved) &&
                         info.value_size == bpf_map__value_size(moved) &&
                         info.max_entries == bpf_map__max_entries(moved) && bpf_map__reuse_fd(moved, fd) == 0;
                close(fd);
        }
        if (root)
                closedir(root);
}

/* A new table holding values, frozen: from here on nothing changes it.
 * Sized to its policy (BPF_F_INNER_MAP), except the blocks: one size. */
static int make_table(const char *name, uint32_t size, const void *values, uint32_t count, char *why)
{
        LIBBPF_OPTS(bpf_map_create_opts, opts,
                    .map_flags = strcmp(name, PF_BPF_TABLE_NAME_BLOCKS) == 0 ? 0 : BPF_F_INNER_MAP);
        uint32_t *keys = calloc(count, sizeof(*keys)), done = count;
        int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, name, sizeof(uint32_t), size, count, &opts);
        int r = fd < 0 ? -errno : 0;

        for (uint32_t i = 0; keys && i < count; i++)
                keys[i] = i;
        if (r == 0 && !keys)
                r = -ENOMEM;
        if (r == 0 && bpf_map_update_batch(fd, keys, values, &done, NULL) < 0)
                r = -errno;
        if (r == 0 && bpf_map_freeze(fd) < 0)
                r = -errno;
        free(keys);
        if (r < 0) {
                if (fd >= 0)
                        close(fd);
                return pf_bpf_fail(r, why, "cannot make the %s table: %s", name, strerror(-r));
        }
        return fd;
}

/* The policy's tables as generation `generation` of the outer maps: those
 * of another fence of the same policy, or new ones. */
static int put_tables(const struct pf_policy *p, const int outer[TABLES], uint32_t generation,
                      uint32_t *span_count, char *why)
{
        static const char *const names[TABLES] = {
                PF_BPF_TABLE_NAME_SPANS, PF_BPF_TABLE_NAME_BLOCKS, PF_BPF_TABLE_NAME_RULES,
        };
        struct tables t = { 0 };
        int fds[TABLES] = { -1, -1, -1 }, r;

        r = pf_bpf_build_spans(p, &t.spans, &t.span_count, why);
        if (r == 0)
                r = pf_bpf_build_blocks(t.spans, t.span_count, &t.blocks, why);
        if (r == 0)
                r = pf_bpf_build_rules(p, &t.rules, &t.rule_count, why);
        if (r == 0 && find_shared(&t, pf_policy_hash(p), fds) < 0) {
                for (int i = 0; i < TABLES && r == 0; i++) {
                        uint32_t size, count;
                        const void *values = table_values(&t, i, &size, &count);

                        fds[i] = make_table(names[i], size, values, count, why);
                        r = fds[i] < 0 ? fds[i] : 0;
                }
        }
        for (int i = 0; i < TABLES && r == 0; i++)
                if (bpf_map_update_elem(outer[i], &generation, &fds[i], BPF_ANY) < 0)
                        r = pf_bpf_fail(-errno, why, "cannot put the policy's tables in place: %s", strerror(errno));
        *span_count = t.span_count;
        close_all(fds, TABLES);
        free_tables(&t);
        return r;
}

static void fill_locals(struct pf_bpf_settings *s)
{
        struct pf_addr addrs[2 * PF_HOST_LOCALS];
        unsigned count = pf_host_local_addresses(addrs, 2 * PF_HOST_LOCALS);

        _Static_assert(PF_BPF_LOCALS == PF_HOST_LOCALS, "both enforcers keep the same addresses");
        for (unsigned i = 0; i < count; i++) {
                if (addrs[i].family == PF_IPV4)
                        memcpy(&s->local4[s->local4_count++], &addrs[i].v4, 4);
                else
                        memcpy(s->local6[s->local6_count++], &addrs[i].v6, 16);
        }
}

static int fill_settings(const struct pf_policy *p, const char *policy_path, uint64_t fence_id,
                         int fd, uint32_t generation, uint32_t span_count, char *why)
{
        struct pf_bpf_settings s = {
                .span_count = span_count,
                .fence_id = fence_id,
                .magic = PF_BPF_MAGIC,
                .refuse_errno = pf_policy_refuse_errno(p),
                .redirect_connect = pf_policy_redirect_connect(p),
                .steer = pf_policy_steer(p),
                .getsockname_requested = pf_policy_getsockname(p) == PF_GETSOCKNAME_REQUESTED,
                .policy_hash = pf_policy_hash(p),
        };

        snprintf(s.policy_path, sizeof(s.policy_path), "%s", policy_path);
        fill_locals(&s);
        for (unsigned port = 1; port <= PF_PORT_MAX; port++)
                if (pf_policy_plain_allow(p, port))
                        s.plain_allow[port / 64] |= 1ull << (port % 64);
        if (bpf_map_update_elem(fd, &generation, &s, BPF_ANY) < 0)
                return pf_bpf_fail(-errno, why, "cannot fill the settings map: %s", strerror(errno));
        return 0;
}

/* Fill generation `generation` of the fence's maps; the programs do not look
 * at it until live[0] says so. */
static int fill_policy(const struct pf_policy *p, const char *policy_path, uint64_t fence_id,
                       const int outer[TABLES], int settings, uint32_t generation, char *why)
{
        uint32_t span_count = 0;
        int r = put_tables(p, outer, generation, &span_count, why);

        if (r == 0)
                r = fill_settings(p, policy_path, fence_id, settings, generation, span_count, why);
        return r;
}

/* ---- one change at a time ------------------------------------------------- */

static void unpin_all(const char *dir);
static int prune_locked(void (*removed)(uint64_t id, void *ctx), void *ctx);

#define PF_FENCE_LOCK "/run/portfence.lock"

/* Every change of a fence (attach, reload, detach, prune) holds this lock
 * exclusively and a status reads under it shared: two reloads never mix
 * policies, a status never reads half a fence. A descriptor to close, or
 * -1 with the reason in why. */
static int lock_fences(int how, char *why)
{
        struct stat st;
        int fd = open(PF_FENCE_LOCK, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);

        if (fd < 0)
                return pf_bpf_fail(-errno, why, "cannot open '%s': %s", PF_FENCE_LOCK, strerror(errno));
        if (fstat(fd, &st) < 0 || st.st_uid != 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return pf_bpf_fail(-EPERM, why, "'%s' is not root's own lock file", PF_FENCE_LOCK);
        }
        while (flock(fd, how) < 0) {
                if (errno != EINTR) {
                        int r = -errno;

                        close(fd);
                        return pf_bpf_fail(r, why, "cannot lock '%s': %s", PF_FENCE_LOCK, strerror(-r));
                }
        }
        return fd;
}

/* The programs skip their nesting check while the host has one fence:
 * after every change of the list of fenced cgroups, under the lock and
 * before a new fence's programs attach, its length is written down. A count
 * left too high (a loader killed in between) only keeps the check. */
static int count_fences(int fenced, int host)
{
        uint32_t which = PF_BPF_HOST_FENCES;
        int32_t count = 0;
        uint64_t key, next;

        for (int r = bpf_map_get_next_key(fenced, NULL, &next); r == 0; r = bpf_map_get_next_key(fenced, &key, &next)) {
                key = next;
                count++;
        }
        return bpf_map_update_elem(host, &which, &count, BPF_ANY) < 0 ? -errno : 0;
}

/* count_fences() with the host maps of the fence in dir. */
static void count_fences_of(const char *dir)
{
        int fds[] = { open_fence_map(dir, "fenced"), open_fence_map(dir, "host") };

        if (fds[0] >= 0 && fds[1] >= 0)
                count_fences(fds[0], fds[1]);
        close_all(fds, 2);
}

/* Has the attach of the fence in dir committed? A fence an attach left
 * before its commit (kill -9) is inert: its programs decide nothing. One
 * whose generation cannot be read is not called uncommitted (status shows
 * it broken). */
static bool fence_committed(const char *dir)
{
        uint32_t which = PF_BPF_LIVE_GENERATION, generation = 0;
        int live = open_fence_map(dir, "live");

        if (live >= 0) {
                bpf_map_lookup_elem(live, &which, &generation);
                close(live);
        }
        return !(generation & PF_BPF_LIVE_INERT);
}

/* The host's list of fenced cgroups names exactly the committed fences: an
 * attach that died after registering its cgroup must not leave it there (a
 * fence above would leave that cgroup's calls alone), one that died between
 * its commit and registering is added (until then a fence above decides
 * too). */
static void scrub_fenced(void)
{
        DIR *dir = opendir(PF_BPF_PIN_ROOT);
        struct dirent *e;
        char path[4200], fence[4200] = "";
        uint64_t key, next, id;
        int fd = -1;

        while (dir && (e = readdir(dir))) {
                if (!(id = strtoull(e->d_name, NULL, 10)))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", PF_BPF_PIN_ROOT, e->d_name);
                if (fd < 0 && (fd = open_fence_map(path, "fenced")) >= 0)
                        snprintf(fence, sizeof(fence), "%s", path);
                if (fd >= 0 && fence_committed(path) && bpf_map_lookup_elem(fd, &id, &(uint8_t){ 0 }) < 0)
                        bpf_map_update_elem(fd, &id, &(uint8_t){ 1 }, BPF_ANY);
        }
        if (dir)
                closedir(dir);
        for (int r = fd < 0 ? -1 : bpf_map_get_next_key(fd, NULL, &next); r == 0;
             r = bpf_map_get_next_key(fd, &key, &next)) {
                key = next;
                snprintf(path, sizeof(path), "%s/%llu", PF_BPF_PIN_ROOT, (unsigned long long)key);
                if (access(path, F_OK) < 0 || !fence_committed(path))
                        bpf_map_delete_elem(fd, &key);
        }
        if (fd >= 0) {
                close(fd);
                count_fences_of(fence);
        }
}

/* What killed attaches left, found under the lock (no attach is under way):
 * fences still being built (PF_NEW_PREFIX<id>) and fences never committed.
 * Both are inert; removed. */
static void remove_abandoned(void)
{
        DIR *dir = opendir(PF_BPF_PIN_ROOT);
        struct dirent *e;
        char path[4200];

        while (dir && (e = readdir(dir))) {
                bool building = strncmp(e->d_name, PF_NEW_PREFIX, strlen(PF_NEW_PREFIX)) == 0;

                if (!building && !strtoull(e->d_name, NULL, 10))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", PF_BPF_PIN_ROOT, e->d_name);
                if (building || !fence_committed(path))
                        unpin_all(path);
        }
        if (dir)
                closedir(dir);
        scrub_fenced();
}

/* Does dir hold every pin of a fence? */
static bool fence_complete(const char *dir)
{
        char path[4400];

        for (size_t i = 0; i < COUNT(hook_names); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, hook_names[i]);
                if (access(path, F_OK) < 0)
                        return false;
        }
        for (size_t i = 0; i < COUNT(map_names); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, map_names[i]);
                if (access(path, F_OK) < 0)
                        return false;
        }
        return true;
}

/* ---- attach, reload, detach ---------------------------------------------------- */

/* The fence's moved listeners leave the host's steering map: nothing
 * steers to them once their fence is gone. */
static void forget_steering(const char *dir, uint64_t id)
{
        struct pf_bpf_steer_key *keys = calloc(PF_BPF_STEER_MAX, sizeof(*keys)), key;
        int fd = open_fence_map(dir, "steer");
        size_t found = 0;

        /* The fence's keys first, then deleted: a walk of a hash map that
         * deletes as it goes may start over. */
        for (int r = fd < 0 || !keys ? -1 : bpf_map_get_next_key(fd, NULL, &key);
             r == 0 && found < PF_BPF_STEER_MAX; r = bpf_map_get_next_key(fd, &key, &key))
                if (key.fence == id)
                        keys[found++] = key;
        for (size_t i = 0; i < found; i++)
                bpf_map_delete_elem(fd, &keys[i]);
        free(keys);
        if (fd >= 0)
                close(fd);
}

/* The fence of dir (PIN_ROOT/<id> or PIN_ROOT/new-<id>) leaves the host's
 * list of fenced cgroups. */
static void unregister(const char *dir)
{
        const char *base = strrchr(dir, '/');
        char path[4400];
        uint64_t id;
        int fd;

        base = base ? base + 1 : dir;
        if (strncmp(base, PF_NEW_PREFIX, strlen(PF_NEW_PREFIX)) == 0)
                base += strlen(PF_NEW_PREFIX);
        id = strtoull(base, NULL, 10);
        forget_steering(dir, id);
        snprintf(path, sizeof(path), "%s/fenced", dir);
        fd = bpf_obj_get(path);
        if (fd >= 0) {
                bpf_map_delete_elem(fd, &id);
                close(fd);
                count_fences_of(dir);
        }
}

static void unpin_all(const char *dir)
{
        char path[4200];

        unregister(dir);
        for (size_t i = 0; i < COUNT(hook_names); i++) {
                int fd;

                snprintf(path, sizeof(path), "%s/%s", dir, hook_names[i]);
                fd = bpf_obj_get(path);
                if (fd >= 0) {
                        bpf_link_detach(fd);
                        close(fd);
                }
                unlink(path);
        }
        for (size_t i = 0; i < COUNT(map_names); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, map_names[i]);
                unlink(path);
        }
        for (size_t i = 0; i < COUNT(old_map_names); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, old_map_names[i]);
                unlink(path);
        }
        rmdir(dir);
}

/* The cookie of the network namespace this thread is in, 0 if the kernel
 * cannot tell (before Linux 5.14): then the fence steers nothing. */
static uint64_t netns_cookie(void)
{
        uint64_t cookie = 0;
        socklen_t len = sizeof(cookie);
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
        if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) < 0)
                cookie = 0;
        if (fd >= 0)
                close(fd);
        return cookie;
}

/* Steering is for the network namespace the attach runs in: its cookie,
 * written before the programs are linked. */
static int set_steering(struct portfence_bpf *skel, char *why)
{
        uint32_t zero = 0;
        uint64_t cookie = netns_cookie();

        if (bpf_map_update_elem(bpf_map__fd(skel->maps.steer_netns), &zero, &cookie, BPF_ANY) < 0)
                return pf_bpf_fail(-errno, why, "cannot write the steering namespace: %s", strerror(errno));
        return 0;
}

/* Every program to its hook: the cgroup's, and the sk_lookup program to
 * the network namespace the attach runs in. */
static struct bpf_link *attach_program(struct bpf_program *prog, int cgroup_fd)
{
        struct bpf_link *link;
        int netns;

        if (bpf_program__type(prog) != BPF_PROG_TYPE_SK_LOOKUP)
                return bpf_program__attach_cgroup(prog, cgroup_fd);
        netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (netns < 0)
                return NULL;
        link = bpf_program__attach_netns(prog, netns);
        close(netns);
        return link;
}

static int attach_and_pin(struct portfence_bpf *skel, int cgroup_fd, const char *dir, char *why)
{
        struct bpf_program *prog;
        struct bpf_map *map;
        char path[4200];

        bpf_object__for_each_program(prog, skel->obj) {
                const char *name = bpf_program__name(prog) + 3;        /* "pf_bind4" */
                struct bpf_link *link = attach_program(prog, cgroup_fd);
                int r;

                if (!link)
                        return pf_bpf_fail(-errno, why, "cannot attach '%s': %s", name, strerror(errno));
                r = snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path) ?
                    bpf_link__pin(link, path) : -ENAMETOOLONG;
                bpf_link__disconnect(link);     /* the pin keeps it attached */
                bpf_link__destroy(link);
                if (r < 0)
                        return pf_bpf_fail(r, why, "cannot pin '%s': %s", path, strerror(-r));
        }
        bpf_object__for_each_map(map, skel->obj) {
                const char *name = bpf_map__name(map);
                int r;

                if (strcmp(name, "socks") == 0 || strchr(name, '.'))    /* per socket; .rodata */
                        continue;
                r = snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path) ?
                    bpf_map__pin(map, path) : -ENAMETOOLONG;
                if (r < 0)
                        return pf_bpf_fail(r, why, "cannot pin '%s': %s", path, strerror(-r));
        }
        return 0;
}

/* live[PF_BPF_LIVE_GENERATION] = value. */
static int set_live(int live, uint32_t value, char *why)
{
        uint32_t which = PF_BPF_LIVE_GENERATION;

        if (bpf_map_update_elem(live, &which, &value, BPF_ANY) < 0)
                return pf_bpf_fail(-errno, why, "cannot write the fence's generation: %s", strerror(errno));
        return 0;
}

/* id joins the host's list of fenced cgroups, and the count follows. */
static int register_fence(int fenced, int host, uint64_t id, char *why)
{
        int r;

        if (bpf_map_update_elem(fenced, &id, &(uint8_t){ 1 }, BPF_ANY) < 0)
                return pf_bpf_fail(-errno, why, "cannot register the fence: %s", strerror(errno));
        r = count_fences(fenced, host);
        return r < 0 ? pf_bpf_fail(r, why, "cannot count the fences: %s", strerror(-r)) : 0;
}

static int attach_locked(const struct pf_policy *policy, const char *policy_path,
                         const struct pf_cgroup *cgroup, char *why)
{
        struct portfence_bpf *skel = NULL;
        char dir[4200], building[4200];
        int cgroup_fd = -1, r;

        pin_dir(cgroup, dir, sizeof(dir));
        if (access(dir, F_OK) == 0) {
                if (fence_complete(dir))
                        return pf_bpf_fail(-EEXIST, why, "%s is fenced already (portfence cgroup reload or detach)",
                                    cgroup->path);
                unpin_all(dir);         /* half a fence (an older attach that died): made anew */
        }
        building_dir(cgroup, building, sizeof(building));
        if (mkdir(building, 0700) < 0)
                return pf_bpf_fail(-errno, why, "cannot create '%s': %s", building, strerror(errno));
        skel = portfence_bpf__open();
        if (!skel) {
                r = pf_bpf_fail(-errno, why, "cannot open the BPF programs: %s", strerror(errno));
                goto out;
        }
        share_host_map(skel->maps.moved, "moved");
        share_host_map(skel->maps.moved_back, "moved_back");
        share_host_map(skel->maps.fenced, "fenced");
        share_host_map(skel->maps.host, "host");
        share_host_map(skel->maps.peers, "peers");
        share_host_map(skel->maps.decided, "decided");
        share_host_map(skel->maps.steer, "steer");
        r = portfence_bpf__load(skel);
        if (r < 0) {
                r = pf_bpf_fail(r, why, "the kernel refused the BPF programs: %s (a kernel with cgroup "
                         "sock_addr hooks, bpf_set_retval and socket storage is needed; -v shows "
                         "the verifier's log)", strerror(-r));
                goto out;
        }
        /* Filled before attached: the cgroup is never fenced by empty maps;
         * and inert until the commit below: a kill in between leaves
         * programs that decide nothing, never half a fence. */
        r = fill_policy(policy, policy_path, cgroup->id,
                        (int[TABLES]){ bpf_map__fd(skel->maps.spans), bpf_map__fd(skel->maps.blocks),
                                       bpf_map__fd(skel->maps.rules) },
                        bpf_map__fd(skel->maps.settings), 0, why);
        if (r == 0)
                r = set_live(bpf_map__fd(skel->maps.live), PF_BPF_LIVE_INERT, why);
        if (r == 0)
                r = set_steering(skel, why);
        if (r < 0)
                goto out;
        cgroup_fd = open(cgroup->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cgroup_fd < 0) {
                r = pf_bpf_fail(-errno, why, "cannot open '%s': %s", cgroup->path, strerror(errno));
                goto out;
        }
        r = attach_and_pin(skel, cgroup_fd, building, why);
        if (r == 0 && rename(building, dir) < 0)
                r = pf_bpf_fail(-errno, why, "cannot rename '%s': %s", building, strerror(errno));
        if (r < 0)
                goto out;
        /* The commit: from this write on, the fence decides, whole. */
        r = set_live(bpf_map__fd(skel->maps.live), 0, why);
        /* Then a fence above leaves its calls alone: until this line both
         * decide, the inner one first. */
        if (r == 0)
                r = register_fence(bpf_map__fd(skel->maps.fenced), bpf_map__fd(skel->maps.host), cgroup->id, why);
        if (r < 0)
                unpin_all(dir);
out:
        if (r < 0)
                unpin_all(building);
        if (cgroup_fd >= 0)
                close(cgroup_fd);
        portfence_bpf__destroy(skel);
        return r;
}

int pf_bpf_attach(const struct pf_policy *policy, const char *policy_path,
                  const struct pf_cgroup *cgroup, bool verbose, char *why)
{
        int lock, r;

        verbose_libbpf = verbose;
        libbpf_set_print(libbpf_print);
        r = pf_bpf_ready(why);
        if (r < 0)
                return r;
        if (mkdir(PF_BPF_PIN_ROOT, 0700) < 0 && errno != EEXIST)
                return pf_bpf_fail(-errno, why, "cannot create '%s': %s", PF_BPF_PIN_ROOT, strerror(errno));
        lock = lock_fences(LOCK_EX, why);
        if (lock < 0)
                return lock;
        remove_abandoned();
        prune_locked(NULL, NULL);       /* cheap: one link read per fence */
        r = attach_locked(policy, policy_path, cgroup, why);
        close(lock);
        return r;
}

static int open_pinned(const struct pf_cgroup *cgroup, const char *name, char *why)
{
        char path[4200];
        int fd;

        pin_dir(cgroup, path, sizeof(path));
        if (access(path, F_OK) < 0)
                return pf_bpf_fail(-ENOENT, why, "%s is not fenced by portfence", cgroup->path);
        snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s", name);
        fd = bpf_obj_get(path);
        if (fd < 0)
                return pf_bpf_fail(-errno, why, "cannot open '%s': %s", path, strerror(errno));
        return fd;
}

static int reload_locked(const struct pf_policy *policy, const char *policy_path,
                         const struct pf_cgroup *cgroup, char *why)
{
        enum { SETTINGS = TABLES, LIVE, MAPS };       /* the tables' outer maps first */
        static const char *const names[MAPS] = { "spans", "blocks", "rules", "settings", "live" };
        int fds[MAPS] = { -1, -1, -1, -1, -1 };
        uint32_t zero = 0, generation = 0, next;
        int r = 0;

        for (int i = 0; i < MAPS && r == 0; i++) {
                fds[i] = open_pinned(cgroup, names[i], why);
                if (fds[i] < 0)
                        r = fds[i];
        }
        if (r == 0 && bpf_map_lookup_elem(fds[LIVE], &zero, &generation) < 0)
                r = pf_bpf_fail(-errno, why, "cannot read the live generation: %s", strerror(errno));
        next = (generation & 1) ^ 1;
        if (r == 0)
                r = fill_policy(policy, policy_path, cgroup->id, fds, fds[SETTINGS], next, why);
        /* One 4-byte write switches every map to the new half at once. */
        if (r == 0 && bpf_map_update_elem(fds[LIVE], &zero, &next, BPF_ANY) < 0)
                r = pf_bpf_fail(-errno, why, "cannot switch to the new policy: %s", strerror(errno));
        close_all(fds, MAPS);
        return r;
}

bool pf_bpf_attach_unfinished(const struct pf_cgroup *cgroup)
{
        char dir[4200], building[4200];

        pin_dir(cgroup, dir, sizeof(dir));
        building_dir(cgroup, building, sizeof(building));
        return access(building, F_OK) == 0 || (access(dir, F_OK) == 0 && !fence_committed(dir));
}

int pf_bpf_reload(const struct pf_policy *policy, const char *policy_path,
                  const struct pf_cgroup *cgroup, char *why)
{
        int lock = lock_fences(LOCK_EX, why), r;

        if (lock < 0)
                return lock;
        if (pf_bpf_attach_unfinished(cgroup)) {
                close(lock);
                return pf_bpf_fail(-ENOENT, why, "%s: its attach did not finish (portfence cgroup detach, then "
                                   "attach)", cgroup->path);
        }
        remove_abandoned();
        r = reload_locked(policy, policy_path, cgroup, why);
        close(lock);
        return r;
}

int pf_bpf_detach(const struct pf_cgroup *cgroup, char *why)
{
        char dir[4200], building[4200], events_lock[128];
        bool fenced, unfinished;
        int lock = lock_fences(LOCK_EX, why), r = 0;

        if (lock < 0)
                return lock;
        pin_dir(cgroup, dir, sizeof(dir));
        building_dir(cgroup, building, sizeof(building));
        fenced = access(dir, F_OK) == 0;
        unfinished = pf_bpf_attach_unfinished(cgroup);
        if (!fenced && !unfinished)
                r = cgroup->path[0] ? pf_bpf_fail(-ENOENT, why, "%s is not fenced by portfence", cgroup->path)
                                    : pf_bpf_fail(-ENOENT, why, "cgroup id %llu is not fenced by portfence",
                                           (unsigned long long)cgroup->id);
        if (r == 0) {
                unpin_all(building);
                unpin_all(dir);
                snprintf(events_lock, sizeof(events_lock), "/run/portfence-events-%llu.lock",
                         (unsigned long long)cgroup->id);
                unlink(events_lock);
        }
        if (r == 0 && (access(dir, F_OK) == 0 || access(building, F_OK) == 0))
                r = pf_bpf_fail(-ENOTEMPTY, why, "%s: could not remove everything", dir);
        remove_abandoned();
        close(lock);
        return r == 0 && unfinished ? 1 : r;
}

/* ---- defunct fences -------------------------------------------------------------- */

/* A fence whose cgroup is gone: the kernel keeps its links (they hold no
 * cgroup any more, cgroup id 0) and its pins until someone removes them. */
static bool fence_defunct(uint64_t id)
{
        struct pf_cgroup cgroup = { .id = id };
        struct bpf_link_info info = { 0 };
        uint32_t len = sizeof(info);
        char why[PF_WHY_SIZE];
        int fd = open_pinned(&cgroup, "bind4", why);
        bool defunct;

        if (fd < 0)
                return false;   /* not a whole fence: an attach or detach under way */
        defunct = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == BPF_LINK_TYPE_CGROUP &&
                  info.cgroup.cgroup_id == 0;
        close(fd);
        return defunct;
}

static int prune_locked(void (*removed)(uint64_t id, void *ctx), void *ctx)
{
        struct dirent *e;
        DIR *dir = opendir(PF_BPF_PIN_ROOT);
        char path[4200];
        int count = 0;

        if (!dir)
                return 0;
        while ((e = readdir(dir))) {
                uint64_t id = strtoull(e->d_name, NULL, 10);

                if (e->d_name[0] == '.' || !id || !fence_defunct(id))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", PF_BPF_PIN_ROOT, e->d_name);
                unpin_all(path);
                if (removed)
                        removed(id, ctx);
                count++;
        }
        closedir(dir);
        return count;
}

int pf_bpf_prune(void (*removed)(uint64_t id, void *ctx), void *ctx, char *why)
{
        int lock = lock_fences(LOCK_EX, why), count;

        if (lock < 0)
                return lock;
        remove_abandoned();
        count = prune_locked(removed, ctx);
        close(lock);
        return count;
}

bool pf_bpf_is_fenced(const struct pf_cgroup *cgroup)
{
        char dir[4200];

        pin_dir(cgroup, dir, sizeof(dir));
        return access(dir, F_OK) == 0;
}

int pf_bpf_fencing_ancestor(const struct pf_cgroup *cgroup, struct pf_cgroup *ancestor)
{
        char mount[4096], why[PF_WHY_SIZE], dir[4200];
        size_t len;
        struct stat st;

        if (pf_cgroup_mount(mount, sizeof(mount), why) < 0 || !cgroup->path[0])
                return -ENOENT;
        len = strlen(mount);
        snprintf(ancestor->path, sizeof(ancestor->path), "%s", cgroup->path);
        for (;;) {
                char *slash = strrchr(ancestor->path, '/');

                if (!slash || (size_t)(slash - ancestor->path) < len)
                        return -ENOENT;
                *slash = '\0';
                if (stat(ancestor->path, &st) < 0)
                        return -ENOENT;
                ancestor->id = st.st_ino;
                ancestor->root = strlen(ancestor->path) == len;
                pin_dir(ancestor, dir, sizeof(dir));
                if (access(dir, F_OK) == 0)
                        return 0;
        }
}

/* ---- status ---------------------------------------------------------------------- */

static uint64_t wanted_id;
static char found_path[4096];

static int match_inode(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        (void)ftw;
        if (type == FTW_D && st->st_ino == wanted_id) {
                snprintf(found_path, sizeof(found_path), "%s", path);
                return 1;
        }
        return 0;
}

/* The cgroup directory whose inode is id, or "" when it is gone. */
static const char *cgroup_path_of(uint64_t id)
{
        char mount[4096], why[PF_WHY_SIZE];

        found_path[0] = '\0';
        wanted_id = id;
        if (pf_cgroup_mount(mount, sizeof(mount), why) == 0)
                nftw(mount, match_inode, 32, FTW_PHYS | FTW_MOUNT);
        return found_path;
}

static int read_counters(int fd, uint64_t totals[PF_FENCE_COUNTERS])
{
        int cpus = libbpf_num_possible_cpus();
        uint64_t *values;

        if (cpus <= 0 || !(values = calloc((size_t)cpus, sizeof(*values))))
                return -ENOMEM;
        for (uint32_t k = 0; k < PF_FENCE_COUNTERS; k++) {
                totals[k] = 0;
                if (bpf_map_lookup_elem(fd, &k, values) == 0)
                        for (int c = 0; c < cpus; c++)
                                totals[k] += values[c];
        }
        free(values);
        return 0;
}

static int status_one(const struct pf_cgroup *of, struct pf_fence_status *out, char *why)
{
        struct pf_cgroup cgroup = *of;
        uint64_t id = of->id;
        struct pf_bpf_settings s;
        uint32_t zero = 0, generation = 0;
        int settings = open_pinned(&cgroup, "settings", why);
        int live = open_pinned(&cgroup, "live", why);
        int counters = open_pinned(&cgroup, "counters", why);
        int r = settings < 0 ? settings : live < 0 ? live : counters < 0 ? counters : 0;

        *out = (struct pf_fence_status){ .cgroup_id = id };
        if (r == 0 && bpf_map_lookup_elem(live, &zero, &generation) < 0)
                r = pf_bpf_fail(-errno, why, "cannot read the generation of cgroup %llu", (unsigned long long)id);
        out->unfinished = generation & PF_BPF_LIVE_INERT;
        generation &= 1;
        if (r == 0 && bpf_map_lookup_elem(settings, &generation, &s) < 0)
                r = pf_bpf_fail(-errno, why, "cannot read the settings of cgroup %llu", (unsigned long long)id);
        if (r == 0)
                r = read_counters(counters, out->counters);
        if (r == 0) {
                out->defunct = fence_defunct(id);
                snprintf(out->cgroup, sizeof(out->cgroup), "%s", out->defunct ? "" : cgroup_path_of(id));
                snprintf(out->policy, sizeof(out->policy), "%s", s.policy_path);
                out->policy_hash = s.policy_hash;
        }
        if (settings >= 0)
                close(settings);
        if (live >= 0)
                close(live);
        if (counters >= 0)
                close(counters);
        return r;
}

/* What an attach killed before its rename left: only its cgroup id is known. */
static struct pf_fence_status unfinished_status(uint64_t id)
{
        return (struct pf_fence_status){ .cgroup_id = id, .unfinished = true, .broken = true };
}

int pf_bpf_status(const struct pf_cgroup *only, pf_fence_visit visit, void *ctx, char *why)
{
        struct pf_fence_status status;
        struct dirent *e;
        char building[4200];
        DIR *dir;
        int r = 0, lock;

        if (access(PF_BPF_PIN_ROOT, F_OK) < 0 && !only)
                return 0;       /* nothing fenced */
        lock = lock_fences(LOCK_SH, why);
        if (lock < 0)
                return lock;
        if (only) {
                building_dir(only, building, sizeof(building));
                if (!pf_bpf_is_fenced(only) && access(building, F_OK) == 0)
                        status = unfinished_status(only->id);
                else
                        r = status_one(only, &status, why);
                r = r < 0 ? r : visit(&status, ctx);
                close(lock);
                return r;
        }
        dir = opendir(PF_BPF_PIN_ROOT);
        while (dir && (e = readdir(dir))) {
                char one_why[PF_WHY_SIZE], path[4200];
                bool new = strncmp(e->d_name, PF_NEW_PREFIX, strlen(PF_NEW_PREFIX)) == 0;
                uint64_t id = strtoull(e->d_name + (new ? strlen(PF_NEW_PREFIX) : 0), NULL, 10);
                int one;

                if (e->d_name[0] == '.' || !id)
                        continue;
                if (new) {
                        status = unfinished_status(id);
                        visit(&status, ctx);
                        continue;
                }
                snprintf(path, sizeof(path), "%s/%s", PF_BPF_PIN_ROOT, e->d_name);
                /* Under the lock no attach or detach is half done: a fence
                 * missing pins is broken (reported; the rest are listed). */
                one = fence_complete(path) ? status_one(&(struct pf_cgroup){ .id = id }, &status, one_why)
                                           : -ENOENT;
                if (one < 0)    /* shown as broken, among the others */
                        status = (struct pf_fence_status){ .cgroup_id = id, .broken = true };
                visit(&status, ctx);
        }
        if (dir)
                closedir(dir);
        close(lock);
        return r;
}

/* ---- memory ---------------------------------------------------------------------- */

static uint64_t memlock_of(int fd)
{
        char path[64], line[256];
        unsigned long long bytes = 0;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
        f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "memlock: %llu", &bytes) == 1)
                        break;
        if (f)
                fclose(f);
        return bytes;
}

static void visit_map(int fd, pf_map_visit visit, void *ctx)
{
        struct bpf_map_info info = { 0 };
        uint32_t len = sizeof(info);

        if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
                visit(info.id, info.name, memlock_of(fd), ctx);
}

int pf_bpf_fence_maps(const struct pf_cgroup *cgroup, pf_map_visit visit, void *ctx, char *why)
{
        for (size_t i = 0; i < COUNT(map_names); i++) {
                int fd = open_pinned(cgroup, map_names[i], why);
                bool outer = false;

                for (int t = 0; t < TABLES; t++)
                        outer = outer || strcmp(map_names[i], table_maps[t]) == 0;

                if (fd < 0)
                        return fd;
                visit_map(fd, visit, ctx);
                for (uint32_t generation = 0; outer && generation < PF_BPF_GENERATIONS; generation++) {
                        uint32_t id;
                        int inner;

                        if (bpf_map_lookup_elem(fd, &generation, &id) < 0 || (inner = bpf_map_get_fd_by_id(id)) < 0)
                                continue;
                        visit_map(inner, visit, ctx);
                        close(inner);
                }
                close(fd);
        }
        return 0;
}

/* ---- events ---------------------------------------------------------------------- */

static volatile sig_atomic_t stop_events;

static void on_stop(int sig)
{
        (void)sig;
        stop_events = 1;
}

struct event_sink {
        pf_event_visit visit;
        void *ctx;
        bool skip;              /* draining what was decided before we started */
        unsigned left;          /* 0: no limit */
};

static void decode_event(const struct pf_bpf_event *e, struct pf_fence_event *out)
{
        static const char *const hooks[PF_BPF_HOOKS] = { "bind", "connect", "sendmsg" };

        *out = (struct pf_fence_event){
                .cgroup_id = e->cgroup_id, .pid = e->pid,
                .call = e->hook < PF_BPF_HOOKS ? hooks[e->hook] : "?",
                .proto = e->proto == PF_BPF_UDP ? PF_UDP : PF_TCP,
                .action = (enum pf_action)(e->action % PF_BPF_ACTIONS),
                .port = e->port, .target = e->target, .rule = e->rule,
        };
        out->err = out->action == PF_REFUSE ? e->err : 0;
        memcpy(out->comm, e->comm, sizeof(e->comm));
        out->comm[sizeof(e->comm)] = '\0';
        if (e->family == PF_BPF_IPV6)
                pf_addr_set_in6(&out->addr, (const struct in6_addr *)(const void *)e->addr);
        else
                pf_addr_set_in4(&out->addr, (const struct in_addr *)(const void *)e->addr);
}

static int on_event(void *ctx, void *data, size_t size)
{
        struct event_sink *sink = ctx;
        struct pf_fence_event event;

        if (size < sizeof(struct pf_bpf_event) || sink->skip)
                return 0;
        if (stop_events)
                return -ECANCELED;      /* --count reached: leave the rest unread */
        decode_event(data, &event);
        sink->visit(&event, sink->ctx);
        if (sink->left && --sink->left == 0)
                stop_events = 1;
        return 0;
}

/* A ring buffer has one consumer: two readers would each miss what the
 * other took. The second one is refused, by a lock per fence. */
static int claim_events(const struct pf_cgroup *cgroup, char *why)
{
        char path[128];
        struct stat st;
        int fd;

        snprintf(path, sizeof(path), "/run/portfence-events-%llu.lock", (unsigned long long)cgroup->id);
        fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return pf_bpf_fail(-errno, why, "cannot open '%s': %s", path, strerror(errno));
        if (fstat(fd, &st) < 0 || st.st_uid != 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return pf_bpf_fail(-EPERM, why, "'%s' is not root's own lock file", path);
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                close(fd);
                return pf_bpf_fail(-EBUSY, why, "another 'portfence cgroup events' (or 'cgroup learn') reads "
                            "the events of %s: a fence's events go to one reader", cgroup->path[0] ?
                            cgroup->path : "this fence");
        }
        return fd;
}

/* live[PF_BPF_LIVE_READER]: do the programs write events? A reader killed
 * before it says no leaves them writing, as if it read on. */
static int set_reader(const struct pf_cgroup *cgroup, uint32_t reading, char *why)
{
        uint32_t which = PF_BPF_LIVE_READER;
        int fd = open_pinned(cgroup, "live", why), r = 0;

        if (fd < 0)
                return fd;
        if (bpf_map_update_elem(fd, &which, &reading, BPF_ANY) < 0)
                r = pf_bpf_fail(-errno, why, "cannot ask the fence for its events: %s", strerror(errno));
        close(fd);
        return r;
}

int pf_bpf_events(const struct pf_cgroup *cgroup, unsigned count, pf_event_visit visit, void *ctx,
                  char *why)
{
        char ignored[PF_WHY_SIZE];
        struct event_sink sink = { .visit = visit, .ctx = ctx, .skip = true, .left = count };
        struct sigaction sa = { .sa_handler = on_stop };
        struct ring_buffer *rb;
        int claim = claim_events(cgroup, why), fd, r = 0;

        if (claim < 0)
                return claim;
        fd = open_pinned(cgroup, "events", why);
        if (fd < 0) {
                close(claim);
                return fd;
        }
        rb = ring_buffer__new(fd, on_event, &sink, NULL);
        if (!rb) {
                close(fd);
                close(claim);
                return pf_bpf_fail(-errno, why, "cannot read the events: %s", strerror(errno));
        }
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGALRM, &sa, NULL);  /* the caller's alarm(): a --duration */
        ring_buffer__consume(rb);
        sink.skip = false;
        r = set_reader(cgroup, 1, why);
        while (r == 0 && !stop_events) {
                r = ring_buffer__poll(rb, 200);
                if (r == -EINTR || r == -ECANCELED) {
                        r = 0;
                        continue;
                }
                if (r < 0) {
                        r = pf_bpf_fail(r, why, "reading the events: %s", strerror(-r));
                        break;
                }
                r = 0;
        }
        set_reader(cgroup, 0, ignored);
        ring_buffer__free(rb);
        close(fd);
        close(claim);
        return r;
}
