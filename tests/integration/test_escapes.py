#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The escape catalogue: every way a program might bind a port the policy
refuses, tried against the shim and against a fenced cgroup. Each asserts
the exact result: the errno, or where the socket really is (read from
/proc/net, never from the rewritten getsockname). A technique one enforcer
cannot see by design is asserted as documented, not skipped."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import (main, BUILD, GO_LISTEN, PROBE_STATIC, URING, Background, Cgroup, PolicyTest,  # noqa: E402
                    base_env, cgroup_skip_reason, fenced, lines)

# A range nobody else on the host uses; one allowed port for contrast.
POLICY = """version = 1;
ephemeral = "26000-26999";
default_action = "refuse";
unbound_listen = "refuse";
rules = ( { ports = "26500"; action = "allow"; },
          { ports = "26100-26199"; action = "remap"; to = 7600; },
          { ports = "26300"; program = "worker-?"; action = "allow"; },
          { ports = "26301"; program = "main-thread"; action = "allow"; } );
"""

# Threads name themselves, then bind: 26300 is allowed to "worker-N" only,
# 26301 to "main-thread" only.
THREAD_BINDS = """
import ctypes, socket, sys, threading
ctypes.CDLL(None).prctl(15, b"main-thread", 0, 0, 0)       # PR_SET_NAME
def bind(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); print(port, "0")
    except OSError as e:
        print(port, e.errno)
    s.close()
def worker():
    ctypes.CDLL(None).prctl(15, b"worker-1", 0, 0, 0)     # PR_SET_NAME: this thread only
    bind(26300); bind(26301)
t = threading.Thread(target=worker); t.start(); t.join()
bind(26300); bind(26301)
"""

REFUSED = "26001"

# IP_LOCAL_PORT_RANGE narrows within ip_local_port_range: ports near its top,
# refused, remapped and allowed by rules of their own.
with open("/proc/sys/net/ipv4/ip_local_port_range") as _f:
    NARROW = int(_f.read().split()[1]) - 9
POLICY = POLICY.replace("rules = ( ", f"""rules = ( {{ ports = "{NARROW},{NARROW + 3},{NARROW + 4}"; action = "refuse"; }},
          {{ ports = "{NARROW + 1}"; action = "remap"; to = 7800; }},
          """)


def mptcp_available():
    try:
        with open("/proc/sys/net/mptcp/enabled") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def bound_in_proc(port):
    """Sockets bound to port, as the kernel lists them in /proc/net."""
    count = 0
    for table in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/net/{table}") as f:
            for line in f.readlines()[1:]:
                count += int(line.split()[1].split(":")[1], 16) == int(port)
    return count


