#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Moved servers stay reachable: a cgroup fence, and 'portfence run' as
root, steer every new TCP connection to the port a server asked for to where
it was moved, from another host (a network namespace joined by a veth pair),
through DNAT (as a Service's virtual IP is), and from local processes nobody
fenced; flows that were there first keep going where they went."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import pftest  # noqa: E402
from pftest import (main, BUILD, TIMEOUT, Cgroup, PolicyTest, base_env, cgroup_skip_reason,  # noqa: E402
                    port_listening, portfence, preload, write_policy)

HOST4, PEER4, HOST6, PEER6 = "10.251.0.1", "10.251.0.2", "fd00:251::1", "fd00:251::2"
FAR_HOST4, FAR4 = "10.252.0.1", "10.252.0.2"   # a host routed to through this one
SERVICE = "10.96.0.10"          # a virtual IP, DNAT'ed to the fenced host as a Service's is
PORT, TARGET = 40000, 7040

POLICY = f"""version = 1;
ephemeral = "host";
default_action = "refuse";
rules = ( {{ ports = "{PORT}-{PORT + 19}"; action = "remap"; to = {TARGET}; }} );
"""

# A server in the fenced cgroup: it answers N clients and says, for each,
# the port the accepted socket reports and what the client sent (probes
# that only look are let go).
SERVER = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()
print("ready", flush=True)
answered = 0
while answered < int(sys.argv[3]):
    a, _ = s.accept(); a.settimeout(10)
    data = a.recv(2)
    if data:
        print("got", data.decode(), "on", a.getsockname()[1], flush=True)
        a.sendall(b"ok"); answered += 1
    a.close()
"""
# A server listening at the port twice, as redis and nginx do: IPv4 on one
# socket, IPv6 only on another. It answers N clients, whichever they reach.
TWO_FAMILIES = """
import select, socket, sys
port = int(sys.argv[1])
four = socket.socket(); four.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
four.bind(("0.0.0.0", port)); four.listen()
six = socket.socket(socket.AF_INET6); six.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
six.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); six.bind(("::", port)); six.listen()
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    ready, _, _ = select.select([four, six], [], [], 10)
    a, _ = ready[0].accept(); a.settimeout(10)
    print("got", a.recv(2).decode(), "on", "ipv6" if ready[0] is six else "ipv4", a.getsockname()[1], flush=True)
    a.sendall(b"ok"); a.close()
"""
# A SO_REUSEPORT group of three listeners in one process: the first and the
# last to listen close when told (a line on stdin), the middle one answers N
# clients.
REUSEPORT_GROUP = """
import socket, sys
def member():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(); return s
first, middle, last = member(), member(), member()
print("ready", flush=True)
sys.stdin.readline()
first.close(); last.close()
print("closed", flush=True)
for _ in range(int(sys.argv[2])):
    a, _ = middle.accept(); a.settimeout(10)
    print("got", a.recv(2).decode(), "on", a.getsockname()[1], flush=True)
    a.sendall(b"ok"); a.close()
"""
# A UDP server: it answers N datagrams and says, for each, the port its
# socket reports and what the client sent.
UDP_SERVER = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    data, peer = s.recvfrom(16)
    print("got", data.decode(), "on", s.getsockname()[1], flush=True)
    s.sendto(b"ok", peer)
"""
# The same at one port twice: IPv4 on one socket, IPv6 only on another.
UDP_TWO_FAMILIES = """
import select, socket, sys
port = int(sys.argv[1])
four = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); four.bind(("0.0.0.0", port))
six = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
six.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); six.bind(("::", port))
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    ready, _, _ = select.select([four, six], [], [], 10)
    data, peer = ready[0].recvfrom(16)
    print("got", data.decode(), "on", "ipv6" if ready[0] is six else "ipv4", flush=True)
    ready[0].sendto(b"ok", peer)
"""
# A connected UDP client, which takes answers from the port it sent to only:
# the port it reports, and the server's answer.
UDP_CLIENT = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
c = socket.socket(family, socket.SOCK_DGRAM); c.settimeout(5)
c.connect((sys.argv[1], int(sys.argv[2])))
c.send(b"hi"); print("peer", c.getpeername()[1], c.recv(2).decode())
"""
# A kernel before Linux 6.6, for tc links alone (tests/integration/libpf-notcx.c).
WITHOUT_TC_LINKS = {"LD_PRELOAD": preload(BUILD["notcx"])}
# A client: the port its connection reports, and the server's answer.
CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(b"hi"); print("peer", c.getpeername()[1], c.recv(2).decode())
"""


