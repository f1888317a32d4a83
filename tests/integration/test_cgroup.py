#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""'portfence cgroup' for real: root, cgroup v2, BPF. Every test gets a fresh
cgroup and leaves nothing behind: processes, pinned objects, the cgroup."""
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import pftest  # noqa: E402
from pftest import (main, POLICIES, fixture, SOURCE, BUILD, PIN_ROOT, PROBE_STATIC, SLOW, Cgroup, PolicyTest,  # noqa: E402
                    base_env, cgroup_mount, cgroup_skip_reason as skip_reason, fenced, port_listening,
                    portfence, scale, write_policy)

POLICY = fixture("enforce.conf")


@unittest.skipIf(skip_reason(), skip_reason())
class CgroupTest(PolicyTest):
    POLICY = POLICY

    def setUp(self):
        super().setUp()
        self.cgroup = Cgroup()
        self.addCleanup(self.cgroup.cleanup)

    def attach(self, policy=None):
        r = self.cgroup.attach(policy or self.policy)
        self.assertEqual(r.returncode, 0, r.stderr)

    def nested_fences(self, parent_text, child_text):
        """This cgroup fenced by one policy, a child of it by another: the child."""
        parent, child_policy = write_policy(parent_text), write_policy(child_text)
        for path in (parent, child_policy):
            self.addCleanup(os.unlink, path)
        child = Cgroup(self.cgroup)
        self.addCleanup(child.cleanup)
        self.attach(parent)
        r = child.attach(child_policy)
        self.assertEqual(r.returncode, 0, r.stderr)
        return child


class Enforce(CgroupTest):
    def test_refuse_remap_allow_log(self):
        self.attach()
        cases = (
            (("tcp4", "bind", "127.0.0.1", "25000"), ["tcp4 0 0", "bind -1 EADDRINUSE"]),
            (("udp4", "bind", "127.0.0.1", "25000"), ["udp4 0 0", "bind -1 EADDRINUSE"]),
            (("tcp6", "bind", "::1", "25000"), ["tcp6 0 0", "bind -1 EADDRINUSE"]),
            (("udp6", "bind", "::ffff:127.0.0.1", "25000"), ["udp6 0 0", "bind -1 EADDRINUSE"]),
            (("tcp4", "bind", "127.0.0.1", "6500"), ["tcp4 0 0", "bind 0 0"]),
            (("tcp4", "bind", "127.0.0.1", "0"), ["tcp4 0 0", "bind 0 0"]),
            (("udp4", "bind", "127.0.0.1", "21000"), ["udp4 0 0", "bind 0 0"]),
            (("tcp6", "bind", "::1", "23000"), ["tcp6 0 0", "bind 0 0"]),
            (("tcp4", "bind", "127.0.0.1", "23000"), ["tcp4 0 0", "bind -1 EADDRINUSE"]),
            (("tcp4", "bind", "127.0.0.1", "23001"), ["tcp4 0 0", "bind 0 0"]),
        )
        for words, expect in cases:
            with self.subTest(words=words):
                self.assertEqual(self.cgroup.probe(*words), expect)

    def test_remap_each_family(self):
        self.attach()
        for sock, addr, port in (("tcp4", "127.0.0.1", 20001), ("tcp6", "::1", 20002),
                                 ("tcp6", "::ffff:127.0.0.1", 20003), ("tcp4", "0.0.0.0", 20004)):
            with self.subTest(sock=sock, addr=addr):
                p = self.cgroup.popen(BUILD["probe"], sock, "reuse", "bind", addr, str(port), "listen",
                                      "sockname", "ready", "wait")
                lines = [p.stdout.readline().strip() for _ in range(6)]
                self.assertEqual(lines[2:5], ["bind 0 0", "listen 0 0", f"sockname 0 0 {addr} {port}"])
                self.assertTrue(port_listening(port - 20000 + 7200, "::1" if addr == "::1" else "127.0.0.1"))
                # Steered: an unfenced client reaches it at the port it asked
                # for, on the addresses it listens on only.
                self.assertTrue(port_listening(port, "::1" if addr == "::1" else "127.0.0.1"))
                self.assertFalse(port_listening(port, "127.0.0.1" if addr == "::1" else "::1"))
                p.communicate("\n")
                self.assertFalse(port_listening(port, "::1" if addr == "::1" else "127.0.0.1"))

    def test_pool_remap_udp(self):
        self.attach()
        p = self.cgroup.popen(BUILD["probe"], "udp4", "bind", "127.0.0.1", "22004", "sockname", "ready",
                              "wait")
        lines = [p.stdout.readline().strip() for _ in range(4)]
        self.assertEqual(lines[2], "sockname 0 0 127.0.0.1 22004")
        self.assertEqual(self.cgroup.probe("udp4", "bind", "127.0.0.1", "7004")[1], "bind -1 EADDRINUSE")
        p.communicate("\n")

    def test_client_follows_remap(self):
        self.attach()
        for sock, addr, port in (("tcp4", "127.0.0.1", "20010"), ("tcp6", "::1", "20011")):
            with self.subTest(sock=sock):
                server = self.cgroup.popen(BUILD["probe"], sock, "reuse", "bind", addr, port, "listen",
                                           "ready", "accept", "recv", "sockname", "peername")
                self.assertEqual(server.stdout.readline().strip(), f"{sock} 0 0")
                while server.stdout.readline().strip() != "ready":
                    pass
                client = self.cgroup.probe(sock, "connect", addr, port, "peername", "send", "hello")
                self.assertEqual(client[1:], ["connect 0 0", f"peername 0 0 {addr} {port}", "send 5 0"])
                out, _ = server.communicate()
                self.assertIn("recv 5 0 hello", out)
                self.assertIn(f"sockname 0 0 {addr} {port}", out)
        for sock, addr, send, recv in (("udp4", "127.0.0.1", "sendto", "recvfrom"),
                                       ("udp6", "::1", "sendmsg", "recvmsg")):
            with self.subTest(sock=sock):
                server = self.cgroup.popen(BUILD["probe"], sock, "bind", addr, "20012", "ready", "echo")
                while server.stdout.readline().strip() != "ready":
                    pass
                client = self.cgroup.probe(sock, send, addr, "20012", "ping", recv)
                self.assertEqual(client[1:], [f"{send} 4 0", f"{recv} 4 0 {addr} 20012"])
                server.communicate()

    def test_outside_untouched(self):
        self.attach()
        r = subprocess.run([BUILD["probe"], "tcp4", "bind", "127.0.0.1", "25002"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.stdout.splitlines()[1], "bind 0 0")

    @unittest.skipUnless(PROBE_STATIC, "no static test program (sanitizer build)")
    def test_static_binary_is_fenced(self):
        dynamic = subprocess.run(["readelf", "-d", PROBE_STATIC], capture_output=True, text=True)
        self.assertNotIn("NEEDED", dynamic.stdout)     # no shared library: LD_PRELOAD has no hold
        # The shim cannot reach it...
        r = fenced(self.policy, PROBE_STATIC, "tcp4", "bind", "127.0.0.1", "25003")
        self.assertEqual(r.stdout.splitlines()[1], "bind 0 0")
        # ...the cgroup does.
        self.attach()
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "25003", static=True)[1],
                         "bind -1 EADDRINUSE")
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "20020", "sockname",
                                           static=True)[1:],
                         ["bind 0 0", "sockname 0 0 127.0.0.1 20020"])


class Parity(CgroupTest):
    """One table of cases through the shim and through the cgroup: the same
    results (program conditions aside: the kernel sees the 16-byte comm)."""

    CASES = (
        ("tcp4", "bind", "127.0.0.1", "25010"),
        ("udp6", "bind", "::", "25010"),
        ("tcp6", "bind", "::ffff:127.0.0.1", "25011"),
        ("tcp4", "bind", "127.0.0.1", "20030", "sockname"),
        ("udp4", "bind", "127.0.0.1", "20031", "sockname"),
        ("tcp6", "bind", "::1", "20032", "sockname"),
        ("udp4", "bind", "127.0.0.1", "22005", "sockname"),
        ("tcp4", "bind", "127.0.0.1", "21005", "sockname"),
        ("tcp6", "bind", "::1", "23000"),
        ("tcp4", "bind", "127.0.0.1", "23000"),
        ("tcp4", "bind", "127.0.0.1", "0"),
        ("tcp4", "bind", "127.0.0.1", "6501"),
        ("unix", "bindunix", "/tmp/pf-parity.sock"),
        ("fd", "999", "bind", "127.0.0.1", "6502"),
        ("tcp4", "connect", "127.0.0.1", "9"),
        ("tcp4", "connect", "127.0.0.1", "20033"),
    )

    def test_same_as_shim(self):
        self.attach()
        for case in self.CASES:
            with self.subTest(case=" ".join(case)):
                shim = fenced(self.policy, BUILD["probe"], *case).stdout.splitlines()
                kernel = self.cgroup.probe(*case)
                if case[-1] == "sockname" and case[-2] == "0":
                    shim, kernel = shim[:-1], kernel[:-1]
                self.assertEqual(kernel, shim)


class LocalAddresses(CgroupTest):
    @unittest.skipUnless(shutil.which("unshare") and shutil.which("ip"), "needs unshare and ip")
    def test_reload_reads_the_local_addresses_again(self):
        """A client follows a moved server at this host's own addresses, as
        the fence read them (at attach, and again at each reload): an address
        added later is followed once the fence is reloaded. In a network
        namespace of the test's own."""
        procs = os.path.join(self.cgroup.path, "cgroup.procs")
        script = f"""
            ip link set lo up
            "$PF" cgroup attach -c "$POLICY" {self.cgroup.path} >/dev/null
            ip addr add 10.250.0.1/32 dev lo
            in_cgroup() {{ sh -c 'echo $$ > {procs}; exec "$@"' - "$@"; }}
            (sleep 3 | in_cgroup "$PROBE" tcp4 bind 0.0.0.0 20060 listen ready wait > /dev/null) &
            sleep 0.5
            in_cgroup "$PROBE" tcp4 connect 10.250.0.1 20060 | tail -1
            "$PF" cgroup reload -c "$POLICY" {self.cgroup.path} >/dev/null
            in_cgroup "$PROBE" tcp4 connect 10.250.0.1 20060 | tail -1
            wait
        """
        no_steer = write_policy(POLICY + "steer = false;\n")     # only redirects follow: what this is about
        self.addCleanup(os.unlink, no_steer)
        r = subprocess.run(["unshare", "-n", "sh", "-euc", script], capture_output=True, text=True, timeout=30,
                           env=base_env({"PF": BUILD["portfence"], "POLICY": no_steer, "PROBE": BUILD["probe"]}))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), ["connect -1 ECONNREFUSED", "connect 0 0"])


