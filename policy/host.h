/* SPDX-License-Identifier: MIT */
/* Facts of this host asked at run time, safe on the shim's call path. */
#pragma once

#include <stdint.h>

#include "policy.h"

/* 1 if a socket of this network namespace receives what is sent to
 * addr:port over proto (a TCP listener, an unconnected UDP socket, bound to
 * that address or a wildcard), 0 if none, or a negative errno. errno is
 * kept. */
int pf_host_port_receives(enum pf_proto proto, const struct pf_addr *addr, uint16_t port);
