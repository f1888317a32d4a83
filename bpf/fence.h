/* SPDX-License-Identifier: MIT */
/* What the loader's three parts share, not an interface of libpfbpf:
 * loader.c (a fence's life: pins, lock, attach, reload, detach, prune),
 * fill.c (filling its maps from a compiled policy) and report.c (status,
 * memory, events). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bpf/libbpf.h>

#include "cgroup.h"
#include "policy.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define PF_NEW_PREFIX "new-"    /* bpffs refuses names with a dot */

/* A fence's maps of tables, or one generation's tables: descriptors. */
enum { SPANS, BLOCKS, RULES, TABLES };
extern const char *const fence_table_maps[TABLES];
/* The maps pinned in a fence's directory. */
extern const char *const fence_map_names[];
extern const size_t fence_map_count;

/* PF_BPF_PIN_ROOT/<id>, and where an attach builds it before the rename. */
void fence_pin_dir(const struct pf_cgroup *cgroup, char *out, size_t size);
void fence_building_dir(const struct pf_cgroup *cgroup, char *out, size_t size);
/* A map pinned in dir, or a negative errno. */
int fence_open_map(const char *dir, const char *name);
/* A map of cgroup's fence, or a negative errno with why (not fenced). */
int fence_open_pinned(const struct pf_cgroup *cgroup, const char *name, char *why);
/* Every fence pinned on this host, and every one an attach is building
 * (PF_NEW_PREFIX<id>): visit(dir, id, building, ctx) for each until one
 * returns non-zero, which is returned (0 when all were visited). */
int fence_each(int (*visit)(const char *dir, uint64_t id, bool building, void *ctx), void *ctx);
/* Close every descriptor of fds that is open, and mark it closed (-1). */
void fence_close_all(int *fds, size_t n);

/* One of root's lock files, opened (created 0600, no symlink followed,
 * checked root's on its descriptor) and locked (flock how): a descriptor to
 * close, or a negative errno with why (-EWOULDBLOCK, said by the caller,
 * when LOCK_NB found it taken). */
int fence_open_lock(const char *path, int how, char *why);
/* Every change of a fence holds this one exclusively, a status shared. */
int fence_lock(int how, char *why);
/* Is the fence in dir whole (every pin there)? Its cgroup gone? */
bool fence_complete(const char *dir);
bool fence_defunct(uint64_t id);

/* fill.c: the policy's tables and settings of one generation; the maps one
 * for the whole host, taken from a fence that has them. */
int fence_fill_policy(const struct pf_policy *p, const char *policy_path, uint64_t fence_id,
                      const int outer[TABLES], int settings, uint32_t generation, char *why);
void fence_share_host_map(struct bpf_map *map, const char *name);
