#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Real programs' own network test suites under the shipped policy, in both
enforcers: each passes fenced as it passes plain. They listen on port 0 and
then again on the port they got, expecting an error; they run servers and
clients on loopback: a fence that moved a server away from a port a server
already holds, or cut a client off, fails them. A suite that fails plain
here is skipped (the host's, not portfence's)."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import (main, scale, ASAN_RUNTIME, BUILD, SOURCE, Cgroup, PolicyTest, base_env,  # noqa: E402
                    cgroup_skip_reason)

SHIPPED = os.path.join(SOURCE, "config", "portfence.conf")

# CPython's suites (python -m test NAME [-m PATTERN]); the quick run takes
# those of a few seconds and asyncio's test of "listen again", the slow run
# every suite whole.
CPYTHON_QUICK = [("test_socketserver",), ("test_httpservers",), ("test_urllib2_localnet",), ("test_smtplib",),
                 ("test_xmlrpc",), ("test_asyncio.test_events", "-m", "*addr_in_use*")]
CPYTHON_ALL = [("test_socketserver",), ("test_httpservers",), ("test_asyncio",), ("test_urllib2_localnet",),
               ("test_ftplib",), ("test_smtplib",), ("test_poplib",), ("test_xmlrpc",)]
CPYTHON = CPYTHON_ALL if scale(False, True) else CPYTHON_QUICK
# Go's: listen on port 0, listen again on the port it got, expect an error.
GO_TESTS = "^(TestTCPListener|TestUDPListener|TestDualStackTCPListener|TestDualStackUDPListener)$"


def cpython_tests_available():
    return subprocess.run([sys.executable, "-c", "import test.support, test.libregrtest"],
                          capture_output=True).returncode == 0


def go_net_source():
    go = shutil.which("go")
    if not go:
        return None
    root = subprocess.run([go, "env", "GOROOT"], capture_output=True, text=True).stdout.strip()
    return root if os.path.exists(os.path.join(root, "src", "net", "tcpsock_test.go")) else None


@unittest.skipIf(ASAN_RUNTIME, "not under AddressSanitizer: libasan in whole foreign test suites (minutes)")
class Suites:
    """fenced_run(cmd, env) runs a command under one enforcer."""

    def plain(self, cmd, env=None):
        return subprocess.run(cmd, capture_output=True, text=True, env=base_env(env), timeout=900)

    def assert_same_as_plain(self, cmd, env=None):
        plain = self.plain(cmd, env)
        if plain.returncode != 0:
            self.skipTest(f"fails plain here: {' '.join(cmd)}: {plain.stdout[-300:]}")
        fenced = self.fenced_run(cmd, env)
        self.assertEqual(fenced.returncode, 0, f"{' '.join(cmd)}:\n{fenced.stdout[-2000:]}{fenced.stderr[-2000:]}")

    @unittest.skipUnless(cpython_tests_available(), "this python has no test package")
    def test_cpython_network_suites(self):
        for suite in CPYTHON:
            with self.subTest(suite=suite):
                self.assert_same_as_plain([sys.executable, "-m", "test", "-q", "-u", "network", *suite])


class ShimSuites(Suites, PolicyTest):
    def fenced_run(self, cmd, env=None):
        return subprocess.run([BUILD["portfence"], "run", "-c", SHIPPED, "--", *cmd], capture_output=True,
                              text=True, env=base_env(env), timeout=900)


@unittest.skipIf(cgroup_skip_reason(), cgroup_skip_reason())
class CgroupSuites(Suites, PolicyTest):
    def setUp(self):
        super().setUp()
        self.cgroup = Cgroup()
        self.addCleanup(self.cgroup.cleanup)
        r = self.cgroup.attach(SHIPPED)
        self.assertEqual(r.returncode, 0, r.stderr)

    def fenced_run(self, cmd, env=None):
        return subprocess.run(cmd, capture_output=True, text=True, env=base_env(env), timeout=900,
                              preexec_fn=self.cgroup.enter)

    @unittest.skipUnless(go_net_source(), "needs go and its source of package net")
    def test_go_net_listeners(self):
        """Go binds with its own system calls: the shim never sees it, a
        fenced cgroup does (cgo and static builds alike)."""
        cache = tempfile.mkdtemp(prefix="pf-test-gocache-")
        self.addCleanup(shutil.rmtree, cache, ignore_errors=True)
        for cgo in ("1", "0"):
            with self.subTest(cgo=cgo):
                self.assert_same_as_plain(["go", "test", "-count=1", "-run", GO_TESTS, "net"],
                                          env={"GOCACHE": cache, "CGO_ENABLED": cgo, "GOFLAGS": "",
                                               "HOME": cache})


if __name__ == "__main__":
    main({"cgroup": ["CgroupSuites"],
          "slow": ["ShimSuites", "CgroupSuites"]})
