#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""libportfence.so and 'portfence run' with real processes on loopback."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from pftest import (main, POLICIES, fixture, ASAN_RUNTIME, BUILD, Background, PolicyTest, base_env, fenced,  # noqa: E402
                    lines, listener_bound_at, port_listening, portfence, preload, probe, write_policy)

POLICY = fixture("enforce.conf")


def line_of(text, needle):
    """The line of the policy text where needle first appears (what the log names)."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


REMAP_RULE_LINE = line_of(POLICY, '"20000-20099"')
LOG_RULE_LINE = line_of(POLICY, '"21000-21099"')


class ShimTest(PolicyTest):
    POLICY = POLICY

    def fenced_probe(self, *words):
        return self.start([BUILD["portfence"], "run", "-c", self.policy, "--", BUILD["probe"], *words],
                          ready="ready")


class Refuse(ShimTest):
    def test_refused_everywhere(self):
        for sock, addr in (("tcp4", "127.0.0.1"), ("udp4", "127.0.0.1"), ("tcp6", "::1"),
                           ("udp6", "::1"), ("tcp6", "::ffff:127.0.0.1"), ("tcp4", "0.0.0.0"),
                           ("udp6", "::")):
            with self.subTest(sock=sock, addr=addr):
                r = probe(sock, "bind", addr, "25000", policy=self.policy)
                self.assertEqual(lines(r), [f"{sock} 0 0", "bind -1 EADDRINUSE"], r.stderr)
                self.assertIn(f"bind {'[' + addr + ']' if ':' in addr else addr}:25000/"
                              f"{sock[:3]}: refuse (EADDRINUSE)", r.stderr)
                r = probe(sock, "bind", addr, "25000")
                self.assertEqual(lines(r)[1], "bind 0 0")

    def test_refuse_errno(self):
        policy = write_policy(POLICY + 'refuse_errno = "EACCES";\n')
        try:
            r = probe("tcp4", "bind", "127.0.0.1", "25001", policy=policy)
            self.assertEqual(lines(r)[1], "bind -1 EACCES")
        finally:
            os.unlink(policy)


class Remap(ShimTest):
    def test_remap_each_family(self):
        for sock, addr, real in (("tcp4", "127.0.0.1", 7201), ("tcp6", "::1", 7202),
                                 ("tcp6", "::ffff:127.0.0.1", 7203), ("tcp4", "0.0.0.0", 7204)):
            with self.subTest(sock=sock, addr=addr):
                p = self.fenced_probe(sock, "reuse", "bind", addr, str(real - 7200 + 20000), "listen",
                                      "sockname", "ready", "wait")
                self.assertEqual(p.lines[2:5], ["bind 0 0", "listen 0 0",
                                                f"sockname 0 0 {addr} {real - 7200 + 20000}"])
                self.assertTrue(port_listening(real, "::1" if addr == "::1" else "127.0.0.1"))
                self.assertFalse(listener_bound_at(real - 7200 + 20000))
                p.finish()

    def test_a_server_moved_beyond_loopback_hears_who_cannot_follow(self):
        """Once per process, where the address is one others can reach (and
        nothing steers: as root, 'run' steers TCP unless steer = false)."""
        warning = "only clients portfence runs or fences follow it"
        unsteered = write_policy(POLICY + "steer = false;\n")
        self.addCleanup(os.unlink, unsteered)
        for addr, said in (("127.0.0.1", 0), ("0.0.0.0", 1)):
            with self.subTest(addr=addr):
                r = fenced(unsteered, BUILD["probe"], "tcp4", "bind", addr, "20010",
                           "tcp4", "bind", addr, "20011")
                self.assertEqual(r.stderr.count(warning), said, r.stderr)

    def test_remap_udp_into_pool(self):
        p = self.fenced_probe("udp4", "bind", "127.0.0.1", "22003", "sockname", "ready", "wait")
        self.assertEqual(p.lines[2], "sockname 0 0 127.0.0.1 22003")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with self.assertRaises(OSError):    # 7003 is taken: the probe holds it
                s.bind(("127.0.0.1", 7003))
        p.finish()

    def test_getsockname_real(self):
        policy = write_policy(POLICY + 'getsockname = "real";\n')
        try:
            r = probe("tcp4", "bind", "127.0.0.1", "20030", "sockname", policy=policy)
            self.assertEqual(lines(r)[2], "sockname 0 0 127.0.0.1 7230")
        finally:
            os.unlink(policy)

    def test_remap_target_in_use_returns_real_error(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 7240))
            r = probe("tcp4", "bind", "127.0.0.1", "20040", policy=self.policy)
            self.assertEqual(lines(r)[1], "bind -1 EADDRINUSE")

    def test_log_action(self):
        r = probe("udp4", "bind", "127.0.0.1", "21001", policy=self.policy)
        self.assertEqual(lines(r)[1], "bind 0 0")
        self.assertIn(f"bind 127.0.0.1:21001/udp: log [rule 2, {os.path.realpath(self.policy)}:{LOG_RULE_LINE}]", r.stderr)
        r = probe("udp4", "bind", "127.0.0.1", "25001", policy=self.policy)
        self.assertIn("bind 127.0.0.1:25001/udp: refuse (EADDRINUSE) [default]", r.stderr)

    def test_json_log(self):
        policy = write_policy(POLICY + 'log = { format = "json"; };\n')
        try:
            r = probe("tcp4", "bind", "127.0.0.1", "20050", policy=policy)
            event = json.loads(r.stderr.splitlines()[0])
            self.assertEqual({k: event[k] for k in ("program", "call", "proto", "family", "address",
                                                    "port", "action", "target", "errno")},
                             {"program": "pf-probe", "call": "bind", "proto": "tcp",
                              "family": "ipv4", "address": "127.0.0.1", "port": 20050,
                              "action": "remap", "target": 7250, "errno": None})
            self.assertGreater(event["time"], 1.6e9)
            self.assertEqual(event["pid"], int(event["pid"]))
            self.assertEqual((event["rule"], event["source"]), (1, f"{os.path.realpath(policy)}:{REMAP_RULE_LINE}"))
        finally:
            os.unlink(policy)

    def test_log_destination_that_fails_is_said_once(self):
        """An unopenable log file: the lines go to stderr, and that is said
        once for the whole command tree; check warns beforehand."""
        policy = write_policy(POLICY + 'log = { to = "file:/nonexistent-dir/portfence.log"; };\n')
        self.addCleanup(os.unlink, policy)
        r = fenced(policy, "sh", "-c", f"{BUILD['probe']} tcp4 bind 127.0.0.1 25003; "
                                       f"{BUILD['probe']} tcp4 bind 127.0.0.1 25004")
        self.assertEqual(r.stderr.count("cannot open the log file '/nonexistent-dir/portfence.log': No such file "
                                        "or directory; logging to stderr"), 1, r.stderr)
        self.assertIn("bind 127.0.0.1:25004/tcp: refuse", r.stderr)
        r = portfence("check", "-c", policy)
        self.assertEqual(r.returncode, 0)
        self.assertIn("warning: log file '/nonexistent-dir/portfence.log' cannot be opened: its directory "
                      "does not exist; the shim will log to stderr", r.stderr)

    def test_broken_compiled_policy_reported_once_per_command_tree(self):
        damaged = tempfile.NamedTemporaryFile(prefix="pf-damaged-", delete=False)
        damaged.write(b"not a compiled policy" * 100)
        damaged.close()
        self.addCleanup(os.unlink, damaged.name)
        r = subprocess.run(["sh", "-c", "for i in 1 2 3 4 5; do true; done; sh -c true; sh -c true"],
                           capture_output=True, text=True, timeout=30,
                           env=base_env({"LD_PRELOAD": preload(BUILD["shim"]), "PORTFENCE_POLICY": damaged.name}))
        self.assertEqual(r.stderr.count("the compiled policy in PORTFENCE_POLICY is damaged"), 1, r.stderr)
        self.assertEqual(r.stderr.count("on_error = refuse"), 1, r.stderr)

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare"), "needs root and unshare")
    def test_json_over_syslog_is_tagged(self):
        """A syslog of our own at /dev/log, in a private mount namespace."""
        workdir = tempfile.mkdtemp(prefix="pf-syslog-")
        self.addCleanup(shutil.rmtree, workdir)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(listener.close)
        listener.bind(os.path.join(workdir, "log"))
        listener.settimeout(10)
        policy = write_policy(POLICY + 'log = { to = "syslog"; format = "json"; };\n')
        self.addCleanup(os.unlink, policy)
        # /dev/log of the mount namespace only: a tmpfs over /dev, with null.
        script = (f"mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && touch /dev/log && "
                  f"mount --bind {workdir}/log /dev/log && "
                  f"{BUILD['portfence']} run -c {policy} -- {BUILD['probe']} tcp4 bind 127.0.0.1 25005")
        r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=30,
                           env=base_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        line = listener.recv(4096).decode()
        self.assertRegex(line, r"^<1[0-5]>portfence\[\d+\]: \{")
        self.assertEqual(json.loads(line.split(": ", 1)[1])["port"], 25005)

    def test_log_file(self):
        log = tempfile.mktemp(prefix="pf-log-")
        policy = write_policy(POLICY + f'log = {{ to = "file:{log}"; }};\n')
        try:
            probe("tcp4", "bind", "127.0.0.1", "25002", policy=policy)
            with open(log) as f:
                self.assertIn("bind 127.0.0.1:25002/tcp: refuse (EADDRINUSE)", f.read())
        finally:
            os.unlink(policy)
            if os.path.exists(log):
                os.unlink(log)


class FollowRemap(ShimTest):
    """A wrapped client reaches a remapped server of another process through
    the port the server asked for."""

    def test_tcp(self):
        for sock, addr, port in (("tcp4", "127.0.0.1", "20060"), ("tcp6", "::1", "20063")):
            with self.subTest(sock=sock):
                server = self.fenced_probe(sock, "reuse", "bind", addr, port, "listen", "ready",
                                           "accept", "recv", "sockname", "peername")
                client = probe(sock, "connect", addr, port, "peername", "sockname", "send", "hello",
                               policy=self.policy)
                self.assertEqual(lines(client)[1:3], ["connect 0 0", f"peername 0 0 {addr} {port}"],
                                 client.stderr + str(server.lines))
                out, _ = server.finish("")
                self.assertIn("recv 5 0 hello", out)
                self.assertIn(f"sockname 0 0 {addr} {port}", out)
                # Without the shim nothing listens on the requested port.
                plain = probe(sock, "connect", addr, port)
                self.assertEqual(lines(plain)[1], "connect -1 ECONNREFUSED")

    def test_udp(self):
        for sock, addr, send, recv in (("udp4", "127.0.0.1", "sendto", "recvfrom"),
                                       ("udp6", "::1", "sendmsg", "recvmsg")):
            with self.subTest(sock=sock):
                server = self.fenced_probe(sock, "bind", addr, "20061", "ready", "echo")
                client = probe(sock, send, addr, "20061", "ping", recv, policy=self.policy)
                self.assertEqual(lines(client)[1:], [f"{send} 4 0", f"{recv} 4 0 {addr} 20061"])
                server.finish("")

    def test_peername_with_getsockname_real(self):
        policy = write_policy(POLICY + 'getsockname = "real";\n')
        self.addCleanup(os.unlink, policy)
        server = self.start([BUILD["portfence"], "run", "-c", policy, "--", BUILD["probe"], "tcp4",
                             "reuse", "bind", "127.0.0.1", "20064", "listen", "sockname", "ready",
                             "accept"], ready="ready")
        self.assertEqual(server.lines[-2], "sockname 0 0 127.0.0.1 7264")
        client = probe("tcp4", "connect", "127.0.0.1", "20064", "peername", policy=policy)
        self.assertEqual(lines(client)[1:], ["connect 0 0", "peername 0 0 127.0.0.1 20064"])

    def test_connected_udp(self):
        server = self.fenced_probe("udp4", "bind", "127.0.0.1", "20062", "ready", "echo")
        client = probe("udp4", "connect", "127.0.0.1", "20062", "peername", "send", "x", "recv",
                       policy=self.policy)
        self.assertEqual(lines(client)[1:], ["connect 0 0", "peername 0 0 127.0.0.1 20062",
                                             "send 1 0", "recv 1 0 x"])
        server.finish("")


class PassThrough(ShimTest):
    """What the shim does not guard behaves exactly as without it."""

    CASES = (
        ("fd", "999", "bind", "127.0.0.1", "25003"),
        ("devnull", "bind", "127.0.0.1", "25003"),
        ("tcp4", "bindnull"),
        ("tcp4", "bindshort", "127.0.0.1", "25003"),
        ("unix", "bindunix", "/tmp/pf-test-unix.sock"),
        ("tcp4", "bind", "127.0.0.1", "0", "sockname"),
        ("tcp4", "connect", "127.0.0.1", "9"),
        ("tcp6", "bind", "127.0.0.1", "25003"),
        ("tcp4", "bind", "::1", "25003"),
        ("fd", "999", "connect", "127.0.0.1", "20070"),
        ("fd", "999", "sockname"),
        ("devnull", "listen"),
        ("tcp4", "bind", "127.0.0.1", "6999", "bind", "127.0.0.1", "6998"),
    )

    def test_same_result_and_errno(self):
        for case in self.CASES:
            with self.subTest(case=" ".join(case)):
                plain = lines(probe(*case))
                shimmed = probe(*case, policy=self.policy)
                got = lines(shimmed)
                if case[-1] == "sockname":      # the kernel's port 0 choice differs per run
                    plain[-1], got[-1] = plain[-1].rsplit(" ", 1)[0], got[-1].rsplit(" ", 1)[0]
                self.assertEqual(got, plain, shimmed.stderr)
                self.assertEqual(shimmed.stderr, "")


class Processes(ShimTest):
    def test_threads(self):
        r = fenced(self.policy, BUILD["stress"], env={"PORTFENCE_LOG_LEVEL": "warn"})
        self.assertEqual((r.returncode, r.stdout), (0, "ok\n"), r.stderr)

    def test_signal_handler_connects(self):
        r = fenced(self.policy, BUILD["signal"], env={"PORTFENCE_LOG_LEVEL": "warn"})
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_fork_without_exec(self):
        code = ("import os, socket\n"
                "pid = os.fork()\n"
                "if pid == 0:\n"
                "    s = socket.socket(); s.bind(('127.0.0.1', 20080)); s.listen()\n"
                "    print('child', s.getsockname()[1], flush=True); os._exit(0)\n"
                "os.waitpid(pid, 0)\n"
                "s = socket.socket()\n"
                "try:\n    s.bind(('127.0.0.1', 25004)); print('parent bound')\n"
                "except OSError as e:\n    print('parent', e.errno)\n")
        r = fenced(self.policy, sys.executable, "-c", code)
        self.assertEqual(r.stdout.splitlines(), ["child 20080", "parent 98"], r.stderr)
        self.assertIn("remap -> 7280", r.stderr)

    def test_exec_keeps_policy(self):
        r = fenced(self.policy, "sh", "-c", f"exec {BUILD['probe']} tcp4 bind 127.0.0.1 25005")
        self.assertEqual(lines(r)[1], "bind -1 EADDRINUSE")
        r = fenced(self.policy, "sh", "-c", f"{BUILD['probe']} tcp4 bind 127.0.0.1 25005; true")
        self.assertEqual(lines(r)[1], "bind -1 EADDRINUSE")

    def test_bind_from_constructor(self):
        policy = write_policy(POLICY + 'getsockname = "real";\n')
        compiled = self.compiled(policy)
        try:
            for order in ((BUILD["shim"], BUILD["ctor"]), (BUILD["ctor"], BUILD["shim"])):
                with self.subTest(order=order):
                    r = subprocess.run(["true"], capture_output=True, text=True, timeout=30,
                                       env=base_env({"LD_PRELOAD": preload(*order),
                                                     "PORTFENCE_POLICY": compiled}))
                    self.assertIn("ctor bind 0 0 port 7202", r.stderr)
        finally:
            os.unlink(policy)

    def compiled(self, policy):
        """The compiled policy 'portfence run' hands to the shim."""
        r = fenced(policy, "sh", "-c", "echo $PORTFENCE_POLICY")
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def test_stacks_with_other_preload(self):
        policy = write_policy(POLICY + 'getsockname = "real";\n')
        compiled = self.compiled(policy)
        try:
            for order, seen in (((BUILD["shim"], BUILD["stack"]), 7204),
                                ((BUILD["stack"], BUILD["shim"]), 20004)):
                with self.subTest(order=order):
                    r = subprocess.run([BUILD["probe"], "tcp4", "bind", "127.0.0.1", "20004", "sockname"],
                                       capture_output=True, text=True, timeout=30,
                                       env=base_env({"LD_PRELOAD": preload(*order),
                                                     "PORTFENCE_POLICY": compiled}))
                    self.assertEqual(lines(r)[1:], ["bind 0 0", "sockname 0 0 127.0.0.1 7204"])
                    self.assertIn(f"stack: bind port {seen}", r.stderr)
        finally:
            os.unlink(policy)

    def test_run_keeps_existing_preload(self):
        r = fenced(self.policy, "sh", "-c", "echo $LD_PRELOAD",
                   env={"LD_PRELOAD": preload(BUILD["stack"])})
        entries = r.stdout.strip().split(":")
        self.assertEqual(entries[-2:], [os.path.realpath(BUILD["shim"]), BUILD["stack"]])

    def test_program_linking_libconfig(self):
        r = fenced(self.policy, BUILD["libconfig"])
        self.assertEqual(r.stdout, "libconfig port 20003 bind 0 0\n", r.stderr)
        self.assertIn("remap -> 7203", r.stderr)
        # The shim carries no libconfig at all: nothing to clash with.
        needed = subprocess.run(["readelf", "-d", BUILD["shim"]], capture_output=True,
                                text=True).stdout
        self.assertNotIn("libconfig", needed)
        self.assertIn("libc.so", needed)

    def test_exported_symbols(self):
        out = subprocess.run(["nm", "-D", "--defined-only", BUILD["shim"]], capture_output=True,
                             text=True).stdout
        symbols = sorted(line.split()[-1] for line in out.splitlines() if " T " in line)
        self.assertEqual(symbols, sorted(["bind", "connect", "listen", "getsockname", "getpeername",
                                          "sendto", "sendmsg", "recvfrom", "recvmsg", "accept",
                                          "accept4"]))

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv")
    def test_setuid_program_is_not_fenced(self):
        """ld.so drops an LD_PRELOAD path for a setuid program; the shim would
        also ignore PORTFENCE_POLICY there (secure_getenv). Everything the
        unprivileged user runs is copied out of the checkout, which may sit
        in a directory only root can enter (a clone in /root, mode 0700):
        there the loader could not open the shim and nothing would be fenced
        for a reason that has nothing to do with setuid."""
        compiled = self.compiled(self.policy)
        workdir = tempfile.mkdtemp(prefix="pf-setuid-")
        try:
            copy, shim = os.path.join(workdir, "pf-probe"), os.path.join(workdir, "libportfence.so")
            shutil.copy(BUILD["probe"], copy)
            shutil.copy(BUILD["shim"], shim)
            readable = os.path.join(workdir, "policy.pfc")
            shutil.copy(compiled, readable)
            os.chmod(workdir, 0o755)
            for path in (shim, readable):
                os.chmod(path, 0o644)
            os.chmod(copy, 0o4755)
            env = base_env({"LD_PRELOAD": preload(shim), "PORTFENCE_POLICY": readable})
            drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            r = subprocess.run(drop + [copy, "tcp4", "bind", "127.0.0.1", "25006"],
                               capture_output=True, text=True, env=env, timeout=30)
            self.assertEqual(lines(r)[1], "bind 0 0", r.stderr)
            os.chmod(copy, 0o755)           # the same program, not setuid: fenced
            r = subprocess.run(drop + [copy, "tcp4", "bind", "127.0.0.1", "25006"],
                               capture_output=True, text=True, env=env, timeout=30)
            self.assertEqual(lines(r)[1], "bind -1 EADDRINUSE", r.stderr)
        finally:
            shutil.rmtree(workdir)


class Settings(ShimTest):
    def test_unbound_listen(self):
        for value, expect in (("allow", "listen 0 0"), ("refuse", "listen -1 EADDRINUSE")):
            policy = write_policy(POLICY + f'unbound_listen = "{value}";\n')
            try:
                r = probe("tcp4", "listen", policy=policy)
                self.assertEqual(lines(r)[1], expect)
            finally:
                os.unlink(policy)

    def test_unbound_listen_log(self):
        policy = write_policy(POLICY + 'unbound_listen = "log";\n')
        self.addCleanup(os.unlink, policy)
        r = probe("tcp4", "listen", policy=policy)
        self.assertEqual(lines(r)[1], "listen 0 0")
        self.assertIn("listen on an unbound socket: the kernel chose an ephemeral port", r.stderr)
        r = probe("tcp4", "listen", policy=self.policy)         # allow: said at debug only
        self.assertEqual(r.stderr, "")

    def test_unbound_listen_logged_at_debug(self):
        r = fenced(self.policy, BUILD["probe"], "tcp4", "listen", verbose=True)
        self.assertIn("listen on an unbound socket: the kernel chose an ephemeral port", r.stderr)

    def host_port(self):
        """A port of this host's ephemeral range that is free right now."""
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
        for port in range(lo + 1000, hi):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
        self.skipTest("no free port in the host's range")

    def test_without_run_uses_builtin_default(self):
        port = self.host_port()
        r = subprocess.run([BUILD["probe"], "tcp4", "bind", "127.0.0.1", str(port)],
                           capture_output=True, text=True, timeout=30,
                           env=base_env({"LD_PRELOAD": preload(BUILD["shim"])}))
        self.assertEqual(lines(r)[1], "bind -1 EADDRINUSE")

    def test_on_error(self):
        port = self.host_port()
        damaged = tempfile.NamedTemporaryFile(suffix=".pfc", delete=False)
        damaged.write(b"PFC1 but not really")
        damaged.close()
        try:
            for on_error, expect in (("allow", "bind 0 0"), ("refuse", "bind -1 EADDRINUSE")):
                r = subprocess.run([BUILD["probe"], "tcp4", "bind", "127.0.0.1", str(port)],
                                   capture_output=True, text=True, timeout=30,
                                   env=base_env({"LD_PRELOAD": preload(BUILD["shim"]),
                                                 "PORTFENCE_POLICY": damaged.name,
                                                 "PORTFENCE_ON_ERROR": on_error}))
                self.assertEqual(lines(r)[1], expect)
                self.assertIn("the compiled policy in PORTFENCE_POLICY is damaged", r.stderr)
                self.assertIn(f"on_error = {on_error}", r.stderr)
        finally:
            os.unlink(damaged.name)