class Catalogue:
    """The techniques; probe_lines(words) runs pf-probe under one enforcer."""

    def probe_lines(self, *words, static=False):
        raise NotImplementedError

    def result(self, *words, static=False):
        """The probe's line for its last call."""
        return self.probe_lines(*words, static=static)[-1]

    def test_plain_bind_refused(self):
        self.assertEqual(self.result("tcp4", "bind", "0.0.0.0", REFUSED), "bind -1 EADDRINUSE")
        self.assertEqual(self.result("tcp4", "bind", "0.0.0.0", "26500"), "bind 0 0")

    def test_af_unspec_on_an_ipv4_socket(self):
        """Linux binds AF_UNSPEC + INADDR_ANY on an AF_INET socket as IPv4."""
        self.assertEqual(self.result("tcp4", "bindunspec", "0.0.0.0", REFUSED), "bindunspec -1 EADDRINUSE")
        self.assertEqual(self.result("udp4", "bindunspec", "0.0.0.0", REFUSED), "bindunspec -1 EADDRINUSE")
        self.assertEqual(self.result("tcp4", "bindunspec", "0.0.0.0", "26500"), "bindunspec 0 0")
        # Any other AF_UNSPEC address: the kernel's own error, untouched.
        self.assertEqual(self.result("tcp4", "bindunspec", "127.0.0.1", REFUSED), "bindunspec -1 EAFNOSUPPORT")

    def test_v4_mapped_on_an_ipv6_socket(self):
        self.assertEqual(self.result("tcp6", "bind", "::ffff:0.0.0.0", REFUSED), "bind -1 EADDRINUSE")
        self.assertEqual(self.result("udp6", "bind", "::ffff:127.0.0.1", REFUSED), "bind -1 EADDRINUSE")

    def test_udplite_is_udp(self):
        """UDP-Lite (IPPROTO_UDPLITE) is decided as UDP."""
        if self.probe_lines("udplite4")[0] != "udplite4 0 0":
            self.skipTest("this kernel has no UDP-Lite")
        self.assertEqual(self.result("udplite4", "bind", "127.0.0.1", REFUSED), "bind -1 EADDRINUSE")
        self.assertEqual(self.result("udplite6", "bind", "::1", REFUSED), "bind -1 EADDRINUSE")
        self.assertEqual(self.result("udplite4", "bind", "127.0.0.1", "26500"), "bind 0 0")

    def test_the_shortest_ipv6_address_length(self):
        """The kernel takes an IPv6 address of 24 bytes (no sin6_scope_id)."""
        self.assertEqual(self.result("tcp6", "bind24", "::1", REFUSED), "bind24 -1 EADDRINUSE")
        self.assertEqual(self.result("udp6", "bind24", "::", REFUSED), "bind24 -1 EADDRINUSE")
        self.assertEqual(self.result("tcp6", "bind24", "::1", "26500"), "bind24 0 0")

    def test_reuse_options_change_nothing(self):
        self.assertEqual(self.result("tcp4", "reuse", "bind", "127.0.0.1", REFUSED), "bind -1 EADDRINUSE")
        self.assertEqual(self.result("udp6", "reuse", "bind", "::", REFUSED), "bind -1 EADDRINUSE")

    @unittest.skipUnless(mptcp_available(), "the kernel has no MPTCP (net.mptcp.enabled)")
    def test_mptcp_is_tcp(self):
        """Go 1.24+ listens with MPTCP: decided as TCP, named as TCP."""
        self.assertEqual(self.result("mptcp4", "bind", "127.0.0.1", REFUSED), "bind -1 EADDRINUSE")
        self.assertEqual(self.result("mptcp6", "bind", "::1", REFUSED), "bind -1 EADDRINUSE")
        server = self.serve("mptcp4", "bind", "127.0.0.1", "26101", "sockname", "listen", "ready", "wait")
        self.assertEqual(server.lines[2], "sockname 0 0 127.0.0.1 26101")     # the port asked for
        self.assertEqual((bound_in_proc(7601), bound_in_proc(26101)), (1, 0))   # the port it has
        client = self.probe_lines("mptcp4", "connect", "127.0.0.1", "26101", "peername")
        self.assertEqual(client[-2:], ["connect 0 0", "peername 0 0 127.0.0.1 26101"])
        server.finish()

    def test_program_is_the_calling_threads_name(self):
        """One definition in both enforcers: the comm of the calling thread,
        as the kernel keeps it. A renamed worker thread is judged by its own
        name, the main thread by its own; argv[0] plays no part."""
        out = self.python_lines(THREAD_BINDS)
        self.assertEqual(out, ["26300 0", "26301 98", "26300 98", "26301 0"])
        # argv[0] "worker-1", comm "pf-probe": not a worker.
        renamed = self.exec_as("worker-1", "tcp4", "bind", "127.0.0.1", "26300")
        self.assertEqual(renamed[-1], "bind -1 EADDRINUSE")

    def narrowed(self, sock, port, *then):
        return self.probe_lines(sock, "portrange", str(port), str(port), *then)

    def test_ip_local_port_range_bind_zero(self):
        """A range of one port, then bind(port 0): the kernel gives exactly
        that port, so it is decided as a bind of it; a moved port is refused
        (it cannot be moved once taken)."""
        for sock, any_addr in (("tcp4", "0.0.0.0"), ("udp4", "0.0.0.0"), ("tcp6", "::")):
            with self.subTest(sock=sock):
                self.assertEqual(self.narrowed(sock, NARROW, "bind", any_addr, "0")[-1], "bind -1 EADDRINUSE")
                self.assertEqual(self.narrowed(sock, NARROW + 1, "bind", any_addr, "0")[-1], "bind -1 EADDRINUSE")
                self.assertEqual(self.narrowed(sock, NARROW + 2, "bind", any_addr, "0", "sockname")[-1],
                                 f"sockname 0 0 {any_addr} {NARROW + 2}")
        # Given back: the refused socket holds no port.
        out = self.narrowed("tcp4", NARROW, "bind", "0.0.0.0", "0", "sockname")
        self.assertEqual(out[-1], "sockname 0 0 0.0.0.0 0")

    def test_ip_local_port_range_for_clients(self):
        """A client narrowing its range for outgoing connects is not refused."""
        server = self.serve("tcp4", "bind", "127.0.0.1", "26500", "listen", "ready", "accept", "wait")
        out = self.narrowed("tcp4", NARROW + 4, "connect", "127.0.0.1", "26500", "sockname", "reset")
        self.assertEqual(out[-3:-1], ["connect 0 0", f"sockname 0 0 127.0.0.1 {NARROW + 4}"])
        server.finish()

    def test_user_namespace(self):
        if not shutil.which("unshare"):
            self.skipTest("needs unshare")
        out = self.run_in_userns("tcp4", "bind", "127.0.0.1", REFUSED)
        self.assertEqual(out[-1], "bind -1 EADDRINUSE")


