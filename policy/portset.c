/* SPDX-License-Identifier: MIT */
#include "portset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pf_portset_clear(struct pf_portset *set)
{
        memset(set, 0, sizeof(*set));
}

void pf_portset_fill(struct pf_portset *set)
{
        memset(set, 0xff, sizeof(*set));
        set->words[0] &= ~(uint64_t)1;  /* port 0 is never a member */
}

void pf_portset_add_range(struct pf_portset *set, unsigned lo, unsigned hi)
{
        if (lo == 0)
                lo = 1;
        if (hi > PF_PORT_MAX)
                hi = PF_PORT_MAX;
        for (unsigned port = lo; port <= hi;) {
                unsigned bit = port % 64;
                unsigned span = hi - port + 1;

                if (bit == 0 && span >= 64) {
                        set->words[port / 64] = UINT64_MAX;
                        port += 64;
                } else {
                        set->words[port / 64] |= (uint64_t)1 << bit;
                        port++;
                }
        }
}

void pf_portset_union(struct pf_portset *dst, const struct pf_portset *src)
{
        for (size_t i = 0; i < PF_PORTSET_WORDS; i++)
                dst->words[i] |= src->words[i];
}

void pf_portset_intersect(struct pf_portset *dst, const struct pf_portset *src)
{
        for (size_t i = 0; i < PF_PORTSET_WORDS; i++)
                dst->words[i] &= src->words[i];
}

void pf_portset_subtract(struct pf_portset *dst, const struct pf_portset *src)
{
        for (size_t i = 0; i < PF_PORTSET_WORDS; i++)
                dst->words[i] &= ~src->words[i];
}

unsigned pf_portset_count(const struct pf_portset *set)
{
        unsigned n = 0;

        for (size_t i = 0; i < PF_PORTSET_WORDS; i++)
                n += (unsigned)__builtin_popcountll(set->words[i]);
        return n;
}

bool pf_portset_empty(const struct pf_portset *set)
{
        for (size_t i = 0; i < PF_PORTSET_WORDS; i++)
                if (set->words[i])
                        return false;
        return true;
}

bool pf_portset_overlaps_range(const struct pf_portset *set, unsigned lo, unsigned hi)
{
        if (lo == 0)
                lo = 1;
        if (hi > PF_PORT_MAX)
                hi = PF_PORT_MAX;
        for (unsigned word = lo / 64; lo <= hi; word++) {
                uint64_t mask = UINT64_MAX << (lo % 64);

                if (hi / 64 == word)
                        mask &= UINT64_MAX >> (63 - hi % 64);
                if (set->words[word] & mask)
                        return true;
                lo = (word + 1) * 64;
        }
        return false;
}

unsigned pf_portset_find(const struct pf_portset *set, unsigned from, bool want)
{
        while (from <= PF_PORT_MAX) {
                uint64_t word = set->words[from / 64];

                if (!want)
                        word = ~word;
                word &= UINT64_MAX << (from % 64);
                if (word)
                        return (from & ~63u) + (unsigned)__builtin_ctzll(word);
                from = (from & ~63u) + 64;
        }
        return PF_PORT_MAX + 1;
}

bool pf_portset_next_range(const struct pf_portset *set, struct pf_range *range)
{
        unsigned lo = pf_portset_find(set, (unsigned)range->hi + 1, true);

        if (range->hi == PF_PORT_MAX || lo > PF_PORT_MAX)
                return false;
        range->lo = (uint16_t)lo;
        range->hi = (uint16_t)(pf_portset_find(set, lo, false) - 1);
        return true;
}

static const char *skip_spaces(const char *s)
{
        while (*s == ' ' || *s == '\t')
                s++;
        return s;
}

/* Parse one port number 1-65535 at *s, advancing *s past it. */
static int parse_port(const char **s, unsigned *port, char *why)
{
        const char *p = *s;
        unsigned long value = 0;

        if (*p < '0' || *p > '9') {
                snprintf(why, PF_WHY_SIZE, "%s", "expected a port number");
                return -EINVAL;
        }
        while (*p >= '0' && *p <= '9') {
                value = value * 10 + (unsigned long)(*p - '0');
                if (value > PF_PORT_MAX) {
                        snprintf(why, PF_WHY_SIZE, "%s", "port outside 1-65535");
                        return -EINVAL;
                }
                p++;
        }
        if (value == 0) {
                snprintf(why, PF_WHY_SIZE, "%s", "port outside 1-65535");
                return -EINVAL;
        }
        *port = (unsigned)value;
        *s = p;
        return 0;
}

