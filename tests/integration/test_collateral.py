#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Remap without collateral damage, under the shipped default policy, in both
enforcers: a connect follows a remap only to where a fenced server was really
moved, a socket bound to the port asked for is reached as addressed, and the
shim never harms the program it wraps."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import (main, scale, BUILD, PIN_ROOT, SOURCE, TIMEOUT, Background, Cgroup, PolicyTest, base_env,  # noqa: E402
                    cgroup_skip_reason, fenced, port_listening, portfence, write_policy)

SHIPPED = os.path.join(SOURCE, "config", "portfence.conf")
PYTHON = sys.executable

# Programs, each printing what the test compares. Servers print "ready PORT".
PORT0_SELF = """
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname(), timeout=5)
a, _ = s.accept(); c.sendall(b"hi"); print("got", a.recv(2).decode())
"""
TCP_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", int(sys.argv[1]))); s.listen()
print("ready", s.getsockname()[1], flush=True)
while True:                             # probes that only look are let go
    a, _ = s.accept(); data = a.recv(2)
    if data:
        print("got", data.decode(), "on", a.getsockname()[1], flush=True); break
"""
TCP_CLIENT = """
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
c.sendall(b"hi"); print("peer", c.getpeername()[1])
"""
UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", int(sys.argv[1])))
print("ready", s.getsockname()[1], flush=True)
data, peer = s.recvfrom(16); s.sendto(data, peer)
"""
UDP_CLIENT = """
import socket, sys
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
c.sendto(b"ping", ("127.0.0.1", int(sys.argv[1])))
data, peer = c.recvfrom(16); print("reply", data.decode(), "from", peer[1])
"""

BIND_ONE = """
import errno, socket, sys
kind = socket.SOCK_DGRAM if sys.argv[2] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
if "reuseport" in sys.argv[3:]:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    print("bound", s.getsockname()[1])
except OSError as e:
    print(errno.errorcode[e.errno])
"""
REUSEPORT_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("ready", s.getsockname()[1], flush=True)
sys.stdin.readline()
"""
# Go's TestTCPListener and TestUDPListener, CPython's
# test_create_server_addr_in_use: listen on port 0, then again on the port
# the kernel gave, and expect an error.
LISTEN_AGAIN = """
import errno, socket
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    first = socket.socket(socket.AF_INET, kind); first.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        first.listen()
    again = socket.socket(socket.AF_INET, kind)
    try:
        again.bind(first.getsockname()); print("bound")
    except OSError as e:
        print(errno.errorcode[e.errno])
"""


def free_guarded_port(offset):
    """A port of this host's ephemeral range (guarded by the shipped policy)
    that nothing holds now."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())
    for port in range(low + offset, high):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    break
        else:
            return port
    raise unittest.SkipTest("no free port in the host's ephemeral range")


def target_of(port, proto="tcp"):
    r = portfence("check", "-c", SHIPPED, "--json", f"{port}/{proto}")
    verdict = json.loads(r.stdout)[0]
    assert verdict["action"] == "remap", verdict
    return verdict["target"]