class Shim(Catalogue, PolicyTest):
    POLICY = POLICY

    def probe_lines(self, *words, static=False):
        return lines(fenced(self.policy, PROBE_STATIC if static else BUILD["probe"], *words))

    def run_in_userns(self, *words):
        return lines(fenced(self.policy, "unshare", "-U", "-r", BUILD["probe"], *words))

    def serve(self, *words):
        return self.start([BUILD["portfence"], "run", "-c", self.policy, "--", BUILD["probe"], *words],
                          ready="ready")

    def python_lines(self, script):
        return fenced(self.policy, "python3", "-c", script).stdout.splitlines()

    def exec_as(self, name, *words):
        return lines(fenced(self.policy, "bash", "-c", f'exec -a {name} {BUILD["probe"]} "$@"', "-", *words))

    def test_unbound_listen_refused(self):
        self.assertEqual(self.result("tcp4", "listen"), "listen -1 EADDRINUSE")
        # With a narrowed range the shim binds it first, as the kernel would, and decides.
        self.assertEqual(self.narrowed("tcp4", NARROW + 3, "listen")[-1], "listen -1 EADDRINUSE")

    def test_raw_syscall_is_not_seen(self):
        """Documented: the shim wraps libc's bind(); syscall(SYS_bind) goes past it."""
        probe = self.probe_lines("tcp4", "rawbind", "127.0.0.1", REFUSED, "ready")
        self.assertEqual(probe[1], "rawbind 0 0")

    @unittest.skipUnless(URING, "pf-uring not built (needs liburing)")
    def test_io_uring_is_not_seen(self):
        """Documented: io_uring's bind and connect never call libc."""
        r = fenced(self.policy, URING, "bind", "127.0.0.1", REFUSED)
        if r.returncode == 77:
            self.skipTest("this kernel has no IORING_OP_BIND")
        self.assertEqual(r.stdout.strip(), f"bind 0 0 {REFUSED}")

    @unittest.skipUnless(GO_LISTEN, "pf-go-listen not built (needs go)")
    def test_go_without_cgo_is_not_seen(self):
        """Documented: a Go program built with CGO_ENABLED=0 makes its own system calls."""
        r = fenced(self.policy, GO_LISTEN, "tcp", f"127.0.0.1:{REFUSED}")
        self.assertEqual(r.stdout.strip(), f"listen 0 0 127.0.0.1:{REFUSED}")

    @unittest.skipUnless(PROBE_STATIC, "pf-probe-static not built (sanitizers, or no BPF)")
    def test_static_binary_is_not_seen(self):
        """Documented: a static binary loads no shim."""
        self.assertEqual(self.result("tcp4", "bind", "127.0.0.1", REFUSED, static=True), "bind 0 0")