class Run(ShimTest):
    def test_exit_status_is_the_commands(self):
        self.assertEqual(fenced(self.policy, "sh", "-c", "exit 7").returncode, 7)

    def test_broken_policy_starts_nothing(self):
        marker = tempfile.mktemp(prefix="pf-marker-")
        broken = os.path.join(POLICIES, "unknown-action.conf")
        r = fenced(broken, "touch", marker)
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"unknown-action\.conf:4: rule 1: action: unknown action")
        self.assertFalse(os.path.exists(marker))

    def test_missing_command(self):
        r = fenced(self.policy, "/nonexistent/cmd")
        self.assertEqual(r.returncode, 127)
        self.assertEqual(r.stderr, "portfence: run: cannot run '/nonexistent/cmd': No such file or directory\n")
        r = portfence("run", "-c", self.policy)
        self.assertEqual(r.returncode, 2)

    def test_cache_directory_rules(self):
        """The compiled policy goes only where this user alone can write."""
        runtime = tempfile.mkdtemp(prefix="pf-runtime-")
        self.addCleanup(shutil.rmtree, runtime)
        r = fenced(self.policy, "sh", "-c", "echo $PORTFENCE_POLICY", env={"XDG_RUNTIME_DIR": runtime})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(os.path.join(runtime, "portfence") + "/"))
        self.assertEqual(os.stat(os.path.join(runtime, "portfence")).st_mode & 0o777, 0o700)
        os.chmod(os.path.join(runtime, "portfence"), 0o777)        # others may write: refused
        r = fenced(self.policy, "true", env={"XDG_RUNTIME_DIR": runtime})
        self.assertEqual(r.returncode, 3)
        self.assertIn(os.path.join(runtime, "portfence"), r.stderr)
        os.chmod(os.path.join(runtime, "portfence"), 0o700)
        if os.geteuid() == 0:                                       # someone else's: refused
            os.chown(os.path.join(runtime, "portfence"), 65534, 65534)
            r = fenced(self.policy, "true", env={"XDG_RUNTIME_DIR": runtime})
            self.assertEqual(r.returncode, 3)
            self.assertIn("belongs to uid 65534, not to you (uid 0): someone made it before you; remove it",
                          r.stderr)
        r = fenced(self.policy, "sh", "-c", "echo $PORTFENCE_POLICY", env={"XDG_RUNTIME_DIR": "relative"})
        default = "/run/portfence/" if os.geteuid() == 0 else f"/tmp/portfence-{os.getuid()}/"
        self.assertTrue(r.stdout.startswith(default), r.stdout + r.stderr)

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_no_user_can_stop_roots_run(self):
        """Another user makes /tmp/portfence-0 first (a directory, or a symbolic
        link): root's run does not use /tmp, and runs."""
        taken = "/tmp/portfence-0"
        if os.path.lexists(taken):                  # root's own, from an older portfence: set aside
            aside = tempfile.mkdtemp(prefix="pf-test-aside-")
            os.rename(taken, os.path.join(aside, "kept"))
            self.addCleanup(shutil.rmtree, aside)
            self.addCleanup(os.rename, os.path.join(aside, "kept"), taken)
        for make in (lambda: os.mkdir(taken, 0o777), lambda: os.symlink("/nonexistent", taken)):
            make()
            os.lchown(taken, 65534, 65534)
            try:
                r = subprocess.run([BUILD["portfence"], "run", "-c", self.policy, "--", "sh", "-c",
                                    "echo $PORTFENCE_POLICY"], capture_output=True, text=True,
                                   env=base_env({"XDG_RUNTIME_DIR": ""}), timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(r.stdout.startswith("/run/portfence/"), r.stdout)
            finally:
                os.rmdir(taken) if os.path.isdir(taken) and not os.path.islink(taken) else os.unlink(taken)

    def runtime_dir(self):
        runtime = tempfile.mkdtemp(prefix="pf-runtime-")
        self.addCleanup(shutil.rmtree, runtime)
        return runtime

    def compiled_path(self, policy, runtime, *cmd):
        r = fenced(policy, "sh", "-c", "echo $PORTFENCE_POLICY", env={"XDG_RUNTIME_DIR": runtime})
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def test_cache_is_named_by_content(self):
        """One policy, one compiled file, however its path was written."""
        runtime = self.runtime_dir()
        relative = os.path.relpath(self.policy)
        self.assertEqual(self.compiled_path(relative, runtime), self.compiled_path(self.policy, runtime))
        self.assertEqual(len([n for n in os.listdir(os.path.join(runtime, "portfence")) if n.endswith(".pfc")]), 1)

    def test_cache_stays_bounded(self):
        """Past a few files, what no live process maps and nobody used for a
        minute goes; what a running program maps stays."""
        runtime = self.runtime_dir()
        cache = os.path.join(runtime, "portfence")
        other = write_policy(self.POLICY + "\n# another policy\n")
        self.addCleanup(os.unlink, other)
        server = self.start([BUILD["portfence"], "run", "-c", other, "--", BUILD["probe"], "tcp4", "bind",
                             "127.0.0.1", "0", "ready", "wait"], env={"XDG_RUNTIME_DIR": runtime}, ready="ready")
        in_use = self.compiled_path(other, runtime)
        old = time.time() - 3600
        for i in range(20):
            stale = os.path.join(cache, f"{i:016x}.pfc")
            shutil.copy(in_use, stale)
            os.utime(stale, (old, old))
        os.utime(in_use, (old, old))
        fresh = os.path.join(cache, f"{99:016x}.pfc")
        shutil.copy(in_use, fresh)
        r = fenced(self.policy, "true", env={"XDG_RUNTIME_DIR": runtime})
        self.assertEqual(r.returncode, 0, r.stderr)
        left = sorted(os.listdir(cache))
        self.assertIn(os.path.basename(in_use), left)                # mapped by the server
        self.assertIn(os.path.basename(fresh), left)                 # too young to judge
        self.assertEqual([n for n in left if n.startswith("00000000000000") and n != os.path.basename(fresh)], [])
        server.stop()

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_compiled_file_of_someone_else_is_not_used(self):
        """A compiled policy another user owns, or others can write, could
        have been put there by them: the shim does not take it."""
        runtime = self.runtime_dir()
        compiled = self.compiled_path(self.policy, runtime)
        for owner, mode in ((65534, 0o644), (0, 0o666)):
            with self.subTest(owner=owner, mode=oct(mode)):
                planted = os.path.join(runtime, f"planted-{owner}.pfc")
                shutil.copy(compiled, planted)
                os.chown(planted, owner, owner)
                os.chmod(planted, mode)
                r = subprocess.run([BUILD["probe"], "tcp4", "bind", "127.0.0.1", "20035"], capture_output=True,
                                   text=True, timeout=30,
                                   env=base_env({"LD_PRELOAD": preload(BUILD["shim"]), "PORTFENCE_POLICY": planted}))
                self.assertIn("is not this user's or root's, or others can write it: not used", r.stderr)

    def test_environment(self):
        r = fenced(self.policy, "sh", "-c", 'echo "$PORTFENCE_CONFIG"; test -r "$PORTFENCE_POLICY"')
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout.strip(), os.path.realpath(self.policy))


