/* SPDX-License-Identifier: MIT */
/* The OCI runtime state a runtime gives its hooks on standard input: the
 * few members portfence needs, read by a strict JSON parser. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define PF_OCI_ANNOTATION_POLICY "io.portfence.policy"
#define PF_OCI_POLICY_DIR "/etc/portfence/policies"    /* NAME.conf for the annotation's NAME */
#define PF_OCI_STATE_DIR "/run/portfence-oci"          /* container id -> fenced cgroup id */

struct pf_oci_state {
        char id[256];           /* the container's id */
        char status[32];        /* "creating", "created", "running", "stopped" */
        long pid;               /* 0 when absent (poststop may give none) */
        char policy[256];       /* the io.portfence.policy annotation, "" when absent */
        bool has_policy;
};

/* Parse text (len bytes, any bytes) into *out; 0, or -EINVAL with why (a
 * buffer of PF_WHY_SIZE bytes) saying what is wrong and at which byte. *out
 * is written only on success. */
int pf_oci_state_parse(const char *text, size_t len, struct pf_oci_state *out, char *why);

/* A policy name from an annotation: letters, digits, '_', '-' and '.', not
 * starting with '.', at most 64 bytes: never a path. 0, or -EINVAL with why
 * (which leaves the name out: the caller prints it escaped). */
int pf_oci_policy_name_check(const char *name, char *why);
