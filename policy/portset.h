/* SPDX-License-Identifier: MIT */
/* Sets of ports over 1-65535: a fixed bitmap, parsed once, every later
 * question a bit test. Port 0 is never a member. */
#pragma once

/* The one shape of a library error: a negative errno returned, and the
 * reason, a sentence without the program's name, written into a buffer of
 * PF_WHY_SIZE bytes the caller passes as `why`. (A policy file's errors are
 * a list: struct pf_diag.) */
#define PF_WHY_SIZE 512

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PF_PORT_MAX 65535u
#define PF_PORTSET_WORDS ((PF_PORT_MAX + 1) / 64)

struct pf_portset {
        uint64_t words[PF_PORTSET_WORDS];
};

/* An inclusive range of ports, 1 <= lo <= hi <= 65535. */
struct pf_range {
        uint16_t lo;
        uint16_t hi;
};

void pf_portset_clear(struct pf_portset *set);
void pf_portset_fill(struct pf_portset *set);            /* 1-65535 */
void pf_portset_add_range(struct pf_portset *set, unsigned lo, unsigned hi);
void pf_portset_union(struct pf_portset *dst, const struct pf_portset *src);
void pf_portset_intersect(struct pf_portset *dst, const struct pf_portset *src);
void pf_portset_subtract(struct pf_portset *dst, const struct pf_portset *src);

static inline bool pf_portset_has(const struct pf_portset *set, unsigned port)
{
        return port <= PF_PORT_MAX && (set->words[port / 64] >> (port % 64) & 1);
}

static inline void pf_portset_add(struct pf_portset *set, unsigned port)
{
        if (port >= 1 && port <= PF_PORT_MAX)
                set->words[port / 64] |= (uint64_t)1 << (port % 64);
}

unsigned pf_portset_count(const struct pf_portset *set);
unsigned pf_portset_range_count(const struct pf_portset *set);  /* runs of ports */
bool pf_portset_empty(const struct pf_portset *set);

/* The first port >= from that is (member) or is not (!member) in the set;
 * PF_PORT_MAX + 1 when there is none. */
unsigned pf_portset_find(const struct pf_portset *set, unsigned from, bool member);

/* Iterate the maximal ranges of a set in ascending order: start with
 * *lo = 0; returns false when there is no range above the previous one. */
bool pf_portset_next_range(const struct pf_portset *set, struct pf_range *range);

/* Whether any port lo..hi is in the set; costs (hi - lo) / 64 word tests. */
bool pf_portset_overlaps_range(const struct pf_portset *set, unsigned lo, unsigned hi);

/* Parse "80", "1024-5000", "1-1023, 49152-65535" (spaces allowed around
 * items) into sorted, merged ranges in a new array *out (free() it). Returns
 * 0, -ENOMEM, or -EINVAL with *why set to a static reason; *out and *count
 * are written only on success. */
int pf_ranges_parse(const char *text, struct pf_range **out, size_t *count, char *why);

/* The same into a set (cleared first); *out untouched on error. */
int pf_portset_parse(const char *text, struct pf_portset *out, char *why);

/* Format as the shortest range list ("1024-5000,49152-65535"; "" when
 * empty), snprintf style: returns the length the full text needs. */
size_t pf_portset_format(const struct pf_portset *set, char *buf, size_t size);