class ManySpans(CgroupTest):
    """A policy of thousands of rules is thousands of spans, found by binary
    search in the kernel: its verdicts are those of 'check', at every span
    edge probed."""

    def test_verdicts_match_check(self):
        rules = []
        for i in range(3000):   # allow, remap-to, refuse, pool-remap: every port its own span
            port = 40000 + i
            kind = i % 4
            rules.append(f'{{ ports = "{port}"; action = "allow"; }}' if kind == 0 else
                         f'{{ ports = "{port}"; action = "remap"; to = {8000 + i}; }}' if kind == 1 else
                         f'{{ ports = "{port}"; action = "refuse"; }}' if kind == 2 else
                         f'{{ ports = "{port}"; action = "remap"; }}')
        policy = write_policy('version = 1;\nephemeral = "30000-49999";\ndefault_action = "remap";\n'
                              'getsockname = "real";\nremap_pool = "7000-7006";\n'
                              "rules = (\n" + ",\n".join(rules) + "\n);\n")
        self.addCleanup(os.unlink, policy)
        self.attach(policy)
        ports = [30000, 30006, 30007, 39999, 40000, 40001, 40002, 40003, 41233, 41234, 41235,
                 42998, 42999, 43000, 49999, 50000, 6500]
        check = json.loads(portfence("check", "--json", "-c", policy, *[f"{p}/udp" for p in ports]).stdout)
        for port, want in zip(ports, check):
            with self.subTest(port=port):
                got = self.cgroup.probe("udp4", "bind", "127.0.0.1", str(port), "sockname")
                if want["action"] == "refuse":
                    self.assertEqual(got[1], "bind -1 EADDRINUSE")
                else:
                    self.assertEqual(got[1:], ["bind 0 0", f"sockname 0 0 127.0.0.1 "
                                               f"{want['target'] if want['action'] == 'remap' else port}"])