class Collateral:
    """The cases, for an enforcer that says how to run a program fenced
    (run_py) and start one in the background (start_py). Each enforcer takes
    its ports from its own stretch of the range (PORT_SHIFT), so what one
    leaves in TIME_WAIT never meets the other."""
    PORT_SHIFT = 0

    def free_port(self, offset):
        return free_guarded_port(offset + self.PORT_SHIFT)

    def test_port0_server_same_process(self):
        r = self.run_py(PORT0_SELF)
        self.assertEqual(r.stdout, "got hi\n", r.stderr)

    def test_port0_server_other_process(self):
        server = self.start_py(TCP_SERVER, "0")
        port = int(server.lines[-1].split()[1])
        client = self.run_py(TCP_CLIENT, str(port))
        self.assertEqual(client.stdout, f"peer {port}\n", client.stderr)
        out, _ = server.finish("")
        self.assertIn(f"got hi on {port}", out)

    def test_udp_reply_to_a_kernel_chosen_port(self):
        server = self.start_py(UDP_ECHO, "0")
        port = int(server.lines[-1].split()[1])
        client = self.run_py(UDP_CLIENT, str(port))
        self.assertEqual(client.stdout, f"reply ping from {port}\n", client.stderr)
        server.finish("")

    def test_moved_server_reached_through_its_port(self):
        port = self.free_port(3000)
        server = self.start_py(TCP_SERVER, str(port))
        self.assertEqual(server.lines[-1], f"ready {port}")
        self.assertTrue(port_listening(target_of(port)))
        client = self.run_py(TCP_CLIENT, str(port))
        self.assertEqual(client.stdout, f"peer {port}\n", client.stderr)
        out, _ = server.finish("")
        self.assertIn(f"got hi on {port}", out)

    def test_moved_udp_server_reached_through_its_port(self):
        port = self.free_port(3100)
        server = self.start_py(UDP_ECHO, str(port))
        client = self.run_py(UDP_CLIENT, str(port))
        self.assertEqual(client.stdout, f"reply ping from {port}\n", client.stderr)
        server.finish("")

    def test_a_udp_client_leaves_a_server_that_is_gone(self):
        """A datagram client that followed a moved server sends as addressed
        once that server is gone and another receives at the port asked for
        (the shim trusts what it learnt for a second, then asks again)."""
        port = self.free_port(3150)
        server = self.start_py(UDP_ECHO, str(port))
        client = self.start_py(textwrap.dedent(f"""
            import socket, sys, time
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
            c.sendto(b"one", ("127.0.0.1", {port}))
            print("ready", c.recvfrom(16)[0].decode(), flush=True)
            sys.stdin.readline()
            time.sleep(1.2)
            c.sendto(b"two", ("127.0.0.1", {port}))
            data, peer = c.recvfrom(16); print("reply", data.decode(), "from", peer[1], flush=True)
        """))
        self.assertEqual(client.lines[-1], "ready one")
        server.finish("")                   # the echo answered once and is gone
        with Background([PYTHON, "-c", UDP_ECHO, str(port)], ready="ready") as plain:
            lines, err = client.finish("\n")
            self.assertEqual(lines[-1], f"reply two from {port}", err)
            plain.finish("")

    def test_not_moved_port_is_not_redirected(self):
        """Nothing was moved from the port: the connect fails as addressed
        (before, it went to the pool port a bind would get)."""
        port = self.free_port(3200)
        with socket.socket() as decoy:      # something on the pool port
            decoy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            decoy.bind(("127.0.0.1", target_of(port)))
            decoy.listen()
            r = self.run_py(TCP_CLIENT, str(port))
        self.assertIn("ConnectionRefusedError", r.stderr)

    def test_only_the_moved_socket_reports_the_port_asked_for(self):
        """Another socket on the target port, or a connect straight to it,
        reports the real port."""
        port = self.free_port(4200)
        target = target_of(port)
        code = textwrap.dedent(f"""
            import socket
            moved = socket.socket(); moved.bind(("127.0.0.1", {port})); moved.listen()
            other = socket.socket(); other.bind(("127.0.0.2", {target})); other.listen()
            direct = socket.create_connection(("127.0.0.1", {target}))
            print(moved.getsockname()[1], other.getsockname()[1], direct.getpeername()[1])
        """)
        r = self.run_py(code)
        self.assertEqual(r.stdout, f"{port} {target} {target}\n", r.stderr)

    def test_exec_inherits_a_moved_listener(self):
        """A binary upgrade: the listener survives exec and still reports the
        port asked for, and so do its connections."""
        port = self.free_port(3300)
        upgraded = textwrap.dedent("""
            import socket, sys
            s = socket.socket(fileno=int(sys.argv[1]))
            print("ready", s.getsockname()[1], flush=True)
            a, _ = s.accept(); print("got", a.recv(2).decode(), "on", a.getsockname()[1], flush=True)
        """)
        old = textwrap.dedent(f"""
            import os, socket, sys
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", {port})); s.listen()
            s.set_inheritable(True)
            os.execv(sys.executable, [sys.executable, "-c", {upgraded!r}, str(s.fileno())])
        """)
        server = self.start_py(old)
        self.assertEqual(server.lines[-1], f"ready {port}")
        client = self.run_py(TCP_CLIENT, str(port))
        self.assertEqual(client.stdout, f"peer {port}\n", client.stderr)
        out, _ = server.finish("")
        self.assertIn(f"got hi on {port}", out)

    def test_a_socket_at_the_port_wins(self):
        """A server was moved away from the port, and now something else
        listens there (here an unfenced one): a connect reaches it. (With
        steering, the moved server holds its port: see test_steering.py.)"""
        port = self.free_port(4600)
        policy = write_policy(NO_STEER)
        self.addCleanup(os.unlink, policy)
        server = self.start_py(TCP_SERVER, str(port), policy=policy)
        with socket.socket() as there:
            there.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            there.bind(("127.0.0.1", port))
            there.listen()
            r = self.run_py(TCP_CLIENT, str(port), policy=policy)
            there.settimeout(5)
            conn, _ = there.accept()
            with conn:
                self.assertEqual(conn.recv(2), b"hi")
        self.assertEqual(r.stdout, f"peer {port}\n", r.stderr)
        server.stop()

    def test_an_exited_server_is_not_followed(self):
        """Its port is no longer moved: a connect fails as addressed, even
        with something else now on the target."""
        port = self.free_port(4700)
        server = self.start_py(TCP_SERVER, str(port))
        server.stop()
        with socket.socket() as decoy:
            decoy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            decoy.bind(("127.0.0.1", target_of(port)))
            decoy.listen()
            r = self.run_py(TCP_CLIENT, str(port))
        self.assertIn("ConnectionRefusedError", r.stderr)

    def test_remote_destinations_are_never_redirected(self):
        """A connect to another host on a moved port is not this host's
        server: it goes where it was sent (the server listens on every
        address, so only 'is it local' tells them apart)."""
        port = self.free_port(4300)
        policy = write_policy(NO_STEER)
        self.addCleanup(os.unlink, policy)
        server = self.start_py(TCP_SERVER, str(port), "0.0.0.0", policy=policy)
        self.assertEqual(self.redirects(REMOTE_CONNECT, str(port), policy=policy), 0)
        self.assertEqual(self.redirects(TCP_CLIENT, str(port), policy=policy), 1)     # the local one is
        server.stop()

    def test_redirect_connect_false_follows_nothing(self):
        policy = write_policy(NO_REDIRECT)
        self.addCleanup(os.unlink, policy)
        port = self.free_port(4400)
        server = self.start_py(TCP_SERVER, str(port), policy=policy)
        r = self.run_py(TCP_CLIENT, str(port), policy=policy)
        self.assertIn("ConnectionRefusedError", r.stderr)
        server.stop()

    def test_a_server_moved_by_a_conditional_rule_is_followed(self):
        port = self.free_port(4600)
        policy = write_policy(CONDITIONAL_MOVE % port)
        self.addCleanup(os.unlink, policy)
        server = self.start_py(TCP_SERVER, str(port), policy=policy)
        self.assertTrue(port_listening(7177))
        client = self.run_py(TCP_CLIENT, str(port), policy=policy)
        self.assertEqual(client.stdout, f"peer {port}\n", client.stderr)
        out, _ = server.finish("")
        self.assertIn(f"got hi on {port}", out)

    def test_second_bind_gets_the_kernels_errno(self):
        refused, moved = self.free_port(3400), self.free_port(3500)
        for first, second in (("0", refused), (moved, refused), ("6500", refused)):
            with self.subTest(first=first, second=second):
                out = self.run_probe(self.refuse_policy, "tcp4", "bind", "127.0.0.1", str(first),
                                     "bind", "127.0.0.1", str(second))
                self.assertEqual(out[2], "bind -1 EINVAL")
        # A failed second bind changes nothing the socket reports.
        other = self.free_port(3600)
        out = self.run_probe(SHIPPED, "tcp4", "bind", "127.0.0.1", str(moved), "bind", "127.0.0.1",
                             str(other), "sockname")
        self.assertEqual(out[2:], ["bind -1 EINVAL", f"sockname 0 0 127.0.0.1 {moved}"])

    def test_a_moved_servers_port_is_in_use(self):
        """A moved server holds the port it asked for: a second bind of it
        gets what it would have without the move."""
        port = self.free_port(5100)
        server = self.start_py(TCP_SERVER, str(port))
        for proto in ("tcp", "udp"):
            with self.subTest(proto=proto):
                r = self.run_py(BIND_ONE, str(port), proto)
                self.assertEqual(r.stdout, "EADDRINUSE\n" if proto == "tcp" else f"bound {port}\n", r.stderr)
        client = self.run_py(TCP_CLIENT, str(port))
        self.assertEqual(client.stdout, f"peer {port}\n", client.stderr)
        self.assertIn(f"got hi on {port}", server.finish("")[0])

    def test_reuseport_servers_share_the_move(self):
        port = self.free_port(5200)
        server = self.start_py(REUSEPORT_SERVER, str(port))
        r = self.run_py(BIND_ONE, str(port), "tcp", "reuseport")
        self.assertEqual(r.stdout, f"bound {port}\n", r.stderr)
        server.finish("\n")

    def test_listening_again_on_a_port_a_server_holds(self):
        r = self.run_py(LISTEN_AGAIN)
        self.assertEqual(r.stdout, "EADDRINUSE\nEADDRINUSE\n", r.stderr)

    def test_a_port_held_by_a_client_is_still_moved(self):
        """A client socket sits on the port (the collision itself): the
        server is moved, and the client's connection goes on."""
        port = self.free_port(5300)
        with socket.socket() as listener, socket.socket() as client:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            client.bind(("127.0.0.1", port))
            client.connect(listener.getsockname())
            conn, _ = listener.accept()
            with conn:
                server = self.start_py(TCP_SERVER, str(port))
                self.assertEqual(server.lines[-1], f"ready {port}")
                self.assertTrue(port_listening(target_of(port)))
                client.sendall(b"on")
                self.assertEqual(conn.recv(2), b"on")
                server.stop()

    def test_a_rule_for_another_program_does_not_take_a_moved_port(self):
        """A policy whose rules send one port two places (a condition on the
        program): the first server moved holds the port, and another
        program's bind of it gets what the port would give."""
        port = self.free_port(5400)
        policy = write_policy(CONDITIONAL_MOVE % port)
        self.addCleanup(os.unlink, policy)
        server = self.start_py(TCP_SERVER, str(port), policy=policy)
        self.assertTrue(port_listening(7177))
        out = self.run_probe(policy, "tcp4", "bind", "127.0.0.1", str(port))
        self.assertEqual(out[1:], ["bind -1 EADDRINUSE"])
        client = self.run_py(TCP_CLIENT, str(port), policy=policy)
        self.assertEqual(client.stdout, f"peer {port}\n", client.stderr)
        self.assertIn(f"got hi on {port}", server.finish("")[0])

    def test_a_rule_allowing_another_program_does_not_take_a_moved_port(self):
        """A rule lets one program bind the port as asked; a server moved
        from it first still holds it: that program's bind gets what the port
        would give (EADDRINUSE), not the port itself."""
        port = self.free_port(5450)
        policy = write_policy(ALLOW_PROBE % port)
        self.addCleanup(os.unlink, policy)
        server = self.start_py(TCP_SERVER, str(port), policy=policy)
        self.assertEqual(self.run_probe(policy, "tcp4", "bind", "127.0.0.1", str(port))[1:], ["bind -1 EADDRINUSE"])
        server.stop()
        self.assertEqual(self.run_probe(policy, "tcp4", "bind", "127.0.0.1", str(port))[1:], ["bind 0 0"])