def port_bound_udp(port):
    """Is a UDP socket of this namespace bound at port?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def setup_skip_reason():
    reason = cgroup_skip_reason()
    if reason:
        return reason
    for program in ("ip", "nsenter", "unshare"):
        if not shutil.which(program):
            return f"needs {program}"
    if not pftest.PRIVATE_NETWORK:
        return "needs a network namespace of the suite's own (PF_TEST_NETNS=private, as meson runs it as root)"
    return None


class Peer:
    """Another host: a network namespace joined to this one by a veth pair
    (pfs0 here, pfs1 there). A second one (index 1: pfs2, pfs3) sits on
    another subnet, reached from the first through this host."""

    def __init__(self, index=0):
        here, there = f"pfs{2 * index}", f"pfs{2 * index + 1}"
        self.host4, self.address4 = (HOST4, PEER4) if index == 0 else (FAR_HOST4, FAR4)
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "600"])
        self.pid = self.holder.pid
        self.link = here
        for _ in range(100):
            if os.readlink(f"/proc/{self.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.01)
        self.sh(f"""
            ip link add {here} type veth peer name {there} netns {self.pid}
            sysctl -qw net.ipv6.conf.{here}.accept_dad=0
            ip addr add {self.host4}/24 dev {here}
            ip link set {here} up
        """)
        if index == 0:
            self.sh(f"ip -6 addr add {HOST6}/64 dev {here} nodad")
        self.sh(f"""
            ip link set lo up
            sysctl -qw net.ipv6.conf.{there}.accept_dad=0
            ip addr add {self.address4}/24 dev {there}
            ip link set {there} up
            ip route add default via {self.host4}
        """, inside=True)
        if index == 0:
            self.sh(f"ip -6 addr add {PEER6}/64 dev {there} nodad", inside=True)

    def sh(self, script, inside=False):
        cmd = (["nsenter", "-t", str(self.pid), "-n"] if inside else []) + ["sh", "-euc", textwrap.dedent(script)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
        if r.returncode != 0:
            raise RuntimeError(f"{script}: {r.stderr}")
        return r.stdout

    def python(self, code, *args):
        return subprocess.run(["nsenter", "-t", str(self.pid), "-n", sys.executable, "-c", code, *args],
                              capture_output=True, text=True, timeout=TIMEOUT, env=base_env())

    def cleanup(self):
        self.holder.kill()
        self.holder.wait()
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)


class SteeringCases:
    """The cases, for an enforcer that starts a server (serve) as it fences
    it, with the policy's steering on or off."""

    def setUp(self):
        super().setUp()
        reason = setup_skip_reason()
        if reason:
            self.skipTest(reason)
        self.peer = Peer()
        self.addCleanup(self.peer.cleanup)

    def serve(self, address, port, connections, policy=None):
        return self.serve_code(SERVER, address, port, connections, policy=policy)

    def assert_reached(self, client, port):
        self.assertEqual(client.stdout, f"peer {port} ok\n", client.stderr)

    def local_client(self, port, host="127.0.0.1"):
        return subprocess.run([sys.executable, "-c", CLIENT, host, str(port)],
                              capture_output=True, text=True, timeout=TIMEOUT, env=base_env())

    def test_clients_on_another_host_reach_a_moved_server(self):
        """TCP over IPv4 and IPv6, to a dual-stack server: the client and the
        accepted socket both see the port the server asked for."""
        server = self.serve("::", PORT, 2)
        self.assertTrue(port_listening(TARGET, "::1"))
        self.assert_reached(self.peer.python(CLIENT, HOST4, str(PORT)), PORT)
        self.assert_reached(self.peer.python(CLIENT, HOST6, str(PORT)), PORT)
        lines, _ = server.finish("")
        self.assertEqual(lines[1:], [f"got hi on {PORT}"] * 2)

    def test_a_server_on_two_sockets_is_reached_on_each(self):
        """An IPv4 listener and an IPv6-only one at the same port, both
        moved: each family's clients reach their own."""
        server = self.serve_code(TWO_FAMILIES, PORT + 9, 4)
        self.assert_reached(self.peer.python(CLIENT, HOST4, str(PORT + 9)), PORT + 9)
        self.assert_reached(self.peer.python(CLIENT, HOST6, str(PORT + 9)), PORT + 9)
        self.assert_reached(self.local_client(PORT + 9), PORT + 9)
        self.assert_reached(self.local_client(PORT + 9, "::1"), PORT + 9)
        lines, _ = server.finish("")
        self.assertEqual(sorted(lines[1:]), sorted([f"got hi on ipv4 {PORT + 9}", f"got hi on ipv6 {PORT + 9}"] * 2))

    def test_a_reuseport_group_is_reached_while_a_member_listens(self):
        """The members that listened first and last close: the group is
        still reached through the one left, from the other host and
        locally."""
        server = self.serve_code(REUSEPORT_GROUP, PORT + 12, 2)
        server.proc.stdin.write("\n")
        server.proc.stdin.flush()
        self.assertEqual(server.proc.stdout.readline(), "closed\n")
        self.assert_reached(self.peer.python(CLIENT, HOST4, str(PORT + 12)), PORT + 12)
        self.assert_reached(self.local_client(PORT + 12), PORT + 12)
        lines, _ = server.finish("")
        self.assertEqual(lines[-2:], [f"got hi on {PORT + 12}"] * 2)

    def test_an_unfenced_local_client_and_a_service_ip_reach_it(self):
        """A virtual IP DNAT'ed to the fenced host's port (nftables, as
        kube-proxy does), and a local process nobody fenced."""
        if not shutil.which("nft"):
            self.skipTest("needs nft")
        rules = textwrap.dedent(f"""
            table ip pftest_steering {{
                chain prerouting {{
                    type nat hook prerouting priority dstnat;
                    ip daddr {SERVICE} tcp dport 80 dnat to {HOST4}:{PORT + 1}
                }}
            }}""")
        r = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(subprocess.run, ["nft", "delete", "table", "ip", "pftest_steering"], capture_output=True)
        server = self.serve("0.0.0.0", PORT + 1, 2)
        self.assert_reached(self.peer.python(CLIENT, SERVICE, "80"), 80)
        self.assert_reached(self.local_client(PORT + 1), PORT + 1)
        lines, _ = server.finish("")
        self.assertEqual(lines[1:], [f"got hi on {PORT + 1}"] * 2)

    def local_udp_client(self, port, host="127.0.0.1"):
        return subprocess.run([sys.executable, "-c", UDP_CLIENT, host, str(port)],
                              capture_output=True, text=True, timeout=TIMEOUT, env=base_env())

    def test_udp_clients_on_another_host_reach_a_moved_server(self):
        """UDP over IPv4 and IPv6, to a dual-stack server, and from local
        processes nobody runs or fences: each datagram reaches it, and its
        answers come from the port the client sent to (a connected client
        takes no other)."""
        server = self.serve_code(UDP_SERVER, "::", PORT + 13, 4)
        self.assert_reached(self.peer.python(UDP_CLIENT, HOST4, str(PORT + 13)), PORT + 13)
        self.assert_reached(self.peer.python(UDP_CLIENT, HOST6, str(PORT + 13)), PORT + 13)
        self.assert_reached(self.local_udp_client(PORT + 13), PORT + 13)
        self.assert_reached(self.local_udp_client(PORT + 13, "::1"), PORT + 13)
        lines, _ = server.finish("")
        self.assertEqual(lines[1:], [f"got hi on {PORT + 13}"] * 4)

    def test_udp_is_steered_beside_a_masquerade(self):
        """A namespace that masquerades (nftables, as podman's and Docker's
        hosts do): datagrams from the other host and from a local client
        still reach the moved server."""
        if not shutil.which("nft"):
            self.skipTest("needs nft")
        rules = textwrap.dedent("""
            table ip pftest_masquerade {
                chain postrouting {
                    type nat hook postrouting priority srcnat;
                    oifname "pf-none" masquerade
                }
            }""")
        r = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(subprocess.run, ["nft", "delete", "table", "ip", "pftest_masquerade"], capture_output=True)
        server = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 6, 2)
        self.assert_reached(self.peer.python(UDP_CLIENT, HOST4, str(PORT + 6)), PORT + 6)
        self.assert_reached(self.local_udp_client(PORT + 6), PORT + 6)
        server.finish("")

    def test_a_udp_server_on_two_sockets_is_reached_on_each(self):
        """An IPv4 socket and an IPv6-only one at the same port, both moved:
        each family's datagrams reach their own, first and later ones."""
        server = self.serve_code(UDP_TWO_FAMILIES, PORT + 9, 4)
        for host in (HOST4, HOST6, HOST4, HOST6):
            self.assert_reached(self.peer.python(UDP_CLIENT, host, str(PORT + 9)), PORT + 9)
        lines, _ = server.finish("")
        self.assertEqual(lines[1:], ["got hi on ipv4", "got hi on ipv6"] * 2)

    def test_a_udp_client_holding_the_port_keeps_its_flow(self):
        """A connected UDP client of this host sits on the port, talking to
        the other host: a server binds the port, is moved and steered, and
        the client's datagrams still come back to it."""
        far = subprocess.Popen(["nsenter", "-t", str(self.peer.pid), "-n", sys.executable, "-c", textwrap.dedent("""
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9000))
            print("ready", flush=True)
            for _ in range(2):
                data, peer = s.recvfrom(5); s.sendto(data, peer)
        """)], stdout=subprocess.PIPE, text=True)
        self.addCleanup(far.kill)
        self.assertEqual(far.stdout.readline(), "ready\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind((HOST4, PORT + 14))
            client.settimeout(10)
            client.connect((PEER4, 9000))
            client.send(b"first")
            self.assertEqual(client.recv(5), b"first")
            server = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 14, 1)
            self.assertTrue(port_bound_udp(TARGET + 14))
            client.send(b"again")
            self.assertEqual(client.recv(5), b"again")
            self.assert_reached(self.peer.python(UDP_CLIENT, HOST4, str(PORT + 14)), PORT + 14)
            server.finish("")

    def test_a_udp_client_under_the_enforcer_sends_as_asked(self):
        """Where the server is steered to, a client the enforcer runs sends
        to the port it asked for (a redirected one would be connected to
        the port the server holds, and drop answers from the other)."""
        server = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 15, 2)
        self.assert_reached(self.enforced_client(UDP_CLIENT, "127.0.0.1", PORT + 15), PORT + 15)
        self.assert_reached(self.enforced_client(UDP_CLIENT, HOST4, PORT + 15), PORT + 15)
        lines, _ = server.finish("")
        self.assertEqual(lines[1:], [f"got hi on {PORT + 15}"] * 2)

    def test_datagrams_routed_through_this_host_pass_by(self):
        """A datagram from one host to another, routed through this one, to
        the port a server here was moved from, is forwarded, not taken."""
        far = Peer(1)
        self.addCleanup(far.cleanup)
        forwarding = subprocess.run(["sysctl", "-n", "net.ipv4.ip_forward"], capture_output=True, text=True).stdout
        subprocess.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        self.addCleanup(subprocess.run, ["sysctl", "-qw", f"net.ipv4.ip_forward={forwarding.strip()}"])
        receiver = subprocess.Popen(["nsenter", "-t", str(far.pid), "-n", sys.executable, "-c", UDP_SERVER,
                                     "0.0.0.0", str(PORT + 16), "1"], stdout=subprocess.PIPE, text=True)
        self.addCleanup(receiver.kill)
        self.assertEqual(receiver.stdout.readline(), "ready\n")
        server = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 16, 1)
        self.assert_reached(self.peer.python(UDP_CLIENT, FAR4, str(PORT + 16)), PORT + 16)
        self.assert_reached(self.peer.python(UDP_CLIENT, HOST4, str(PORT + 16)), PORT + 16)
        server.finish("")

    def test_a_loopback_server_is_not_reached_from_another_host(self):
        server = self.serve("127.0.0.1", PORT + 2, 1)
        far = self.peer.python(CLIENT, HOST4, str(PORT + 2))
        self.assertIn("ConnectionRefusedError", far.stderr)
        self.assert_reached(self.local_client(PORT + 2), PORT + 2)
        server.finish("")

    def test_a_client_holding_the_port_keeps_its_flow(self):
        """A client of this host sits on the port, connected to a server on
        the other host (the collision itself): a fenced server binds the
        port, is moved and steered, and the client's flow goes on."""
        far = subprocess.Popen(["nsenter", "-t", str(self.peer.pid), "-n", sys.executable, "-c", textwrap.dedent("""
            import socket, sys
            s = socket.socket(); s.bind(("0.0.0.0", 9000)); s.listen(); print("ready", flush=True)
            a, _ = s.accept(); a.settimeout(10)
            for _ in range(2):
                a.sendall(a.recv(5))
        """)], stdout=subprocess.PIPE, text=True)
        self.addCleanup(far.kill)
        self.assertEqual(far.stdout.readline(), "ready\n")
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            client.bind((HOST4, PORT + 3))
            client.settimeout(10)
            client.connect((PEER4, 9000))
            client.sendall(b"first")
            self.assertEqual(client.recv(5), b"first")
            server = self.serve("0.0.0.0", PORT + 3, 1)
            self.assertTrue(port_listening(TARGET + 3))
            client.sendall(b"again")
            self.assertEqual(client.recv(5), b"again")
            self.assert_reached(self.local_client(PORT + 3), PORT + 3)
            server.finish("")

    def test_steer_false_leaves_other_hosts_refused(self):
        policy = write_policy(POLICY + "steer = false;\n")
        self.addCleanup(os.unlink, policy)
        server = self.serve("0.0.0.0", PORT + 5, 1, policy=policy)
        far = self.peer.python(CLIENT, HOST4, str(PORT + 5))
        self.assertIn("ConnectionRefusedError", far.stderr)
        server.stop()
        # a UDP server moved unsteered answers its redirected clients from
        # where it is, as they expect
        datagrams = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 5, 1, policy=policy)
        self.assert_reached(self.enforced_client(UDP_CLIENT, "127.0.0.1", PORT + 5, policy=policy), PORT + 5)
        datagrams.finish("")


