/* SPDX-License-Identifier: MIT */
/* The compiled policy, shared by the files of policy/ only.
 *
 * A compiled policy is one contiguous block: this header, then the rules,
 * ranges, pool ranges, rule kinds and strings it points to by offset. The
 * block can be written to a file and mapped back as it is (same build), so
 * an enforcer that cannot link libconfig still decides from the very tables
 * `portfence check` uses. */
#pragma once

#include "policy.h"

#define PF_POLICY_MAGIC 0x34434650u     /* "PFC4" */

struct pf_cidr {
        struct pf_addr addr;
        unsigned prefix;        /* bits, counted in addr's own family */
};

struct pf_rule {
        uint32_t line;
        uint32_t file;          /* string offset of the @include'd file it is in; 0: the policy's */
        uint32_t first_range;   /* into the ranges section */
        uint32_t range_count;
        uint32_t program;       /* offset of the glob in the strings; 0: none */
        struct pf_cidr cidr;
        uint16_t to;            /* first remap target, when has_to */
        uint8_t protos;         /* PF_PROTO_BIT()s the rule applies to */
        uint8_t action;         /* enum pf_action */
        uint8_t family;         /* enum pf_family, when has_family */
        bool has_ports;         /* false: every port 1-65535 */
        bool has_to;
        bool has_family;
        bool has_cidr;
        bool conditional;       /* family, address or program: checked per call */
};

/* One entry per (proto, port): the first rule whose ports and proto cover
 * the port (0: none), and the remap target when that rule is unconditional,
 * or the default's target when there is no rule. */
struct pf_slot {
        uint16_t rule;
        uint16_t target;
};

struct pf_pool_range {
        struct pf_range range;
        uint32_t before;        /* pool ports below this range */
};

#define PF_KIND_ACTION 0x0f
#define PF_KIND_CONDITIONAL 0x80

struct pf_policy {
        uint32_t magic;
        uint32_t header_size;   /* sizeof(struct pf_policy) of the writer */
        uint64_t size;          /* of the whole block */

        uint8_t default_action;
        uint8_t redirect_connect;
        uint8_t on_error;
        uint8_t getsockname;    /* enum pf_getsockname */
        uint8_t unbound_listen; /* enum pf_action: allow, log or refuse */
        uint8_t log_to;
        uint8_t log_level;
        uint8_t log_format;
        uint8_t steer;
        uint8_t landlock;       /* portfence run restricts its command with Landlock where it can */
        uint8_t pad[2];
        int32_t refuse_errno;
        uint32_t name;          /* string offsets */
        uint32_t log_path;

        /* Sections, as offsets from the start of the block. */
        uint32_t rules, rule_count;
        uint32_t ranges, range_count;
        uint32_t pool_ranges, pool_range_count, pool_count;
        uint32_t rule_kind;     /* per rule: action | PF_KIND_CONDITIONAL */
        uint32_t strings, strings_size;

        struct pf_portset guarded[PF_PROTO_COUNT];
        /* What the default remap counts a port's offset in: the guarded set
         * plus, when it comes from this host, every port of the host's
         * ip_local_port_range, reserved or not. Reserving ports (export
         * sysctl) then moves no target. */
        struct pf_portset rank_domain[PF_PROTO_COUNT];
        uint16_t guarded_rank[PF_PROTO_COUNT][PF_PORTSET_WORDS]; /* rank_domain members below word */
        struct pf_portset pool;
        struct pf_portset client_ports; /* local ports for outgoing connects; empty: kernel's */
        /* Ports whose bind is allowed without a word over both protocols,
         * whatever the caller: no rule with conditions, no log. The shim's
         * common case answered by one bit. */
        struct pf_portset plain_allow;
        struct pf_slot slots[PF_PROTO_COUNT][PF_PORT_MAX + 1];
};

/* What the loader has parsed, for pf_policy_pack(). */
struct pf_policy_parts {
        struct pf_policy *head;         /* settings, guarded sets and pool filled in */
        const struct pf_rule *rules;
        uint32_t rule_count;
        const struct pf_range *ranges;
        uint32_t range_count;
        const char *strings;            /* starts with '\0': offset 0 is "none" */
        uint32_t strings_size;
        uint32_t name;                  /* offsets into strings */
        uint32_t log_path;
};

/* Turn the parts into one compiled block. Takes over parts->head (realloc'd
 * into the result, freed on failure). Returns NULL when out of memory. */
struct pf_policy *pf_policy_pack(const struct pf_policy_parts *parts);

/* The default settings (refuse, EADDRINUSE, redirect, ...) of a fresh head. */
void pf_policy_head_defaults(struct pf_policy *head);

/* The sections of a compiled block. */
#define PF_SECTION(p, offset, type) ((type)(const void *)((const char *)(p) + (offset)))

static inline const struct pf_rule *pf_rules_of(const struct pf_policy *p)
{
        return PF_SECTION(p, p->rules, const struct pf_rule *);
}

static inline const struct pf_range *pf_ranges_of(const struct pf_policy *p)
{
        return PF_SECTION(p, p->ranges, const struct pf_range *);
}

static inline const struct pf_pool_range *pf_pool_of(const struct pf_policy *p)
{
        return PF_SECTION(p, p->pool_ranges, const struct pf_pool_range *);
}

static inline const uint8_t *pf_kinds_of(const struct pf_policy *p)
{
        return PF_SECTION(p, p->rule_kind, const uint8_t *);
}

static inline const char *pf_string_at(const struct pf_policy *p, uint32_t offset)
{
        return PF_SECTION(p, p->strings, const char *) + offset;
}

/* Remap arithmetic (remap.c): where a remapped port goes, a pure function
 * of the policy. */
uint16_t pf_pool_nth(const struct pf_policy *p, uint32_t n);
uint32_t pf_guarded_rank(const struct pf_policy *p, enum pf_proto proto, unsigned port);
/* The port's offset within the rule's ports; the port must be covered. */
uint32_t pf_rule_rank(const struct pf_policy *p, const struct pf_rule *rule, unsigned port);
uint16_t pf_rule_target_at(const struct pf_policy *p, const struct pf_rule *rule, uint32_t rank);
uint16_t pf_rule_target(const struct pf_policy *p, const struct pf_rule *rule, unsigned port);
bool pf_rule_covers(const struct pf_policy *p, const struct pf_rule *rule, unsigned port);
/* rank_domain from guarded, plus the host's whole ip_local_port_range when
 * the guarded sets come from it (uses_host). */
void pf_rank_domain_fill(struct pf_policy *p, bool uses_host);
/* The default pool of p, from its rank domain and this host's range. */
void pf_pool_default_of(struct pf_policy *p);
/* The default pool: ports 1024-65535 outside every rank domain and outside
 * host (this host's whole ip_local_port_range; NULL when unreadable). */
void pf_pool_default(const struct pf_portset domain[PF_PROTO_COUNT], const struct pf_portset *host,
                     struct pf_portset *out);

int pf_action_parse(const char *name, enum pf_action *out);
int pf_cidr_parse(const char *text, struct pf_cidr *out);
bool pf_cidr_match(const struct pf_cidr *cidr, const struct pf_addr *addr);