REMOTE_CONNECT = """
import socket, sys
c = socket.socket(); c.setblocking(False)
print("connect", c.connect_ex(("192.0.2.1", int(sys.argv[1]))) != 0)   # TEST-NET-1: never local
"""

# Clients follow nothing: no redirect, and no steering by a cgroup fence.
NO_REDIRECT = open(SHIPPED).read().replace("redirect_connect = true;", "redirect_connect = false;\nsteer = false;")
assert "redirect_connect = false;" in NO_REDIRECT
# Only redirected clients follow (a cgroup fence steers nothing): what a
# redirect does, seen alone.
NO_STEER = open(SHIPPED).read().replace("redirect_connect = true;", "redirect_connect = true;\nsteer = false;")
assert "steer = false;" in NO_STEER


# A rule with a program condition moves python3's server to a port of its
# own; a client's connect, decided with no program, gets the default's pool
# target instead: it must still go where the server really is.
CONDITIONAL_MOVE = """version = 1;
ephemeral = "host";
default_action = "remap";
remap_pool = "7000-7099";
rules = ( { ports = "%d"; program = "python3*"; action = "remap"; to = 7177; } );
"""

# pf-probe may bind the port as asked; any other server is moved.
ALLOW_PROBE = """version = 1;
ephemeral = "host";
default_action = "remap";
remap_pool = "7000-7099";
rules = ( { ports = "%d"; program = "pf-probe"; action = "allow"; } );
"""