class Steering(SteeringCases, PolicyTest):
    """A cgroup fence: steered in the namespace it was attached from."""
    POLICY = POLICY

    def setUp(self):
        super().setUp()
        self.cgroup = Cgroup()
        self.addCleanup(self.cgroup.cleanup)
        r = self.cgroup.attach(self.policy)
        self.assertEqual(r.returncode, 0, r.stderr)

    def serve_code(self, code, *args, policy=None):
        if policy:
            r = portfence("cgroup", "reload", "-c", policy, self.cgroup.path)
            self.assertEqual(r.returncode, 0, r.stderr)
        return self.start([sys.executable, "-c", code, *map(str, args)], ready="ready", preexec_fn=self.cgroup.enter)

    def enforced_client(self, code, *args, policy=None):
        """A client in the fenced cgroup (the fence holds the policy)."""
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], preexec_fn=self.cgroup.enter,
                              capture_output=True, text=True, timeout=TIMEOUT, env=base_env())

    def test_a_reload_turning_steer_off_keeps_earlier_udp_servers_steered(self):
        """A UDP server moved while the policy steered stays steered; one
        moved after a reload to steer = false is not: the other host is
        refused, and a fenced client, redirected, takes its answers from
        where it is."""
        before = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 15, 1)
        policy = write_policy(POLICY + "steer = false;\n")
        self.addCleanup(os.unlink, policy)
        after = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 16, 1, policy=policy)
        # while the earlier one is steered (its answers are rewritten)
        self.assert_reached(self.enforced_client(UDP_CLIENT, "127.0.0.1", PORT + 16), PORT + 16)
        self.assertIn("ConnectionRefusedError", self.peer.python(UDP_CLIENT, HOST4, str(PORT + 16)).stderr)
        self.assert_reached(self.peer.python(UDP_CLIENT, HOST4, str(PORT + 15)), PORT + 15)
        before.finish("")
        after.finish("")

    def test_a_reload_steers_on_interfaces_added_since(self):
        """UDP is steered on the interfaces there were at the attach: one
        added later (another host behind it) is steered on from the next
        reload."""
        far = Peer(1)
        self.addCleanup(far.cleanup)
        server = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 19, 1)
        before = far.python(UDP_CLIENT, FAR_HOST4, str(PORT + 19))
        self.assertIn("ConnectionRefusedError", before.stderr)
        r = portfence("cgroup", "reload", "-c", self.policy, self.cgroup.path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_reached(far.python(UDP_CLIENT, FAR_HOST4, str(PORT + 19)), PORT + 19)
        server.finish("")

    def test_a_kernel_without_tc_links_steers_tcp_alone(self):
        """Where no tc program can be linked, the fence is made all the same
        and says UDP is not steered: a moved UDP server is refused to the
        other host and reached by fenced clients, redirected; TCP is
        steered."""
        self.assertEqual(portfence("cgroup", "detach", self.cgroup.path).returncode, 0)
        r = portfence("cgroup", "attach", "-c", self.policy, self.cgroup.path, env=WITHOUT_TC_LINKS)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("this kernel links no tc programs", r.stderr)
        datagrams = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 5, 1)
        self.assertIn("ConnectionRefusedError", self.peer.python(UDP_CLIENT, HOST4, str(PORT + 5)).stderr)
        self.assert_reached(self.enforced_client(UDP_CLIENT, "127.0.0.1", PORT + 5), PORT + 5)
        server = self.serve("0.0.0.0", PORT + 5, 1)
        self.assert_reached(self.peer.python(CLIENT, HOST4, str(PORT + 5)), PORT + 5)
        datagrams.finish("")
        server.finish("")

    def test_steering_ends_with_the_fence(self):
        server = self.serve("0.0.0.0", PORT + 4, 1)
        datagrams = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 4, 1)
        r = portfence("cgroup", "detach", self.cgroup.path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(port_listening(TARGET + 4))
        self.assertTrue(port_bound_udp(TARGET + 4))
        far = self.peer.python(CLIENT, HOST4, str(PORT + 4))
        self.assertIn("ConnectionRefusedError", far.stderr)
        far = self.peer.python(UDP_CLIENT, HOST4, str(PORT + 4))
        self.assertIn("ConnectionRefusedError", far.stderr)
        server.stop()
        datagrams.stop()


def steering_links():
    """The sk_lookup links attached to this network namespace (bpftool)."""
    r = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True, timeout=TIMEOUT)
    here = os.stat("/proc/self/ns/net").st_ino
    return [link["id"] for link in json.loads(r.stdout or "[]")
            if link.get("attach_type") == "sk_lookup" and link.get("netns_ino") == here]