class Lifecycle(CgroupTest):
    def test_detach_restores(self):
        self.attach()
        pin = os.path.join(PIN_ROOT, str(os.stat(self.cgroup.path).st_ino))
        self.assertTrue(os.path.isdir(pin))
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "25020")[1], "bind -1 EADDRINUSE")
        r = portfence("cgroup", "detach", self.cgroup.path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(pin))
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "25020")[1], "bind 0 0")
        self.assertNotIn("pf_", self.programs_on(self.cgroup.path))

    def programs_on(self, path):
        """The BPF programs attached to a cgroup, as bpftool lists them."""
        if not shutil.which("bpftool"):
            self.skipTest("needs bpftool")
        r = subprocess.run(["bpftool", "cgroup", "show", path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_attach_shows_its_programs(self):
        self.attach()
        self.assertIn("pf_bind4", self.programs_on(self.cgroup.path))

    def test_errors(self):
        self.attach()
        r = self.cgroup.attach(self.policy)
        self.assertEqual(r.returncode, 2)
        self.assertIn("is fenced already", r.stderr)
        other = Cgroup()
        self.addCleanup(other.cleanup)
        r = portfence("cgroup", "detach", other.path)
        self.assertEqual((r.returncode, r.stderr), (2, f"portfence: cgroup detach: {other.path} is not "
                                                       "fenced by portfence\n"))
        r = portfence("cgroup", "status", other.path)
        self.assertEqual((r.returncode, r.stderr), (2, f"portfence: cgroup status: {other.path} is not "
                                                       "fenced by portfence\n"))
        r = portfence("cgroup", "attach", "-c", self.policy, "/tmp")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a cgroup v2 directory", r.stderr)
        r = portfence("cgroup", "attach", "-c", self.policy, "pid:999999999")
        self.assertEqual((r.returncode, r.stderr), (2, "portfence: cgroup attach: cannot find the cgroup of 'pid:999999999': no such process\n"))
        broken = os.path.join(POLICIES, "bad-cidr.conf")
        r = other.attach(broken)
        self.assertEqual(r.returncode, 2)
        self.assertIn("bad-cidr.conf:4:", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(PIN_ROOT, str(os.stat(other.path).st_ino))))
        if shutil.which("setpriv"):     # a copy: the checkout may be closed to others
            workdir = tempfile.mkdtemp(prefix="pf-unprivileged-")
            self.addCleanup(shutil.rmtree, workdir)
            copy = shutil.copy(BUILD["portfence"], workdir)
            os.chmod(workdir, 0o755)
            r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                copy, "cgroup", "status"], capture_output=True, text=True)
            self.assertEqual(r.returncode, 2)
            self.assertIn("needs root", r.stderr)

    def test_empty_and_root_paths_refused(self):
        """An unset variable or the root cgroup would fence the whole host."""
        mount = cgroup_mount()
        for path, message in (("", "bad cgroup '': empty (an unset variable?)"),
                              (".", "'.' is the root cgroup"), (mount, f"'{mount}' is the root cgroup")):
            with self.subTest(path=path):
                r = portfence("cgroup", "attach", "-c", self.policy, path)
                self.assertEqual(r.returncode, 2)
                self.assertIn(message, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(PIN_ROOT, str(os.stat(mount).st_ino))))
        self.assertIn("--whole-host", portfence("cgroup", "attach", "--help").stdout)

    def test_removed_cgroups_are_pruned(self):
        """Pods and units are deleted all day: their fences are shown as
        defunct, one can be detached by id, prune removes the rest."""
        cgroups = [Cgroup() for _ in range(scale(6, 50))]
        ids = [os.stat(c.path).st_ino for c in cgroups]
        self.addCleanup(lambda: [portfence("cgroup", "detach", f"id:{i}") for i in ids])
        for cgroup in cgroups:
            self.assertEqual(cgroup.attach(self.policy).returncode, 0)
        for cgroup in cgroups:      # attach prunes what is defunct already: remove them after
            os.rmdir(cgroup.path)
        for _ in range(100):        # the kernel releases a removed cgroup's links a moment later
            status = {s["cgroup_id"]: s for s in json.loads(portfence("cgroup", "status", "--json").stdout)}
            if all(status[i]["defunct"] for i in ids):
                break
            time.sleep(0.05)
        for i in ids:
            self.assertEqual((status[i]["defunct"], status[i]["cgroup"]), (True, None))
        self.assertIn("defunct", portfence("cgroup", "status", f"id:{ids[0]}").stdout)
        r = portfence("cgroup", "detach", f"id:{ids[0]}")
        self.assertEqual((r.returncode, r.stdout), (0, f"cgroup id {ids[0]}: detached\n"), r.stderr)
        r = portfence("cgroup", "prune")
        self.assertEqual(r.returncode, 0, r.stderr)
        pruned = {int(line.split()[2][:-1]) for line in r.stdout.splitlines()}
        self.assertEqual(pruned & set(ids), set(ids[1:]))   # the host's own may be there too
        for i in ids:
            self.assertFalse(os.path.exists(os.path.join(PIN_ROOT, str(i))))
        # attach prunes too, and leaves live fences alone.
        gone = Cgroup()
        self.assertEqual(gone.attach(self.policy).returncode, 0)
        gone_id = os.stat(gone.path).st_ino
        os.rmdir(gone.path)
        for _ in range(100):
            status = json.loads(portfence("cgroup", "status", "--json", f"id:{gone_id}").stdout)
            if status[0]["defunct"]:
                break
            time.sleep(0.05)
        self.attach()
        self.assertFalse(os.path.exists(os.path.join(PIN_ROOT, str(gone_id))))
        status = json.loads(portfence("cgroup", "status", "--json", self.cgroup.path).stdout)
        self.assertEqual(status[0]["defunct"], False)

    @unittest.skipUnless(shutil.which("strace"), "needs strace")
    def test_killed_attach_leaves_all_or_nothing(self):
        """kill -9 at a bpf() call of an attach (every call in the slow suite,
        every 12th and the first few here): what is left decides whole or not
        at all, before any other command runs; status says which, and detach
        removes what is left and says what it was."""
        rounds = 0
        for n in (n for n in range(1, 200) if SLOW or n <= 3 or n % 12 == 0):
            r = subprocess.run(["strace", "-o", "/dev/null", "-e", "trace=bpf", "-e",
                                f"inject=bpf:signal=KILL:when={n}", BUILD["portfence"], "cgroup",
                                "attach", "-c", self.policy, self.cgroup.path],
                               capture_output=True, text=True, env=base_env(), timeout=60)
            v4 = self.cgroup.probe("tcp4", "bind", "127.0.0.1", "25040")[1]
            v6 = self.cgroup.probe("tcp6", "bind", "::1", "25040")[1]
            status = portfence("cgroup", "status", "--json", self.cgroup.path)
            with self.subTest(n=n):
                if status.returncode == 0:          # complete: both families fenced
                    self.assertEqual((v4, v6), ("bind -1 EADDRINUSE", "bind -1 EADDRINUSE"))
                    d = portfence("cgroup", "detach", self.cgroup.path)
                    self.assertEqual((d.returncode, d.stdout), (0, f"{self.cgroup.path}: detached\n"), d.stderr)
                else:                               # nothing decides
                    self.assertEqual((v4, v6), ("bind 0 0", "bind 0 0"))
                    d = portfence("cgroup", "detach", self.cgroup.path)
                    if status.returncode == 1:      # what an unfinished attach left: shown, then removed
                        self.assertTrue(json.loads(status.stdout)[0]["unfinished"], status.stdout)
                        self.assertEqual((d.returncode, d.stdout), (0, f"{self.cgroup.path}: removed what an "
                                                                       "unfinished attach left (it decided "
                                                                       "nothing)\n"), d.stderr)
                    else:
                        self.assertIn("not fenced", status.stderr)
                        self.assertEqual(d.returncode, 2, d.stderr)
            self.assertFalse(os.path.exists(os.path.join(PIN_ROOT, str(os.stat(self.cgroup.path).st_ino))))
            ours = f"new-{os.stat(self.cgroup.path).st_ino}"
            self.assertFalse(os.path.exists(os.path.join(PIN_ROOT, ours)))
            rounds = n
            if r.returncode == 0:                   # the attach ran to its end: every call was hit
                break
        self.assertGreater(rounds, 20)
        self.assertEqual(self.cgroup.attach(self.policy).returncode, 0)

    def test_concurrent_reloads_give_one_policy(self):
        """Two reloads at once: the result is exactly one of them, and status
        names the one in force."""
        self.attach()
        policies = {"EACCES": write_policy(POLICY + 'refuse_errno = "EACCES";\n'),
                    "EPERM": write_policy(POLICY + 'refuse_errno = "EPERM";\n')}
        for path in policies.values():
            self.addCleanup(os.unlink, path)
        for _ in range(10):
            both = [subprocess.Popen([BUILD["portfence"], "cgroup", "reload", "-c", path,
                                      self.cgroup.path], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=base_env())
                    for path in policies.values()]
            self.assertEqual([p.wait(timeout=60) for p in both], [0, 0])
            named = json.loads(portfence("cgroup", "status", "--json", self.cgroup.path).stdout)[0]["policy"]
            got = self.cgroup.probe("tcp4", "bind", "127.0.0.1", "25041")[1]
            errno_name = [e for e, path in policies.items() if os.path.realpath(path) == named][0]
            self.assertEqual(got, f"bind -1 {errno_name}")

    @unittest.skipUnless(shutil.which("unshare"), "needs unshare")
    def test_no_fence_in_a_private_bpffs(self):
        """In a mount namespace of its own without bpffs, a fence could only
        be pinned where it ends with the namespace: refused."""
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            '{ umount /sys/fs/bpf 2>/dev/null || true; } && exec "$0" cgroup attach -c "$1" "$2"',
                            BUILD["portfence"], self.policy, self.cgroup.path],
                           capture_output=True, text=True, env=base_env(), timeout=60)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("not the host's", r.stderr)
        self.assertEqual(portfence("cgroup", "status", self.cgroup.path).returncode, 2)

    def test_status_names_a_fencing_ancestor(self):
        self.attach()
        child = Cgroup(self.cgroup)
        r = portfence("cgroup", "status", child.path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"not fenced itself; fenced by ancestor {self.cgroup.path}", r.stdout)
        status = json.loads(portfence("cgroup", "status", "--json", child.path).stdout)[0]
        self.assertEqual((status["fenced_by"], status["fenced_by_id"]),
                         (self.cgroup.path, os.stat(self.cgroup.path).st_ino))
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "25042")[1], "bind -1 EADDRINUSE")

    def test_one_events_reader(self):
        """A fence's ring buffer has one consumer: a second reader is told so."""
        self.attach()
        first = subprocess.Popen([BUILD["portfence"], "cgroup", "events", self.cgroup.path],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env())
        self.addCleanup(lambda: (first.kill(), first.wait()))
        lock = f"/run/portfence-events-{os.stat(self.cgroup.path).st_ino}.lock"
        for _ in range(200):        # until the first reader holds its claim
            if os.path.exists(lock):
                with open(lock) as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        fcntl.flock(f, fcntl.LOCK_UN)
                    except BlockingIOError:
                        break
            time.sleep(0.05)
        second = portfence("cgroup", "events", "--count", "1", self.cgroup.path)
        self.assertEqual(second.returncode, 3, second.stderr)
        self.assertIn("another 'portfence cgroup events'", second.stderr)

    def test_a_broken_fence_hides_no_other(self):
        self.attach()
        broken = os.path.join(PIN_ROOT, "999999999")
        os.mkdir(broken)
        self.addCleanup(lambda: os.path.isdir(broken) and os.rmdir(broken))
        r = portfence("cgroup", "status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        status = {s["cgroup_id"]: s for s in json.loads(r.stdout)}
        self.assertTrue(status[999999999]["broken"])
        self.assertFalse(status[os.stat(self.cgroup.path).st_ino]["broken"])
        self.assertIn("detach id:999999999", portfence("cgroup", "status").stdout)
        r = portfence("cgroup", "detach", "id:999999999")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(broken))

    def test_unsupported_glob_refused(self):
        policy = write_policy(POLICY.replace('program = "pf-prob?"', 'program = "*prob*"'))
        self.addCleanup(os.unlink, policy)
        r = self.cgroup.attach(policy)
        self.assertEqual(r.returncode, 2)
        self.assertIn("rule 5: program glob '*prob*': the cgroup programs match the comm", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(PIN_ROOT, str(os.stat(self.cgroup.path).st_ino))))

    def test_path_forms(self):
        relative = os.path.relpath(self.cgroup.path, cgroup_mount())
        r = portfence("cgroup", "attach", "-c", self.policy, relative)
        self.assertEqual(r.returncode, 0, r.stderr)
        holder = self.cgroup.popen("sleep", "30")
        r = portfence("cgroup", "status", f"pid:{holder.pid}", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        status = json.loads(r.stdout)
        self.assertEqual(status[0]["cgroup"], self.cgroup.path)
        self.assertEqual(status[0]["policy"], os.path.realpath(self.policy))

    def test_status_counts(self):
        self.attach()
        self.cgroup.probe("tcp4", "bind", "127.0.0.1", "25030", "tcp4", "bind", "127.0.0.1", "20040",
                          "udp4", "bind", "127.0.0.1", "21040")
        r = portfence("cgroup", "status", "--json", self.cgroup.path)
        status = json.loads(r.stdout)[0]
        self.assertEqual({k: status[k] for k in ("refuse", "remap", "log")},
                         {"refuse": 1, "remap": 1, "log": 1})
        r = portfence("cgroup", "status")
        self.assertIn(f"{self.cgroup.path} (id ", r.stdout)

    def test_events(self):
        self.attach()
        events = subprocess.Popen([BUILD["portfence"], "cgroup", "events", "--json", "--count", "2",
                                   self.cgroup.path], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)
            self.cgroup.probe("tcp4", "bind", "127.0.0.1", "25040", "tcp4", "bind", "127.0.0.1", "20050")
            out, _ = events.communicate(timeout=20)
        finally:
            if events.poll() is None:
                events.kill()
        first, second = (json.loads(line) for line in out.splitlines())
        self.assertEqual({k: first[k] for k in ("program", "call", "proto", "port", "action", "errno")},
                         {"program": "pf-probe", "call": "bind", "proto": "tcp", "port": 25040,
                          "action": "refuse", "errno": "EADDRINUSE"})
        self.assertEqual((second["action"], second["target"], second["rule"]), ("remap", 7250, 1))
        self.assertEqual(first["cgroup_id"], os.stat(self.cgroup.path).st_ino)

    def test_reload_under_a_bind_loop(self):
        """Every bind sees the old policy or the new one, never neither."""
        refuse = write_policy(POLICY + 'getsockname = "real";\n')
        remap = write_policy(POLICY.replace('"20000-20099"; action = "remap"; to = 7200;',
                                            '"25050"; action = "remap"; to = 7550;') +
                             'getsockname = "real";\n')
        self.addCleanup(os.unlink, refuse)
        self.addCleanup(os.unlink, remap)
        self.attach(refuse)
        code = ("import collections, select, socket, sys\n"
                "seen = collections.Counter()\n"
                "print('looping', flush=True)\n"
                "for i in range(1000000):\n"
                "    if i % 100 == 0 and select.select([sys.stdin], [], [], 0)[0]:\n"
                "        break\n"
                "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "    try:\n"
                "        s.bind(('127.0.0.1', 25050)); seen[s.getsockname()[1]] += 1\n"
                "    except OSError as e:\n"
                "        seen['errno %d' % e.errno] += 1\n"
                "    s.close()\n"
                "print(dict(seen))\n")
        loop = self.cgroup.popen(sys.executable, "-c", code)
        self.assertEqual(loop.stdout.readline(), "looping\n")     # the reloads come during the loop
        for i in range(10):
            r = portfence("cgroup", "reload", "-c", remap if i % 2 == 0 else refuse, self.cgroup.path)
            self.assertEqual(r.returncode, 0, r.stderr)
            time.sleep(0.02)
        out, err = loop.communicate("stop\n", timeout=120)
        seen = eval(out)    # a dict literal printed by the loop above
        self.assertLessEqual(set(seen), {"errno 98", 7550}, err)
        self.assertIn(7550, seen)
        self.assertIn("errno 98", seen)

    def test_nested_fences_the_innermost_decides(self):
        """Parent and child fenced, every pair of actions on one port: the
        child's fence decides for the child's processes (the parent's leaves
        their calls alone), the parent's for its own."""
        def policy(action, target):
            rule = f'{{ ports = "30005"; action = "{action}";' + (f" to = {target};" if action == "remap" else "") + " }"
            path = write_policy(f'version = 1;\nephemeral = "30000-30009";\ngetsockname = "real";\n'
                                f'refuse_errno = "{"EACCES" if target == 7705 else "EADDRINUSE"}";\n'
                                f"rules = ( {rule} );\n")
            self.addCleanup(os.unlink, path)
            return path

        def expect(action, target, errno):
            return {"allow": ["bind 0 0", "sockname 0 0 127.0.0.1 30005"],
                    "log": ["bind 0 0", "sockname 0 0 127.0.0.1 30005"],
                    "refuse": [f"bind -1 {errno}"],
                    "remap": ["bind 0 0", f"sockname 0 0 127.0.0.1 {target}"]}[action]

        actions = ("allow", "log", "refuse", "remap")
        child = Cgroup(self.cgroup)
        self.addCleanup(child.cleanup)
        self.attach(policy("allow", 7705))
        self.assertEqual(child.attach(policy("allow", 7605)).returncode, 0)
        for outer in actions:
            self.assertEqual(portfence("cgroup", "reload", "-c", policy(outer, 7705), self.cgroup.path).returncode, 0)
            for inner in actions:
                with self.subTest(parent=outer, child=inner):
                    r = portfence("cgroup", "reload", "-c", policy(inner, 7605), child.path)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    got = child.probe("tcp4", "bind", "127.0.0.1", "30005", "sockname")[1:]
                    self.assertEqual(got[:len(expect(inner, 7605, "EADDRINUSE"))], expect(inner, 7605, "EADDRINUSE"))
                    got = self.cgroup.probe("tcp4", "bind", "127.0.0.1", "30005", "sockname")[1:]
                    self.assertEqual(got[:len(expect(outer, 7705, "EACCES"))], expect(outer, 7705, "EACCES"))
        # Without a fence of its own, the child is the parent's again.
        self.assertEqual(portfence("cgroup", "detach", child.path).returncode, 0)
        got = child.probe("tcp4", "bind", "127.0.0.1", "30005", "sockname")[1:]
        self.assertEqual(got, ["bind 0 0", "sockname 0 0 127.0.0.1 7705"])


    @unittest.skipUnless(pftest.PRIVATE_NETWORK or os.environ.get("PF_TEST_NETNS") == "private",
                         "changes sysctls: needs a network namespace of the suite's own")
    def test_status_warns_of_server_ports_a_client_may_be_handed(self):
        policy = write_policy('version = 1;\nephemeral = "40000-40099";\ndefault_action = "refuse";\n'
                              'rules = ( { ports = "40005"; action = "allow"; } );\n')
        self.addCleanup(os.unlink, policy)
        self.attach(policy)
        path = "/proc/sys/net/ipv4/ip_local_reserved_ports"
        with open(path) as f:
            before = f.read()
        self.addCleanup(lambda: open(path, "w").write(before))
        r = portfence("cgroup", "status", self.cgroup.path)
        self.assertIn("not reserved: 40005:", r.stderr)
        with open(path, "w") as f:
            f.write("40005")
        r = portfence("cgroup", "status", self.cgroup.path)
        self.assertNotIn("not reserved", r.stderr)

    def test_an_inner_fence_that_redirects_nothing_still_decides_connects(self):
        """A server moved by the parent's fence; a client in a child whose
        policy follows no move: the child's fence decides its connect (it
        goes as addressed), the parent's leaves it alone."""
        text = ('version = 1;\nephemeral = "30000-30009";\nsteer = false;\nredirect_connect = %s;\n'
                'rules = ( { ports = "30005"; action = "remap"; to = 7795; } );\n')
        child = self.nested_fences(text % "true", text % "false")
        server = self.start([BUILD["probe"], "tcp4", "bind", "127.0.0.1", "30005", "listen", "ready", "wait"],
                            ready="ready", preexec_fn=self.cgroup.enter)
        self.assertEqual(self.cgroup.probe("tcp4", "connect", "127.0.0.1", "30005")[1], "connect 0 0")
        self.assertEqual(child.probe("tcp4", "connect", "127.0.0.1", "30005")[1], "connect -1 ECONNREFUSED")
        server.finish()

    def test_a_socket_is_decided_by_the_fences_of_the_cgroup_it_was_made_in(self):
        """The programs that run for a socket are those of the cgroup it was
        made in, whoever binds it (a socket passed over SCM_RIGHTS, a process
        that moved): the innermost fence of that cgroup decides, and no
        other fence steps aside for one whose programs do not run."""
        child = self.nested_fences('version = 1;\nephemeral = "30000-30009";\nrefuse_errno = "EACCES";\n'
                                   'rules = ( { ports = "30005"; action = "refuse"; } );\n',
                                   'version = 1;\nephemeral = "30000-30009";\n'
                                   'rules = ( { ports = "30005"; action = "allow"; } );\n')
        code = ("import errno, os, socket, sys\n"
                "s = socket.socket()\n"
                "open(os.path.join(sys.argv[1], 'cgroup.procs'), 'w').write(str(os.getpid()))\n"
                "try:\n"
                "    s.bind(('127.0.0.1', 30005)); print('bound')\n"
                "except OSError as e:\n"
                "    print(errno.errorcode[e.errno])\n")
        made_above = self.cgroup.run(sys.executable, "-c", code, child.path)
        self.assertEqual(made_above.stdout, "EACCES\n", made_above.stderr)     # the parent's fence
        made_below = child.run(sys.executable, "-c", code, self.cgroup.path)
        self.assertEqual(made_below.stdout, "bound\n", made_below.stderr)      # the child's fence


class CgroupNamespace(CgroupTest):
    """Fences made from inside a cgroup namespace (as podman, Docker and LXC
    run containers) hold while other fences exist on the host: the programs
    find their cgroup's level as the kernel counts it, not from a path read
    in the namespace, which counts from the namespace's root."""

    def in_namespace(self, script):
        """script (sh) in a cgroup namespace rooted at self.cgroup, the cgroup2
        mount showing that namespace, as a container's does; $M is the mount."""
        mount = cgroup_mount()
        inner = f"umount -l {mount} && mount -t cgroup2 none {mount} && M={mount} && {script}"
        outer = (f"echo $$ > {self.cgroup.path}/cgroup.procs && "
                 f"exec unshare --cgroup --mount sh -euc {shlex.quote(inner)}")
        return subprocess.run(["sh", "-euc", outer], capture_output=True, text=True, timeout=120,
                              env=base_env({"PF": BUILD["portfence"], "PROBE": BUILD["probe"],
                                            "POLICY": self.policy, "INNER": self.inner}))

    def setUp(self):
        super().setUp()
        self.inner = write_policy('version = 1;\nephemeral = "25000-25099";\nrefuse_errno = "EACCES";\n')
        self.addCleanup(os.unlink, self.inner)
        for name in ("c/d", "c"):      # what the namespace made, should a step fail
            self.addCleanup(self.remove, os.path.join(self.cgroup.path, name))

    def remove(self, path):
        if os.path.isdir(path):
            portfence("cgroup", "detach", path)
            os.rmdir(path)

    def others(self, count):
        """count fences elsewhere on the host, made from its own namespace."""
        for _ in range(count):
            other = Cgroup()
            self.addCleanup(other.cleanup)
            self.assertEqual(other.attach(self.policy).returncode, 0)

    BIND = "sh -c 'echo $$ > \"$1/cgroup.procs\" && exec \"$PROBE\" tcp4 bind 127.0.0.1 25000' sh"

    def test_fences_hold_beside_other_fences(self):
        script = (f'mkdir $M/c && $PF cgroup attach -c "$POLICY" $M/c >/dev/null && '
                  f'{self.BIND} $M/c && {self.BIND} $M && $PF cgroup detach $M/c >/dev/null && rmdir $M/c')
        made = 0
        for count in (1, 2, 10):
            with self.subTest(others=count):
                self.others(count - made)
                made = count
                r = self.in_namespace(script)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.splitlines(), ["tcp4 0 0", "bind -1 EADDRINUSE",    # in c: fenced
                                                         "tcp4 0 0", "bind 0 0"])             # the root: not

    def test_nested_fences_inside_the_namespace(self):
        self.others(1)
        script = (f'mkdir $M/c $M/c/d && $PF cgroup attach -c "$POLICY" $M/c >/dev/null && '
                  f'$PF cgroup attach -c "$INNER" $M/c/d >/dev/null && {self.BIND} $M/c/d && {self.BIND} $M/c && '
                  f'$PF cgroup detach $M/c/d >/dev/null && {self.BIND} $M/c/d && '
                  f'$PF cgroup detach $M/c >/dev/null && rmdir $M/c/d $M/c')
        r = self.in_namespace(script)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines()[1::2], ["bind -1 EACCES",       # d: its own fence decides
                                                       "bind -1 EADDRINUSE",   # c: the outer one
                                                       "bind -1 EADDRINUSE"])  # d without its own: c's

    def test_a_fence_made_in_the_namespace_is_the_hosts_too(self):
        """The host names the same cgroup by its own path, and its status
        finds that fence deciding."""
        self.others(1)
        r = self.in_namespace('mkdir $M/c && $PF cgroup attach -c "$POLICY" $M/c')
        self.assertEqual(r.returncode, 0, r.stderr)
        inside = os.path.join(self.cgroup.path, "c")
        status = json.loads(portfence("cgroup", "status", "--json", inside).stdout)
        self.assertEqual((status[0]["cgroup"], status[0]["unfinished"]), (inside, False))
        r = subprocess.run(["sh", "-c", f"echo $$ > {inside}/cgroup.procs && exec {BUILD['probe']} tcp4 bind "
                            "127.0.0.1 25000"], capture_output=True, text=True, env=base_env(), timeout=60)
        self.assertEqual(r.stdout.splitlines()[1], "bind -1 EADDRINUSE")