REFUSE_POLICY = """version = 1;
ephemeral = "host";
default_action = "refuse";
rules = ( { ports = "%d"; action = "remap"; } );
"""


class ShimCollateral(Collateral, PolicyTest):
    """Each program under its own 'portfence run'."""

    def setUp(self):
        super().setUp()
        self.refuse_policy = write_policy(REFUSE_POLICY % self.free_port(3500))
        self.addCleanup(os.unlink, self.refuse_policy)

    def run_py(self, code, *args, env=None, policy=SHIPPED, **kw):
        return fenced(policy, PYTHON, "-c", code, *args, env=env, **kw)

    def start_py(self, code, *args, policy=SHIPPED):
        return self.start([BUILD["portfence"], "run", "-c", policy, "--", PYTHON, "-c", code, *args],
                          ready="ready")

    def redirects(self, code, *args, policy=SHIPPED):
        """Run code: how many connects the shim redirected (it logs each at debug)."""
        r = fenced(policy, PYTHON, "-c", code, *args, verbose=True)
        return sum(1 for line in r.stderr.splitlines() if ": connect " in line and ": remap -> " in line)

    def test_log_level(self):
        """A remap is logged at info: level error says nothing, debug also
        tells the redirected connect."""
        port = self.free_port(4500)
        for level, expect in (("error", 0), ("info", 1), ("debug", 2)):
            with self.subTest(level=level):
                policy = write_policy(NO_STEER.replace('level = "info"', f'level = "{level}"'))
                self.addCleanup(os.unlink, policy)
                code = textwrap.dedent(f"""
                    import socket
                    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", {port})); s.listen()
                    socket.create_connection(("127.0.0.1", {port}))
                """)
                r = self.run_py(code, policy=policy)
                self.assertEqual(len([l for l in r.stderr.splitlines() if "remap -> " in l]), expect, r.stderr)

    def run_probe(self, policy, *words):
        return fenced(policy, BUILD["probe"], *words).stdout.splitlines()

    def test_nonblocking_redirect_logs_einprogress(self):
        port = self.free_port(3700)
        policy = write_policy(NO_STEER)         # a steered connect needs no redirect
        self.addCleanup(os.unlink, policy)
        server = self.start_py(TCP_SERVER, str(port), policy=policy)
        code = textwrap.dedent(f"""
            import socket
            c = socket.socket(); c.setblocking(False)
            print(c.connect_ex(("127.0.0.1", {port})) != 0)
        """)
        r = fenced(policy, PYTHON, "-c", code, verbose=True)
        self.assertIn(f"connect 127.0.0.1:{port}/tcp: remap -> {target_of(port)} (EINPROGRESS)",
                      r.stderr)
        server.stop()

    @unittest.skipUnless(shutil.which("strace"), "needs strace")
    def test_unmoved_ports_cost_no_system_call(self):
        """A connect to a guarded port nobody moved asks the moves table only:
        no sock_diag socket is opened (strace sees every socket(2); the
        routing one getifaddrs() opens at start-up is not sock_diag)."""
        port = self.free_port(4800)
        trace = tempfile.mktemp(prefix="pf-strace-")
        self.addCleanup(lambda: os.path.exists(trace) and os.unlink(trace))
        r = fenced(SHIPPED, "strace", "-f", "-e", "trace=socket", "-o", trace, PYTHON, "-c",
                   TCP_CLIENT, str(port))
        self.assertIn("ConnectionRefusedError", r.stderr)
        with open(trace) as f:
            sockets = [line for line in f if "socket(" in line]
        self.assertTrue(any("AF_INET" in line for line in sockets), sockets)
        self.assertFalse([line for line in sockets if "NETLINK_SOCK_DIAG" in line])

    @unittest.skipUnless(shutil.which("strace"), "needs strace")
    def test_one_sock_diag_socket_for_many_follows(self):
        """Making a sock_diag socket costs more than its lookups: a process
        keeps one for every connect that follows a move."""
        port = self.free_port(4900)
        policy = write_policy(NO_STEER)         # a steered connect asks nothing
        self.addCleanup(os.unlink, policy)
        server = self.start_py(TCP_SERVER, str(port), policy=policy)
        trace = tempfile.mktemp(prefix="pf-strace-")
        self.addCleanup(lambda: os.path.exists(trace) and os.unlink(trace))
        code = textwrap.dedent(f"""
            import socket
            for _ in range(5):
                socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
            print("reached 5")
        """)
        r = fenced(policy, "strace", "-f", "-e", "trace=socket", "-o", trace, PYTHON, "-c", code)
        self.assertEqual(r.stdout, "reached 5\n", r.stderr)
        with open(trace) as f:
            self.assertEqual(len([line for line in f if "NETLINK_SOCK_DIAG" in line]), 1)
        server.stop()

    def test_a_descriptor_taken_from_the_shim_never_receives_its_requests(self):
        """A program that closes the shim's sock_diag socket and puts its own
        socket at that number: the shim asks the kernel on a new one, and
        the program's socket receives nothing."""
        port = self.free_port(5000)
        policy = write_policy(NO_STEER)         # a steered connect asks nothing
        self.addCleanup(os.unlink, policy)
        server = self.start_py(TCP_SERVER, str(port), policy=policy)
        code = textwrap.dedent(f"""
            import os, socket
            def reach():
                socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
            before = set(os.listdir("/proc/self/fd"))
            reach()
            shims = [int(fd) for fd in set(os.listdir("/proc/self/fd")) - before]
            mine, peer = socket.socketpair()
            for fd in shims:
                os.dup2(mine.fileno(), fd)
            reach()
            peer.setblocking(False)
            try:
                print("received", len(peer.recv(4096)))
            except BlockingIOError:
                print("received nothing")
            print("taken", len(shims))
        """)
        r = self.run_py(code, policy=policy)
        self.assertEqual(r.stdout, "received nothing\ntaken 1\n", r.stderr)
        server.stop()

    def test_closed_stderr_never_receives_log_lines(self):
        """fd 2 closed, then reused by a TCP connection: our lines stay out of
        the program's stream, and a gone peer raises no SIGPIPE."""
        port, again = self.free_port(3800), self.free_port(3900)
        code = textwrap.dedent(f"""
            import os, signal, socket
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
            os.close(2)
            c = socket.create_connection(srv.getsockname())
            assert c.fileno() == 2, c.fileno()
            peer, _ = srv.accept()
            moved = socket.socket(); moved.bind(("127.0.0.1", {port}))
            peer.setblocking(False)
            try:
                leaked = peer.recv(4096)
            except BlockingIOError:
                leaked = b""
            print("leaked", len(leaked), flush=True)
            peer.close()
            socket.socket().bind(("127.0.0.1", {again}))
            print("alive", flush=True)
        """)
        r = self.run_py(code)
        self.assertEqual((r.returncode, r.stdout), (0, "leaked 0\nalive\n"), r.stderr)
        self.assertIn(f"bind 127.0.0.1:{port}/tcp: remap", r.stderr)
        self.assertIn(f"bind 127.0.0.1:{again}/tcp: remap", r.stderr)

    def test_a_daemon_closing_every_descriptor_never_gets_log_lines(self):
        """A daemon closes every descriptor above 2 as it detaches and opens its
        data file, which gets the number of the shim's log: the decisions after
        that are not written into it."""
        port = self.free_port(3950)
        data = tempfile.mktemp(prefix="pf-test-data-")
        self.addCleanup(lambda: os.path.exists(data) and os.unlink(data))
        code = textwrap.dedent(f"""
            import os, socket
            socket.socket().bind(("127.0.0.1", {port}))         # logged, as before
            logs = [int(fd) for fd in os.listdir("/proc/self/fd") if int(fd) > 2]
            os.closerange(3, 1 << 16)
            fd = os.open({data!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            socket.socket().bind(("127.0.0.1", {port + 1}))
            os.write(fd, b"data\\n")
            print("took the log's number", fd in logs)
        """)
        r = self.run_py(code)
        self.assertEqual((r.returncode, r.stdout), (0, "took the log's number True\n"), r.stderr)
        self.assertIn(f"bind 127.0.0.1:{port}/tcp: remap", r.stderr)
        with open(data) as f:
            self.assertEqual(f.read(), "data\n")

    def test_log_pipe_without_reader_raises_no_sigpipe(self):
        port = self.free_port(4000)
        code = textwrap.dedent(f"""
            import signal, socket
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            socket.socket().bind(("127.0.0.1", {port}))
            print("alive", flush=True)
        """)
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            r = subprocess.run([BUILD["portfence"], "run", "-c", SHIPPED, "--", PYTHON, "-c", code],
                               stdout=subprocess.PIPE, stderr=write_end, text=True,
                               env=base_env(), timeout=TIMEOUT)
        finally:
            os.close(write_end)
        self.assertEqual((r.returncode, r.stdout), (0, "alive\n"))

    def test_short_address_buffers(self):
        """Every buffer length from 0 to past a sockaddr_in6: nothing beyond
        the caller's buffer is read or written, and a whole address gets the
        port asked for. Past the buffer lies the moved port itself, so that
        a shim reading past it would find something to restore."""
        port = self.free_port(4100)
        target = target_of(port)
        code = textwrap.dedent(f"""
            import ctypes, socket
            libc = ctypes.CDLL(None, use_errno=True)

            class iovec(ctypes.Structure):
                _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

            class msghdr(ctypes.Structure):
                _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint),
                            ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                            ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                            ("flags", ctypes.c_int)]

            def call(name, fd, n):
                canary = [0xAA] * 64
                canary[2:4] = [{target} >> 8, {target} & 0xff]  # the real port, network order
                buf = (ctypes.c_ubyte * 64)(*canary)
                size = ctypes.c_uint(n)
                data = ctypes.create_string_buffer(16)
                if name in ("getsockname", "getpeername"):
                    r = getattr(libc, name)(fd, buf, ctypes.byref(size))
                elif name == "recvfrom":
                    r = libc.recvfrom(fd, data, 16, 0, buf, ctypes.byref(size))
                else:
                    io = iovec(ctypes.cast(data, ctypes.c_void_p), 16)
                    msg = msghdr(ctypes.cast(buf, ctypes.c_void_p), n, ctypes.pointer(io), 1, None, 0, 0)
                    r = libc.recvmsg(fd, ctypes.byref(msg), 0)
                intact = all(buf[i] == canary[i] for i in range(n, 64))
                got = buf[2] << 8 | buf[3] if n >= 16 else None
                return r >= 0, intact, got

            server = socket.socket(); server.bind(("127.0.0.1", {port})); server.listen()
            client = socket.create_connection(("127.0.0.1", {port}))
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", {port}))
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            bad = []
            for name, fd in (("getsockname", server.fileno()), ("getpeername", client.fileno()),
                             ("recvfrom", sender.fileno()), ("recvmsg", sender.fileno())):
                for n in range(0, 40):
                    if name.startswith("recv"):
                        sender.sendto(b"x", ("127.0.0.1", {port}))
                        data, peer = udp.recvfrom(16)
                        udp.sendto(b"y", peer)
                    ok, intact, got = call(name, fd, n)
                    if not ok or not intact or got not in (None, {port}):
                        bad.append((name, n, ok, intact, got))
            print("bad", bad)
        """)
        r = self.run_py(code)
        self.assertEqual(r.stdout, "bad []\n", r.stderr)


