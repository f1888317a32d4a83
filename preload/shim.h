/* SPDX-License-Identifier: MIT */
/* Internals of libportfence.so shared by its files. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "policy.h"

/* One decision worth a log line. */
struct shim_event {
        const char *call;               /* "bind", "connect", "listen", ... */
        enum pf_proto proto;
        const struct sockaddr *addr;    /* the address asked for */
        uint16_t port;                  /* the port asked for */
        enum pf_action action;
        uint16_t target;                /* PF_REMAP: where it went */
        int err;                        /* the errno the call returned, 0 if none */
        const char *note;               /* free text, or NULL */
};

/* Open the log destination of the policy (at load, never on the call path). */
void shim_log_open(const struct pf_log_settings *settings, enum pf_log_level level);
bool shim_log_enabled(enum pf_log_level level);
/* One write(2) per line, formatted without stdio: async-signal-safe. */
void shim_log_event(enum pf_log_level level, const struct shim_event *event);
void shim_log_text(enum pf_log_level level, const char *text);

/* Format an IPv4/IPv6 address without stdio; returns the length written. */
size_t shim_format_addr(const struct sockaddr *addr, char *buf, size_t size);