@unittest.skipUnless(shutil.which("curl"), "needs curl")
@unittest.skipIf(ASAN_RUNTIME, "curl hangs with libasan preloaded, with or without portfence")
class RealPrograms(ShimTest):
    """Servers and clients nobody here wrote."""

    def curl(self, port):
        return fenced(self.policy, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                      "--max-time", "10", f"http://127.0.0.1:{port}/")

    def test_python_http_server(self):
        self.start([BUILD["portfence"], "run", "-c", self.policy, "--", sys.executable, "-m",
                    "http.server", "--bind", "127.0.0.1", "20090"], ready_port=7290)
        self.assertFalse(listener_bound_at(20090))
        self.assertEqual(self.curl(20090).stdout, "200")

    @unittest.skipUnless(shutil.which("busybox"), "needs busybox")
    def test_busybox_httpd(self):
        root = tempfile.mkdtemp(prefix="pf-www-")
        try:
            with open(os.path.join(root, "index.html"), "w") as f:
                f.write("portfence\n")
            self.start([BUILD["portfence"], "run", "-c", self.policy, "--", "busybox", "httpd",
                        "-f", "-p", "127.0.0.1:20091", "-h", root], ready_port=7291)
            self.assertEqual(self.curl(20091).stdout, "200")
        finally:
            shutil.rmtree(root)

    @unittest.skipUnless(shutil.which("socat"), "needs socat")
    def test_socat_udp(self):
        self.start([BUILD["portfence"], "run", "-c", self.policy, "--", "socat",
                    "UDP4-RECVFROM:20092,bind=127.0.0.1,fork", "EXEC:cat"])
        for _ in range(100):
            r = probe("udp4", "connect", "127.0.0.1", "20092", "send", "hi", "recv",
                      policy=self.policy)
            if lines(r)[-1] == "recv 2 0 hi":
                break
        self.assertEqual(lines(r)[-1], "recv 2 0 hi")


if __name__ == "__main__":
    main({"real-programs": ["RealPrograms"],
          "setuid": ["Processes.test_setuid_program_is_not_fenced"]})