@unittest.skipIf(cgroup_skip_reason(), cgroup_skip_reason())
class CgroupCollateral(Collateral, PolicyTest):
    """Each program a process of one fenced cgroup."""
    PORT_SHIFT = 5000

    def setUp(self):
        super().setUp()
        self.cgroup = Cgroup()
        self.addCleanup(self.cgroup.cleanup)
        self.refuse_cgroup = Cgroup()
        self.addCleanup(self.refuse_cgroup.cleanup)
        self.other_cgroups = {}
        self.refuse_policy = write_policy(REFUSE_POLICY % self.free_port(3500))
        self.addCleanup(os.unlink, self.refuse_policy)
        for cgroup, policy in ((self.cgroup, SHIPPED), (self.refuse_cgroup, self.refuse_policy)):
            r = cgroup.attach(policy)
            self.assertEqual(r.returncode, 0, r.stderr)

    def cgroup_for(self, policy):
        if policy == SHIPPED:
            return self.cgroup
        cgroup = Cgroup()
        self.addCleanup(cgroup.cleanup)
        r = cgroup.attach(policy)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.other_cgroups[policy] = cgroup
        return cgroup

    def run_py(self, code, *args, policy=SHIPPED):
        cgroup = self.other_cgroups.get(policy) or self.cgroup_for(policy)
        return cgroup.run(PYTHON, "-c", code, *args)

    def start_py(self, code, *args, policy=SHIPPED):
        cgroup = self.other_cgroups.get(policy) or self.cgroup_for(policy)
        return self.start([PYTHON, "-c", code, *args], ready="ready", preexec_fn=cgroup.enter)

    def redirects(self, code, *args, policy=SHIPPED):
        """Run code: how many connects the fence redirected (its counter)."""
        cgroup = self.other_cgroups.get(policy) or self.cgroup_for(policy)

        def counter():
            status = json.loads(portfence("cgroup", "status", "--json", cgroup.path).stdout)
            return status[0]["redirect"]
        before = counter()
        self.run_py(code, *args, policy=policy)
        return counter() - before

    def run_probe(self, policy, *words):
        cgroup = {SHIPPED: self.cgroup, self.refuse_policy: self.refuse_cgroup}.get(policy)
        return (cgroup or self.other_cgroups.get(policy) or self.cgroup_for(policy)).probe(*words)

    def peer_entry(self, cookie):
        """The socket's slot of the host's peers[] (its cookie picks it), as
        bpftool reads it, if the socket holds it; else None."""
        pin = os.path.join(PIN_ROOT, str(os.stat(self.cgroup.path).st_ino), "peers")
        key = [str(b) for b in (cookie % 4096).to_bytes(4, "little")]
        r = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", pin, "key", *key],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        value = json.loads(r.stdout)["formatted"]["value"]
        if value["cookie"] not in (0, cookie):
            self.skipTest("a socket outside this test holds the slot")   # a real fence's client
        return value if value["cookie"] == cookie else None

    @unittest.skipUnless(shutil.which("bpftool"), "needs bpftool")
    def test_a_redirected_socket_is_remembered_until_it_closes(self):
        """A redirected connect allocates nothing: its destination is kept in
        the preallocated peers[] by socket cookie, and leaves with the socket."""
        port = self.free_port(3800)
        policy = write_policy(NO_STEER)         # a steered connect needs no redirect
        self.addCleanup(os.unlink, policy)
        server = self.start_py(TCP_SERVER, str(port), policy=policy)
        client = self.start_py(textwrap.dedent(f"""
            import socket, sys
            c = socket.create_connection(("127.0.0.1", {port}), timeout=5)
            cookie = int.from_bytes(c.getsockopt(socket.SOL_SOCKET, 57, 8), "little")    # SO_COOKIE
            print("ready", cookie, c.getpeername()[1], flush=True)
            sys.stdin.readline()
            c.close()
            print("closed", flush=True)
            sys.stdin.readline()
        """), policy=policy)
        _, cookie, peer = client.lines[-1].split()
        self.assertEqual(int(peer), port)
        self.assertEqual(self.peer_entry(int(cookie)),
                         {"cookie": int(cookie), "requested": port, "target": target_of(port), "pad": 0})
        client.proc.stdin.write("\n")
        client.proc.stdin.flush()
        self.assertEqual(client.proc.stdout.readline(), "closed\n")
        self.assertIsNone(self.peer_entry(int(cookie)))
        client.finish("")
        server.stop()

    def test_connections_past_the_peers_table_still_report_the_port_asked_for(self):
        """Redirected sockets whose slot of peers[] is taken (2100 at once in
        4096 slots: hundreds of them) keep their destination in socket
        storage, and every one reports the port it asked for."""
        port = self.free_port(3900)
        policy = write_policy(NO_STEER)         # a steered connect needs no redirect
        self.addCleanup(os.unlink, policy)
        server = self.start_py(textwrap.dedent("""
            import socket, sys
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096)
            print("ready", flush=True)
            while True:
                a, _ = s.accept(); a.close()
        """), str(port), policy=policy)
        clients = [self.start_py(textwrap.dedent(f"""
            import socket, sys
            held = [socket.create_connection(("127.0.0.1", {port}), timeout=10) for _ in range(700)]
            print("ready", sum(c.getpeername()[1] != {port} for c in held), flush=True)
            sys.stdin.readline()
        """), policy=policy) for _ in range(3)]
        self.assertEqual([c.lines[-1] for c in clients], ["ready 0"] * 3)
        for c in clients:
            c.finish("")
        server.stop()

    def test_a_tenant_of_another_fence_cannot_take_a_moved_port(self):
        """Two fences in one network namespace, whose policies move one port
        to places of their own: the first server moved holds the port. The
        other fence's bind of it gets EADDRINUSE, as without portfence; the
        server keeps its clients; once it is gone, the port is free."""
        port = self.free_port(5500)
        other = write_policy(f'version = 1;\nephemeral = "host";\n'
                             f'rules = ( {{ ports = "{port}"; action = "remap"; to = 7188; }} );\n')
        self.addCleanup(os.unlink, other)
        server = self.start_py(TCP_SERVER, str(port))
        self.assertEqual(self.run_probe(other, "tcp4", "bind", "127.0.0.1", str(port))[1:], ["bind -1 EADDRINUSE"])
        client = self.run_py(TCP_CLIENT, str(port))
        self.assertEqual(client.stdout, f"peer {port}\n", client.stderr)
        self.assertIn(f"got hi on {port}", server.finish("")[0])
        self.assertEqual(self.run_probe(other, "tcp4", "bind", "127.0.0.1", str(port))[1:], ["bind 0 0"])

    def test_one_fence_cannot_fill_the_registry(self):
        """A process holding more moved sockets than a fence's share of the
        registry: the rest are refused with the policy's errno and counted,
        never moved where no client could follow; another fence still moves
        its servers, and the share comes back when the sockets close."""
        share, extra = 1024, 20
        first = self.free_port(6000)
        policy = write_policy(f'version = 1;\nephemeral = "host";\nrefuse_errno = "EACCES";\n'
                              f'rules = ( {{ ports = "{first}-{first + share + extra - 1}"; action = "remap"; '
                              f'to = 10000; }} );\n')
        self.addCleanup(os.unlink, policy)
        hold = self.start_py(textwrap.dedent("""
            import collections, errno, resource, socket, sys
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
            held, seen = [], collections.Counter()
            for port in range(int(sys.argv[1]), int(sys.argv[1]) + int(sys.argv[2])):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    s.bind(("127.0.0.1", port)); held.append(s); seen["moved"] += 1
                except OSError as e:
                    seen[errno.errorcode[e.errno]] += 1; s.close()
            print("ready", sorted(seen.items()), flush=True)
            sys.stdin.readline()
        """), str(first), str(share + extra), policy=policy)
        self.assertEqual(hold.lines[-1], f"ready [('EACCES', {extra}), ('moved', {share})]")
        status = json.loads(portfence("cgroup", "status", "--json", self.other_cgroups[policy].path).stdout)
        self.assertEqual(status[0]["moves_refused"], extra)
        port = self.free_port(6100 + share + extra)
        server = self.start_py(TCP_SERVER, str(port))           # the shipped policy's fence
        client = self.run_py(TCP_CLIENT, str(port))
        self.assertEqual(client.stdout, f"peer {port}\n", client.stderr)
        server.finish("")
        hold.finish("\n")
        again = self.run_py(BIND_ONE, str(first), "udp", policy=policy)
        self.assertEqual(again.stdout, f"bound {first}\n", again.stderr)

    def test_status_lists_every_fence_while_others_come_and_go(self):
        churn = Cgroup()
        self.addCleanup(churn.cleanup)
        flip = subprocess.Popen(["sh", "-c", f"""
            for i in $(seq {scale(6, 40)}); do
                "$PF" cgroup attach -c "$POLICY" "$CG" >/dev/null 2>&1
                "$PF" cgroup detach "$CG" >/dev/null 2>&1
            done"""], env=base_env({"PF": BUILD["portfence"], "POLICY": SHIPPED, "CG": churn.path}))
        try:
            failures = []
            while flip.poll() is None:
                r = portfence("cgroup", "status", "--json")
                # exit 1: some fence is unfinished (another suite's killed attach)
                if r.returncode not in (0, 1) or self.cgroup.path not in r.stdout:
                    failures.append(r.stderr)
                json.loads(r.stdout)
        finally:
            flip.wait(timeout=TIMEOUT)
        self.assertEqual(failures, [])


if __name__ == "__main__":
    main({"cgroup": ["CgroupCollateral"],
          "slow": ["CgroupCollateral.test_status_lists_every_fence_while_others_come_and_go"]})
