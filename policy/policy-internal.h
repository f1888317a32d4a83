/* SPDX-License-Identifier: MIT */
/* The compiled policy, shared by the files of policy/ only. */
#pragma once

#include "policy.h"

struct pf_cidr {
        struct pf_addr addr;
        unsigned prefix;        /* bits, counted in addr's own family */
};

struct pf_rule {
        unsigned line;
        unsigned protos;        /* PF_PROTO_BIT()s the rule applies to */
        enum pf_action action;
        bool has_ports;         /* false: every port 1-65535 */
        uint32_t first_range;   /* into pf_policy.ranges */
        uint32_t range_count;
        bool has_to;
        uint16_t to;            /* first remap target */
        /* Conditions checked per call; a rule with none is decided by table. */
        bool has_family;
        enum pf_family family;
        bool has_cidr;
        struct pf_cidr cidr;
        char *program;          /* glob, or NULL */
        bool conditional;
};

/* One entry per (proto, port): the first rule whose ports and proto cover
 * the port (0: none), and the remap target when that rule is unconditional,
 * or the default's target when there is no rule. */
struct pf_slot {
        uint16_t rule;
        uint16_t target;
};

#define PF_KIND_ACTION 0x0f
#define PF_KIND_CONDITIONAL 0x80

struct pf_pool_range {
        struct pf_range range;
        uint32_t before;        /* pool ports below this range */
};

struct pf_policy {
        char *name;
        struct pf_portset guarded[PF_PROTO_COUNT];
        uint16_t guarded_rank[PF_PROTO_COUNT][PF_PORTSET_WORDS]; /* members below word */
        struct pf_portset pool;
        struct pf_pool_range *pool_ranges;
        uint32_t pool_range_count;
        uint32_t pool_count;
        enum pf_action default_action;
        int refuse_errno;
        bool redirect_connect;
        enum pf_on_error on_error;
        struct pf_log_settings log;
        struct pf_rule *rules;
        unsigned rule_count;
        uint8_t *rule_kind;     /* per rule: action | PF_KIND_CONDITIONAL, hot in cache */
        struct pf_range *ranges;
        uint32_t range_count;
        struct pf_slot slots[PF_PROTO_COUNT][PF_PORT_MAX + 1];
};

int pf_action_parse(const char *name, enum pf_action *out);
int pf_cidr_parse(const char *text, struct pf_cidr *out);
bool pf_cidr_match(const struct pf_cidr *cidr, const struct pf_addr *addr);