class Probe(CgroupTest):
    """cgroup status --probe: a process placed in the cgroup binds a port its
    fence's policy refuses or moves; exit 1 when the fence does not decide as
    the policy says."""

    def status_probe(self, path=None):
        return portfence("cgroup", "status", "--probe", path or self.cgroup.path)

    def test_a_fence_that_decides_passes(self):
        self.attach()
        r = self.status_probe()
        self.assertEqual((r.returncode, r.stdout),
                         (0, f"{self.cgroup.path}: probe bind 127.0.0.1:20000/tcp: bound at 7200 (policy: remap -> "
                             f"7200, fence of {self.cgroup.path}): decided as the policy says\n"), r.stderr)
        child = Cgroup(self.cgroup)
        self.addCleanup(child.cleanup)
        r = self.status_probe(child.path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"fence of {self.cgroup.path}): decided as the policy says", r.stdout)
        refuse = write_policy('version = 1;\nephemeral = "26000-26099";\nrefuse_errno = "EACCES";\n')
        self.addCleanup(os.unlink, refuse)
        self.assertEqual(portfence("cgroup", "reload", "-c", refuse, self.cgroup.path).returncode, 0)
        r = self.status_probe()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("probe bind 127.0.0.1:26000/tcp: refused EACCES (policy: refuse EACCES", r.stdout)

    def test_without_a_fence_or_with_other_options(self):
        r = self.status_probe()
        self.assertEqual((r.returncode, r.stderr), (2, f"portfence: cgroup status: {self.cgroup.path} is not fenced "
                                                       "by portfence, nor any cgroup above it\n"))
        self.attach()
        r = portfence("cgroup", "status", "--probe", "--json", self.cgroup.path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--probe takes a PATH and no other output option", r.stderr)

    @unittest.skipUnless(shutil.which("bpftool"), "needs bpftool")
    def test_a_fence_made_inert_fails(self):
        """Its bind programs detached behind portfence's back: pinned, listed,
        and deciding nothing."""
        self.attach()
        pins = os.path.join(PIN_ROOT, str(os.stat(self.cgroup.path).st_ino))
        for hook in ("bind4", "bind6"):
            r = subprocess.run(["bpftool", "link", "detach", "pinned", os.path.join(pins, hook)],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
        r = self.status_probe()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("probe bind 127.0.0.1:20000/tcp: bound at 20000 (policy: remap -> 7200", r.stdout)
        self.assertIn("NOT decided as the policy says", r.stdout)

    @unittest.skipUnless(shutil.which("bpftool"), "needs bpftool")
    def test_an_uncommitted_fence_fails(self):
        """As a kill before its commit leaves it: inert, and said so."""
        self.attach()
        live = os.path.join(PIN_ROOT, str(os.stat(self.cgroup.path).st_ino), "live")
        r = subprocess.run(["bpftool", "map", "update", "pinned", live, "key", "0", "0", "0", "0",
                            "value", "2", "0", "0", "0"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "25000")[1], "bind 0 0")
        r = self.status_probe()
        self.assertEqual((r.returncode, r.stdout), (1, f"{self.cgroup.path}: the fence of {self.cgroup.path} is an "
                                                       "unfinished attach: it decides nothing\n"), r.stderr)
        status = portfence("cgroup", "status", self.cgroup.path)
        self.assertEqual(status.returncode, 1)
        self.assertIn("attach unfinished: inert, decides nothing", status.stdout)
        r = portfence("cgroup", "reload", "-c", self.policy, self.cgroup.path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("its attach did not finish", r.stderr)
        r = portfence("cgroup", "detach", self.cgroup.path)
        self.assertEqual(r.stdout, f"{self.cgroup.path}: removed what an unfinished attach left (it decided "
                                   "nothing)\n")


def parse_exposition(text):
    """The Prometheus text format, strictly: every family has HELP and TYPE
    before its samples; returns {(name, frozenset(labels)): value}."""
    samples, declared = {}, set()
    label = r'([a-z_]+)="((?:[^"\\\n]|\\.)*)"'
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            declared.add((line.split()[2], line.split()[1]))
            continue
        m = re.fullmatch(r'([a-z_]+)\{((?:%s,?)*)\} (\d+)' % label, line)
        assert m, f"not a sample line: {line!r}"
        assert (m.group(1), "HELP") in declared and (m.group(1), "TYPE") in declared, line
        labels = frozenset(re.findall(label, m.group(2)))
        samples[(m.group(1), labels)] = int(m.group(m.lastindex))
    return samples


class Metrics(CgroupTest):
    def counters(self, text):
        got = {}
        for (name, labels), value in parse_exposition(text).items():
            labels = dict(labels)
            if labels["cgroup"] == self.cgroup.path:
                got[labels.get("action", name)] = value
        return got

    def test_prometheus_counters_move_with_real_binds(self):
        self.attach()
        before = self.counters(portfence("cgroup", "status", "--prometheus").stdout)
        self.assertEqual(before, {"allow": 0, "log": 0, "refuse": 0, "remap": 0,
                                  "portfence_redirects_total": 0, "portfence_errors_total": 0,
                                  "portfence_lost_events_total": 0, "portfence_moves_refused_total": 0})
        self.cgroup.probe("tcp4", "bind", "127.0.0.1", "25030")                 # refused
        self.cgroup.probe("udp4", "bind", "127.0.0.1", "25031")                 # refused
        self.cgroup.probe("tcp4", "bind", "127.0.0.1", "20040", "sockname")     # remapped
        after = self.counters(portfence("cgroup", "status", "--prometheus", self.cgroup.path).stdout)
        self.assertEqual((after["refuse"], after["remap"]), (2, 1))

    def test_textfile_replaced_whole(self):
        self.attach()
        directory = tempfile.mkdtemp(prefix="pf-textfile-")
        self.addCleanup(shutil.rmtree, directory)
        for _ in range(2):
            r = portfence("cgroup", "status", "--textfile", directory)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.listdir(directory), ["portfence.prom"])     # no temporary left
        with open(os.path.join(directory, "portfence.prom")) as f:
            self.assertIn("refuse", self.counters(f.read()))
        r = portfence("cgroup", "status", "--textfile", "/nonexistent")
        self.assertEqual(r.returncode, 2)               # the caller's mistake
        self.assertIn("cannot write '/nonexistent/portfence.prom'", r.stderr)


class LostEvents(CgroupTest):
    REFUSE_1000 = """
import socket
refused = 0
for _ in range(1000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 25040))
    except OSError:
        refused += 1
    s.close()
print(refused)
"""

    def refuse_1000(self):
        """1000 refused binds: the fence's status after them."""
        r = self.cgroup.run(sys.executable, "-c", self.REFUSE_1000)
        self.assertEqual(r.stdout.strip(), "1000", r.stderr)
        return json.loads(portfence("cgroup", "status", "--json", self.cgroup.path).stdout)[0]

    def reader(self):
        """'cgroup events', once it says it reads; killed when the test ends."""
        reader = subprocess.Popen([BUILD["portfence"], "cgroup", "events", self.cgroup.path],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=base_env())
        self.addCleanup(lambda: (reader.kill(), reader.wait()))
        pin = os.path.join(PIN_ROOT, str(os.stat(self.cgroup.path).st_ino), "live")
        for _ in range(200):        # until it says it reads: live[1] = 1
            r = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", pin, "key", "1", "0", "0", "0"],
                               capture_output=True, text=True)
            if r.returncode == 0 and json.loads(r.stdout)["formatted"]["value"] == 1:
                break
            time.sleep(0.05)
        else:
            self.fail("the reader never said it reads")
        return reader

    @unittest.skipUnless(shutil.which("bpftool"), "needs bpftool")
    def test_a_full_ring_buffer_counts_what_it_drops(self):
        """A reader that does not keep up: the ring buffer (about 450 events)
        fills, binds are still decided, and every dropped event is counted."""
        self.attach()
        reader = self.reader()
        reader.send_signal(signal.SIGSTOP)
        status = self.refuse_1000()
        self.assertEqual(status["refuse"], 1000)
        self.assertGreater(status["lost_events"], 400)
        self.assertLess(status["lost_events"], 1000)

    @unittest.skipUnless(shutil.which("bpftool"), "needs bpftool")
    def test_without_a_reader_no_event_is_written(self):
        """Nobody reads (none yet, or one that left): no event is written,
        so none is lost; the counters tell what was decided."""
        self.attach()
        self.assertEqual(self.refuse_1000()["lost_events"], 0)
        reader = self.reader()
        reader.send_signal(signal.SIGINT)
        self.assertEqual(reader.wait(timeout=20), 0)
        status = self.refuse_1000()
        self.assertEqual((status["refuse"], status["lost_events"]), (2000, 0))


class EmptyMaps(CgroupTest):
    """The trap that once made an empty allow list allow everything: maps
    that say nothing must not mean 'allow'."""

    def bpftool(self, verb, name, key, *value):
        pin = os.path.join(PIN_ROOT, str(os.stat(self.cgroup.path).st_ino), name)
        args = ["bpftool", "map", verb, "pinned", pin, "key"]
        args += [str(b) for b in key.to_bytes(4, "little")] + list(value)
        r = subprocess.run(args, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def bpftool_update(self, name, key, value):
        self.bpftool("update", name, key, "value", *[str(b) for b in value])

    @unittest.skipUnless(shutil.which("bpftool"), "needs bpftool")
    def test_missing_table_refuses(self):
        self.attach()
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "21000")[1], "bind 0 0")  # logged
        self.bpftool("delete", "spans", 0)          # generation 0's verdict table
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "21000")[1], "bind -1 EPERM")
        status = json.loads(portfence("cgroup", "status", "--json", self.cgroup.path).stdout)[0]
        self.assertEqual((status["errors"], status["refuse"], status["redirect"]), (1, 1, 0))
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "0")[1], "bind 0 0")
        # A port every bind may take is one bit of the (intact) settings: still allowed.
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "6510")[1], "bind 0 0")

    @unittest.skipUnless(shutil.which("bpftool"), "needs bpftool")
    def test_unfilled_settings_refuse(self):
        self.attach()
        settings_size = int(subprocess.run(
            ["bpftool", "map", "show", "pinned",
             os.path.join(PIN_ROOT, str(os.stat(self.cgroup.path).st_ino), "settings")],
            capture_output=True, text=True).stdout.split("value ")[1].split("B")[0])
        self.bpftool_update("settings", 0, bytes(settings_size))
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "6511")[1], "bind -1 EPERM")
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "0")[1], "bind 0 0")