@unittest.skipIf(cgroup_skip_reason(), cgroup_skip_reason())
class Kernel(Catalogue, PolicyTest):
    POLICY = POLICY

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cgroup = Cgroup()
        r = cls.cgroup.attach(cls.policy)
        if r.returncode != 0:
            cls.cgroup.cleanup()
            raise RuntimeError(r.stderr)

    @classmethod
    def tearDownClass(cls):
        cls.cgroup.cleanup()
        super().tearDownClass()

    def probe_lines(self, *words, static=False):
        return self.cgroup.probe(*words, static=static)

    def run_in_userns(self, *words):
        return self.cgroup.run("unshare", "-U", "-r", BUILD["probe"], *words).stdout.splitlines()

    def serve(self, *words):
        return self.start([BUILD["probe"], *words], ready="ready", preexec_fn=self.cgroup.enter)

    def python_lines(self, script):
        return self.cgroup.run("python3", "-c", script).stdout.splitlines()

    def exec_as(self, name, *words):
        return self.cgroup.run("bash", "-c", f'exec -a {name} {BUILD["probe"]} "$@"', "-", *words).stdout.splitlines()

    def test_unbound_listen_is_not_seen(self):
        """Documented: no cgroup hook runs for listen(): the kernel's autobind
        of an unbound socket picks a port no program sees."""
        self.assertEqual(self.result("tcp4", "listen"), "listen 0 0")
        self.assertEqual(self.narrowed("tcp4", NARROW + 3, "listen", "sockname")[-1],
                         f"sockname 0 0 0.0.0.0 {NARROW + 3}")

    def moved_bind(self, into, port):
        """A socket made in one cgroup, bound after its process moved to another."""
        script = ("import socket, os\n"
                  "s = socket.socket()\n"
                  f"open('{into}/cgroup.procs', 'w').write(str(os.getpid()))\n"
                  "try:\n"
                  f"    s.bind(('127.0.0.1', {port})); print('bound')\n"
                  "except OSError as e:\n"
                  "    print(e.errno)\n")
        return script

    def test_a_socket_is_judged_by_the_cgroup_it_was_made_in(self):
        """Documented: the kernel ties a socket to the cgroup of the process
        that made it. Made outside and bound inside: not fenced; made inside
        and bound after leaving: fenced."""
        outside = Cgroup()
        self.addCleanup(outside.cleanup)
        made_outside = outside.run(sys.executable, "-c", self.moved_bind(self.cgroup.path, REFUSED))
        self.assertEqual(made_outside.stdout.strip(), "bound", made_outside.stderr)
        made_inside = self.cgroup.run(sys.executable, "-c", self.moved_bind(outside.path, REFUSED))
        self.assertEqual(made_inside.stdout.strip(), "98", made_inside.stderr)

    def test_raw_syscall_is_refused(self):
        self.assertEqual(self.result("tcp4", "rawbind", "127.0.0.1", REFUSED), "rawbind -1 EADDRINUSE")
        self.assertEqual(bound_in_proc(REFUSED), 0)

    @unittest.skipUnless(URING, "pf-uring not built (needs liburing)")
    def test_io_uring_is_fenced(self):
        r = self.cgroup.run(URING, "bind", "127.0.0.1", REFUSED)
        if r.returncode == 77:
            self.skipTest("this kernel has no IORING_OP_BIND")
        self.assertEqual(r.stdout.strip(), "bind -1 EADDRINUSE 0")
        # A connect through io_uring follows a moved server as connect(2) does.
        server = self.serve("tcp4", "bind", "127.0.0.1", "26102", "listen", "ready", "wait")
        r = self.cgroup.run(URING, "connect", "127.0.0.1", "26102")
        self.assertRegex(r.stdout.strip(), r"^connect 0 0 \d+$")
        server.finish()

    @unittest.skipUnless(GO_LISTEN, "pf-go-listen not built (needs go)")
    def test_go_without_cgo_is_fenced(self):
        r = self.cgroup.run(GO_LISTEN, "tcp", f"127.0.0.1:{REFUSED}")
        self.assertEqual(r.stdout.strip(), "listen -1 EADDRINUSE")
        r = self.cgroup.run(GO_LISTEN, "tcp", "127.0.0.1:26103")
        self.assertEqual(r.stdout.strip(), "listen 0 0 127.0.0.1:26103")     # moved, named as asked

    @unittest.skipUnless(PROBE_STATIC, "pf-probe-static not built (sanitizers)")
    def test_static_binary_is_refused(self):
        self.assertEqual(self.result("tcp4", "bind", "127.0.0.1", REFUSED, static=True), "bind -1 EADDRINUSE")


def without_privilege():
    """The command prefix that drops every privilege: another user where the
    build can be reached by one (a checkout in a directory only root may
    enter cannot), else root's uid with every capability gone."""
    other = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    r = subprocess.run(other + ["test", "-x", BUILD["portfence"]], capture_output=True)
    return other if r.returncode == 0 else ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]