static int compare_ranges(const void *a, const void *b)
{
        const struct pf_range *x = a, *y = b;

        return (int)x->lo - (int)y->lo;
}

/* Sort and merge overlapping or adjacent ranges in place; returns the count. */
static size_t merge_ranges(struct pf_range *ranges, size_t count)
{
        size_t n = 0;

        qsort(ranges, count, sizeof(*ranges), compare_ranges);
        for (size_t i = 0; i < count; i++) {
                if (n && ranges[i].lo <= (unsigned)ranges[n - 1].hi + 1) {
                        if (ranges[i].hi > ranges[n - 1].hi)
                                ranges[n - 1].hi = ranges[i].hi;
                } else {
                        ranges[n++] = ranges[i];
                }
        }
        return n;
}

int pf_ranges_parse(const char *text, struct pf_range **out, size_t *count, char *why)
{
        /* Every item takes at least two characters but the last. */
        struct pf_range *ranges = malloc((strlen(text) / 2 + 1) * sizeof(*ranges));
        const char *s = skip_spaces(text);
        size_t n = 0;
        int r = -EINVAL;

        if (!ranges)
                return -ENOMEM;
        if (*s == '\0') {
                snprintf(why, PF_WHY_SIZE, "%s", "empty port list");
                goto fail;
        }
        for (;;) {
                unsigned lo, hi;

                if (parse_port(&s, &lo, why) < 0)
                        goto fail;
                s = skip_spaces(s);
                hi = lo;
                if (*s == '-') {
                        s = skip_spaces(s + 1);
                        if (parse_port(&s, &hi, why) < 0)
                                goto fail;
                        if (hi < lo) {
                                snprintf(why, PF_WHY_SIZE, "%s", "range reversed");
                                goto fail;
                        }
                        s = skip_spaces(s);
                }
                ranges[n++] = (struct pf_range){ (uint16_t)lo, (uint16_t)hi };
                if (*s == '\0')
                        break;
                if (*s != ',') {
                        snprintf(why, PF_WHY_SIZE, "%s", "expected ',' or '-' between ports");
                        goto fail;
                }
                s = skip_spaces(s + 1);
        }
        *count = merge_ranges(ranges, n);
        *out = ranges;
        return 0;
fail:
        free(ranges);
        return r;
}

int pf_portset_parse(const char *text, struct pf_portset *out, char *why)
{
        struct pf_range *ranges;
        size_t count;
        int r = pf_ranges_parse(text, &ranges, &count, why);

        if (r == -ENOMEM)
                snprintf(why, PF_WHY_SIZE, "%s", "out of memory");
        if (r < 0)
                return r;
        pf_portset_clear(out);
        for (size_t i = 0; i < count; i++)
                pf_portset_add_range(out, ranges[i].lo, ranges[i].hi);
        free(ranges);
        return 0;
}

size_t pf_portset_format(const struct pf_portset *set, char *buf, size_t size)
{
        struct pf_range range = { 0, 0 };
        size_t len = 0;

        if (size)
                buf[0] = '\0';
        while (pf_portset_next_range(set, &range)) {
                char item[16];
                int n;

                if (range.lo == range.hi)
                        n = snprintf(item, sizeof(item), "%s%u", len ? "," : "", range.lo);
                else
                        n = snprintf(item, sizeof(item), "%s%u-%u", len ? "," : "",
                                     range.lo, range.hi);
                if (len + (size_t)n < size)
                        memcpy(buf + len, item, (size_t)n + 1);
                len += (size_t)n;
        }
        return len;
}

unsigned pf_portset_range_count(const struct pf_portset *set)
{
        struct pf_range range = { 0, 0 };
        unsigned n = 0;

        while (pf_portset_next_range(set, &range))
                n++;
        return n;
}
