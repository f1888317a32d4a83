/* SPDX-License-Identifier: MIT */
/* A compiled policy as the kernel's tables: verdict spans and the conditions
 * of conditional rules (portfence-api.bpf.h). Pure functions, no bpf(2):
 * the loader puts what they build into maps, the unit tests check it
 * against the policy port by port. */
#pragma once

#include <stdint.h>

#include "policy.h"
#include "portfence-api.bpf.h"

/* r (a negative errno; -EINVAL if not) after formatting why: the error shape
 * of every function of bpf/. */
__attribute__((format(printf, 3, 4)))
int pf_bpf_fail(int r, char *why, const char *fmt, ...);

/* The spans of p, sorted by key, in *out (malloc'd, *count of them). 0, or
 * a negative errno and why. */
int pf_bpf_build_spans(const struct pf_policy *p, struct pf_bpf_span **out, uint32_t *count,
                       char *why);

/* The PF_BPF_BLOCKS blocks of spans (count of them, as built above) in
 * *out (malloc'd). 0, or a negative errno and why. */
int pf_bpf_build_blocks(const struct pf_bpf_span *spans, uint32_t count, struct pf_bpf_block **out, char *why);

/* The span that holds (proto, port): the last one whose key is not above
 * PF_BPF_SPAN_KEY(proto, port), found as the programs find it (its block,
 * then a search among the block's spans). */
const struct pf_bpf_span *pf_bpf_find_span(const struct pf_bpf_block *blocks, const struct pf_bpf_span *spans,
                                           unsigned proto, unsigned port);

/* Step i of a span, for one port of it: the target moved along. */
struct pf_bpf_step pf_bpf_span_step(const struct pf_bpf_span *span, unsigned i, unsigned port);

/* The conditions of every conditional rule, at their rule numbers (*count:
 * the highest + 1, at least 1). 0, or a negative errno and why. */
int pf_bpf_build_rules(const struct pf_policy *p, struct pf_bpf_rule **out, uint32_t *count,
                       char *why);
