/* SPDX-License-Identifier: MIT */
/* Filling a fence's maps from a compiled policy: its tables, made whole
 * once per policy, frozen and shared by every fence of it; its settings;
 * the maps one for the host. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "fence.h"
#include "host.h"
#include "loader.h"
#include "portfence-api.bpf.h"
#include "tables.h"

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
const char *const fence_table_maps[TABLES] = { "spans", "blocks", "rules" };

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

struct shared_search {
        const struct tables *t;
        uint64_t hash;
        int *fds;
};

/* Does the fence in dir use tables equal to ours? 1 with them in fds. */
static int tables_of(const char *dir, uint64_t id, bool building, void *ctx)
{
        struct shared_search *want = ctx;
        struct pf_bpf_settings s;
        uint32_t zero = 0, generation;
        int live, settings, outer[TABLES], found = 0;

        (void)id;
        if (building)
                return 0;
        live = fence_open_map(dir, "live");
        settings = fence_open_map(dir, "settings");
        for (int i = 0; i < TABLES; i++)
                outer[i] = fence_open_map(dir, fence_table_maps[i]);
        if (live >= 0 && settings >= 0 && bpf_map_lookup_elem(live, &zero, &generation) == 0 &&
            (generation &= 1, bpf_map_lookup_elem(settings, &generation, &s) == 0) &&
            s.magic == PF_BPF_MAGIC && s.policy_hash == want->hash && s.span_count == want->t->span_count) {
                found = 1;
                for (int i = 0; i < TABLES && found; i++) {
                        uint32_t size, count;
                        const void *values = table_values(want->t, i, &size, &count);

                        want->fds[i] = table_if_equal(outer[i], generation, size, values, count);
                        found = want->fds[i] >= 0;
                }
                if (!found)
                        fence_close_all(want->fds, TABLES);
        }
        fence_close_all(outer, TABLES);
        fence_close_all((int[]){ live, settings }, 2);
        return found;
}

/* The tables another fence uses for this very policy (found by its hash,
 * taken only when equal value by value): 0 with fds[SPANS..RULES], or -1. */
static int find_shared(const struct tables *t, uint64_t hash, int fds[TABLES])
{
        struct shared_search want = { .t = t, .hash = hash, .fds = fds };

        for (int i = 0; i < TABLES; i++)
                fds[i] = -1;
        return fence_each(tables_of, &want) > 0 ? 0 : -1;
}

/* Some maps are one for the whole host: the registry of moved ports (a
 * client in one fence follows a server another fence moved, when its own
 * policy remaps that port too), its way back, the list of fenced cgroups,
 * the host's counts, the redirected sockets' destinations and the marks of
 * the fence that decided a call. Each fence
 * after the first costs nothing for them. Taken from
 * any fence that has one of the same shape. */
struct host_map {
        struct bpf_map *map;
        const char *name;
};

/* Take the fence's map of that name if it has our shape: 1 when taken. */
static int reuse_map_of(const char *dir, uint64_t id, bool building, void *ctx)
{
        struct host_map *want = ctx;
        struct bpf_map_info info = { 0 };
        uint32_t len = sizeof(info);
        int fd, shared;

        (void)id;
        if (building || (fd = fence_open_map(dir, want->name)) < 0)
                return 0;
        shared = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == bpf_map__type(want->map) &&
                 info.key_size == bpf_map__key_size(want->map) &&
                 info.value_size == bpf_map__value_size(want->map) &&
                 info.max_entries == bpf_map__max_entries(want->map) && bpf_map__reuse_fd(want->map, fd) == 0;
        close(fd);
        return shared;
}

void fence_share_host_map(struct bpf_map *map, const char *name)
{
        fence_each(reuse_map_of, &(struct host_map){ .map = map, .name = name });
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
static int put_tables(const struct pf_policy *p, uint64_t hash, const int outer[TABLES], uint32_t generation,
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
        if (r == 0 && find_shared(&t, hash, fds) < 0) {
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
        fence_close_all(fds, TABLES);
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

static int fill_settings(const struct pf_policy *p, uint64_t hash, const char *policy_path, uint64_t fence_id,
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
                .policy_hash = hash,
        };
        const struct pf_portset *plain = pf_policy_plain_allow_set(p);

        snprintf(s.policy_path, sizeof(s.policy_path), "%s", policy_path);
        fill_locals(&s);
        _Static_assert(sizeof(s.plain_allow) == sizeof(plain->words), "one bit per port, both sides");
        memcpy(s.plain_allow, plain->words, sizeof(s.plain_allow));
        if (bpf_map_update_elem(fd, &generation, &s, BPF_ANY) < 0)
                return pf_bpf_fail(-errno, why, "cannot fill the settings map: %s", strerror(errno));
        return 0;
}

/* Fill generation `generation` of the fence's maps; the programs do not look
 * at it until live[0] says so. */
int fence_fill_policy(const struct pf_policy *p, const char *policy_path, uint64_t fence_id,
                       const int outer[TABLES], int settings, uint32_t generation, char *why)
{
        uint64_t hash = pf_policy_hash(p);     /* hashes the whole compiled policy: once */
        uint32_t span_count = 0;
        int r = put_tables(p, hash, outer, generation, &span_count, why);

        if (r == 0)
                r = fill_settings(p, hash, policy_path, fence_id, settings, generation, span_count, why);
        return r;
}