class Landlock(PolicyTest):
    """The third column: 'portfence run --landlock' with no privilege. What
    the shim cannot see gets EACCES for every TCP port the policy does not
    let a server take (Landlock knows no remap); dynamic programs are still
    moved by the shim."""
    POLICY = POLICY

    def setUp(self):
        super().setUp()
        if not shutil.which("setpriv"):
            self.skipTest("needs setpriv")
        self.drop = without_privilege() if os.geteuid() == 0 else []
        readable = tempfile.mkdtemp(prefix="pf-landlock-")
        self.addCleanup(shutil.rmtree, readable)
        os.chmod(readable, 0o755)
        self.readable_policy = shutil.copy(self.policy, readable)
        os.chmod(self.readable_policy, 0o644)
        r = self.run_fenced("true")
        if r.returncode != 0 and "--landlock:" in r.stderr:
            self.skipTest(r.stderr.strip())
        self.assertEqual(r.returncode, 0, r.stderr)

    def run_fenced(self, *cmd):
        return subprocess.run(self.drop + [BUILD["portfence"], "run", "--landlock", "-c", self.readable_policy,
                                           "--", *cmd], capture_output=True, text=True, env=base_env(),
                              timeout=60)

    def result(self, *words, static=False):
        return lines(self.run_fenced(PROBE_STATIC if static else BUILD["probe"], *words))[-1]

    @unittest.skipUnless(PROBE_STATIC, "pf-probe-static not built (sanitizers, or no BPF)")
    def test_static_binary_gets_eacces(self):
        self.assertEqual(self.result("tcp4", "bind", "127.0.0.1", REFUSED, static=True), "bind -1 EACCES")
        self.assertEqual(self.result("tcp6", "bind", "::1", "26101", static=True), "bind -1 EACCES")   # remapped
        self.assertEqual(self.result("tcp4", "bind", "127.0.0.1", "26500", static=True), "bind 0 0")
        self.assertEqual(self.result("tcp4", "bind", "127.0.0.1", "7601", static=True), "bind 0 0")   # a target
        self.assertEqual(self.result("tcp4", "bind", "127.0.0.1", "0", static=True), "bind 0 0")

    def test_raw_syscall_gets_eacces(self):
        self.assertEqual(self.result("tcp4", "rawbind", "127.0.0.1", REFUSED), "rawbind -1 EACCES")

    @unittest.skipUnless(GO_LISTEN, "pf-go-listen not built (needs go)")
    def test_go_without_cgo_gets_eacces(self):
        self.assertEqual(self.run_fenced(GO_LISTEN, "tcp", f"127.0.0.1:{REFUSED}").stdout, "listen -1 EACCES\n")
        self.assertEqual(self.run_fenced(GO_LISTEN, "tcp", "127.0.0.1:26500").stdout,
                         "listen 0 0 127.0.0.1:26500\n")

    @unittest.skipUnless(URING, "pf-uring not built (needs liburing)")
    def test_io_uring_gets_eacces(self):
        r = self.run_fenced(URING, "bind", "127.0.0.1", REFUSED)
        if r.returncode == 77:
            self.skipTest("this kernel has no IORING_OP_BIND")
        self.assertEqual(r.stdout.strip(), "bind -1 EACCES 0")

    def test_dynamic_programs_are_moved_as_before(self):
        out = lines(self.run_fenced(BUILD["probe"], "tcp4", "bind", "127.0.0.1", "26101", "sockname"))
        self.assertEqual(out[1:], ["bind 0 0", "sockname 0 0 127.0.0.1 26101"])
        self.assertEqual(self.result("tcp4", "bind", "127.0.0.1", REFUSED), "bind -1 EADDRINUSE")  # the shim's

    @unittest.skipUnless(PROBE_STATIC, "pf-probe-static not built (sanitizers, or no BPF)")
    def test_udp_is_not_covered(self):
        """Documented: Landlock has no UDP rules before ABI 10."""
        self.assertEqual(self.result("udp4", "bind", "127.0.0.1", REFUSED, static=True), "bind 0 0")

    @unittest.skipUnless(PROBE_STATIC, "pf-probe-static not built (sanitizers, or no BPF)")
    def test_the_policy_key_makes_it_the_default(self):
        with open(self.readable_policy, "a") as f:
            f.write("landlock = true;\n")
        r = subprocess.run(self.drop + [BUILD["portfence"], "run", "-c", self.readable_policy, "--", PROBE_STATIC,
                                        "tcp4", "bind", "127.0.0.1", REFUSED],
                           capture_output=True, text=True, env=base_env(), timeout=60)
        self.assertEqual(lines(r)[-1], "bind -1 EACCES", r.stderr)

    @unittest.skipUnless(PROBE_STATIC and mptcp_available(), "needs the static probe and MPTCP")
    def test_mptcp_is_the_kernels_gap(self):
        """Documented: Landlock does not yet check MPTCP sockets' binds."""
        self.assertEqual(self.result("mptcp4", "bind", "127.0.0.1", REFUSED, static=True), "bind 0 0")


if __name__ == "__main__":
    main({"cgroup": ["Kernel"], "landlock": ["Landlock"],
          "uring": ["Shim.test_io_uring_is_not_seen", "Kernel.test_io_uring_is_fenced"],
          "static": ["Shim.test_static_binary_is_not_seen", "Kernel.test_static_binary_is_refused"],
          "go": ["Shim.test_go_without_cgo_is_not_seen", "Kernel.test_go_without_cgo_is_fenced"]})