class SharedTables(CgroupTest):
    """A fence holds its policy's tables, made once per compiled policy and
    shared by every fence of that policy; the moved-port registry is one
    for the host."""

    def map_id(self, cgroup, name, generation=None):
        pin = os.path.join(PIN_ROOT, str(os.stat(cgroup.path).st_ino), name)
        if generation is None:
            r = subprocess.run(["bpftool", "-j", "map", "show", "pinned", pin], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)["id"]
        r = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", pin, "key"] +
                           [str(b) for b in generation.to_bytes(4, "little")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return int.from_bytes(bytes(int(b, 0) for b in json.loads(r.stdout)["value"]), "little")

    def live(self, cgroup):
        pin = os.path.join(PIN_ROOT, str(os.stat(cgroup.path).st_ino), "live")
        r = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", pin, "key", "0", "0", "0", "0"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return int(json.loads(r.stdout)["value"][0], 0) & 1

    def tables(self, cgroup):
        generation = self.live(cgroup)
        return self.map_id(cgroup, "spans", generation), self.map_id(cgroup, "rules", generation)

    @unittest.skipUnless(shutil.which("bpftool"), "needs bpftool")
    def test_same_policy_same_tables(self):
        other_policy = write_policy(POLICY.replace("rules = (\n", 'rules = (\n  { ports = "6599"; action = "refuse"; },\n'))
        self.addCleanup(os.unlink, other_policy)
        self.attach()
        second, third = Cgroup(), Cgroup()
        self.addCleanup(second.cleanup)
        self.addCleanup(third.cleanup)
        self.assertEqual(second.attach(self.policy).returncode, 0)
        self.assertEqual(third.attach(other_policy).returncode, 0)
        mine = self.tables(self.cgroup)
        self.assertEqual(self.tables(second), mine)
        self.assertNotEqual(self.tables(third)[0], mine[0])
        self.assertEqual({self.map_id(c, "moved") for c in (self.cgroup, second, third)},
                         {self.map_id(self.cgroup, "moved")})
        # A reload to the other policy takes its tables, and enforces it.
        self.assertEqual(portfence("cgroup", "reload", "-c", other_policy, second.path).returncode, 0)
        self.assertEqual(self.tables(second), self.tables(third))
        self.assertEqual(second.probe("tcp4", "bind", "127.0.0.1", "6599")[1], "bind -1 EADDRINUSE")
        self.assertEqual(self.cgroup.probe("tcp4", "bind", "127.0.0.1", "6599")[1], "bind 0 0")


def tearDownModule():
    """Nothing this suite made may outlive it: its cgroups and their fences.
    Fences of others (a host running portfence) are not the suite's."""
    mount = cgroup_mount()
    left = [name for name in os.listdir(mount) if name.startswith(f"pf-test-{os.getpid()}-")]
    left += [pin for pin in (os.path.join(PIN_ROOT, str(i)) for i in Cgroup.created_ids)
             if os.path.exists(pin)]
    if left:
        raise RuntimeError("left behind: " + ", ".join(left))


if __name__ == "__main__":
    main({"slow": ["Lifecycle.test_removed_cgroups_are_pruned", "Lifecycle.test_killed_attach_leaves_all_or_nothing"],
          # another suite's attach removes what is left unfinished or defunct on purpose here
          "alone": ["Lifecycle.test_removed_cgroups_are_pruned", "Probe.test_an_uncommitted_fence_fails",
                    "Probe.test_a_fence_made_inert_fails", "Lifecycle.test_killed_attach_leaves_all_or_nothing"],
          "static": ["Enforce.test_static_binary_is_fenced"],
          "netns": ["LocalAddresses"],
          "bpftool": ["EmptyMaps", "SharedTables", "LostEvents",
                      "Lifecycle.test_attach_shows_its_programs",
                      "Lifecycle.test_detach_restores"]})