def held_links(pid, link_type):
    """The ids of the BPF links of link_type a process holds (fdinfo)."""
    ids = []
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            continue
        if info.get("link_type") == link_type:
            ids.append(info["link_id"])
    return ids


def link_exists(link_id):
    return subprocess.run(["bpftool", "link", "show", "id", link_id], capture_output=True).returncode == 0


class RunSteering(SteeringCases, PolicyTest):
    """'portfence run' as root: steered in the namespace it started in, while
    the command (or a child of it) runs."""
    POLICY = POLICY

    def serve_code(self, code, *args, policy=None):
        return self.start([BUILD["portfence"], "run", "-c", policy or self.policy, "--", sys.executable, "-c",
                           code, *map(str, args)], ready="ready")

    def enforced_client(self, code, *args, policy=None):
        return subprocess.run([BUILD["portfence"], "run", "-c", policy or self.policy, "--", sys.executable, "-c", code,
                               *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT, env=base_env())

    @unittest.skipUnless(shutil.which("strace"), "needs strace")
    def test_a_wrapped_client_connects_as_asked(self):
        """Where the server is steered to, a wrapped client reaches it at the
        port it asked for with no redirect (none is logged) and no question
        to the kernel (strace sees no sock_diag socket)."""
        server = self.serve("0.0.0.0", PORT + 6, 1)
        trace = tempfile.mktemp(prefix="pf-strace-")
        self.addCleanup(lambda: os.path.exists(trace) and os.unlink(trace))
        r = subprocess.run([BUILD["portfence"], "run", "-v", "-c", self.policy, "--", "strace", "-f", "-e",
                            "trace=socket", "-o", trace, sys.executable, "-c", CLIENT, "127.0.0.1", str(PORT + 6)],
                           capture_output=True, text=True, timeout=TIMEOUT, env=base_env())
        self.assert_reached(r, PORT + 6)
        self.assertNotIn(": connect ", r.stderr)
        with open(trace) as f:
            self.assertEqual([line for line in f if "NETLINK_SOCK_DIAG" in line], [])
        lines, _ = server.finish("")
        self.assertEqual(lines[1:], [f"got hi on {PORT + 6}"])

    @unittest.skipUnless(shutil.which("strace"), "needs strace")
    def test_a_steered_server_accepts_with_no_system_call_added(self):
        """Its connections come addressed to the port it asked for: the
        shim records nothing per accept (strace, attached once the server
        listens, sees no fstat per accept)."""
        server = self.serve("0.0.0.0", PORT + 10, 5)
        trace = tempfile.mktemp(prefix="pf-strace-")
        self.addCleanup(lambda: os.path.exists(trace) and os.unlink(trace))
        tracer = subprocess.Popen(["strace", "-f", "-e", "trace=fstat,newfstatat,statx", "-o", trace,
                                   "-p", str(server.proc.pid)], stderr=subprocess.PIPE, text=True)
        self.addCleanup(tracer.kill)
        self.assertIn("attached", tracer.stderr.readline())
        for _ in range(5):
            self.assert_reached(self.local_client(PORT + 10), PORT + 10)
        server.finish("")
        tracer.wait(timeout=TIMEOUT)
        with open(trace) as f:
            stats = [line for line in f if "stat" in line]
        self.assertLess(len(stats), 5, stats)   # the server's own, at exit: not one per accept

    @unittest.skipUnless(shutil.which("bpftool"), "needs bpftool")
    def test_steering_ends_with_the_command(self):
        """Nothing is pinned: the link goes with the last process that holds
        it, and a kill leaves nothing behind."""
        before = steering_links()
        server = self.serve("0.0.0.0", PORT + 4, 1)
        self.assertEqual(len(steering_links()), len(before) + 1)
        server.proc.kill()
        server.proc.wait()
        for _ in range(100):
            if steering_links() == before:
                break
            time.sleep(0.05)
        self.assertEqual(steering_links(), before)
        far = self.peer.python(CLIENT, HOST4, str(PORT + 4))
        self.assertIn("ConnectionRefusedError", far.stderr)

    def assert_a_stranger_at_the_target_hears_nothing(self, port):
        """A UDP socket nobody moved, bound where port's server was moved
        to: datagrams from the other host to port are refused, and it gets
        none of them."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("0.0.0.0", TARGET + port - PORT))
            stranger.settimeout(0.5)
            far = self.peer.python(UDP_CLIENT, HOST4, str(port))
            self.assertIn("ConnectionRefusedError", far.stderr)
            self.assertRaises(socket.timeout, stranger.recv, 2)

    @unittest.skipUnless(shutil.which("bpftool"), "needs bpftool")
    def test_datagram_steering_ends_with_the_command(self):
        """The tc links (one per interface, egress: lo, pfs0) go with
        the command too, and a UDP socket bound at the port the killed
        server held is not taken for it."""
        server = self.serve_code(UDP_SERVER, "0.0.0.0", PORT + 17, 1)
        links = held_links(server.proc.pid, "tcx")
        self.assertEqual(len(links), 2, links)
        server.proc.kill()
        server.proc.wait()
        for _ in range(100):
            if not any(map(link_exists, links)):
                break
            time.sleep(0.05)
        self.assertEqual([link for link in links if link_exists(link)], [])
        self.assert_a_stranger_at_the_target_hears_nothing(PORT + 17)

    def test_a_closed_udp_server_leaves_nothing_to_its_port(self):
        """The command lives on, its moved UDP socket closed: another
        socket bound where it was is not given its datagrams."""
        server = self.start([BUILD["portfence"], "run", "-c", self.policy, "--", sys.executable, "-c", textwrap.dedent(f"""
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", {PORT + 18}))
            print("ready", flush=True)
            sys.stdin.readline(); s.close()
            print("closed", flush=True)
            sys.stdin.readline()
        """)], ready="ready")
        server.proc.stdin.write("\n")
        server.proc.stdin.flush()
        self.assertEqual(server.proc.stdout.readline(), "closed\n")
        self.assert_a_stranger_at_the_target_hears_nothing(PORT + 18)
        server.finish()

    def test_a_program_that_lost_the_map_is_not_steered_and_hears_it(self):
        """A daemon that closes the descriptors it inherited, then execs: its
        moved TCP server is not steered, and says who cannot follow it."""
        code = textwrap.dedent(f"""
            import os, sys
            os.close(int(os.environ["PORTFENCE_STEER"].split(":")[0]))
            os.execv(sys.executable, [sys.executable, "-c",
                     "import socket; s = socket.socket(); s.bind(('0.0.0.0', {PORT + 11})); s.listen()"])
        """)
        r = subprocess.run([BUILD["portfence"], "run", "-c", self.policy, "--", sys.executable, "-c", code],
                           capture_output=True, text=True, timeout=TIMEOUT, env=base_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("only clients portfence runs or fences follow it", r.stderr)

    def test_a_kernel_without_tc_links_steers_tcp_alone(self):
        """Where no tc program can be linked, run says UDP is not steered and
        steers TCP; a moved UDP server hears it, is refused to the other
        host and reached by wrapped clients, redirected."""
        datagrams = self.start([BUILD["portfence"], "run", "-c", self.policy, "--", sys.executable, "-c",
                                UDP_SERVER, "0.0.0.0", str(PORT + 5), "1"], env=WITHOUT_TC_LINKS, ready="ready")
        self.assertIn("ConnectionRefusedError", self.peer.python(UDP_CLIENT, HOST4, str(PORT + 5)).stderr)
        self.assert_reached(self.enforced_client(UDP_CLIENT, "127.0.0.1", PORT + 5), PORT + 5)
        _, err = datagrams.finish("")
        self.assertIn("this kernel links no tc programs", err)
        self.assertIn("a UDP server moved on an address other hosts can reach could not be steered to", err)
        server = self.start([BUILD["portfence"], "run", "-c", self.policy, "--", sys.executable, "-c", SERVER,
                             "0.0.0.0", str(PORT + 5), "1"], env=WITHOUT_TC_LINKS, ready="ready")
        self.assert_reached(self.peer.python(CLIENT, HOST4, str(PORT + 5)), PORT + 5)
        server.finish("")

    def test_a_moved_udp_lite_server_hears_that_it_is_not_steered(self):
        """The tc programs read UDP headers only: a UDP-Lite server moved
        on an address others can reach is told its clients will not follow."""
        r = subprocess.run([BUILD["portfence"], "run", "-c", self.policy, "--", sys.executable, "-c",
                            "import socket\n"
                            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)\n"
                            f"s.bind(('0.0.0.0', {PORT + 8}))\n"],
                           capture_output=True, text=True, timeout=TIMEOUT, env=base_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("a UDP server moved on an address other hosts can reach could not be steered to", r.stderr)

    def test_moved_servers_under_steering_hear_nothing(self):
        """TCP and UDP are both steered: neither server is told that clients
        will not follow it."""
        r = subprocess.run([BUILD["portfence"], "run", "-c", self.policy, "--", sys.executable, "-c",
                            "import socket\n"
                            f"socket.socket().bind(('0.0.0.0', {PORT + 7}))\n"
                            f"socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(('0.0.0.0', {PORT + 8}))\n"],
                           capture_output=True, text=True, timeout=TIMEOUT, env=base_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("steered", r.stderr)
        self.assertNotIn("follow", r.stderr)

if __name__ == "__main__":
    main()
