#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""squat, scan, export, client_ports and the demo, as real processes."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import (main, ASAN_RUNTIME, BUILD, Cgroup, cgroup_skip_reason, SOURCE, PolicyTest, base_env, fenced, lines, portfence,  # noqa: E402
                    probe, write_policy)

# A narrow guarded range that nothing else on the host uses.
POLICY = """version = 1;
ephemeral = "29000-29099";
default_action = "remap";
remap_pool = "7700-7799";
rules = (
  { ports = "29050"; action = "allow"; },
  { ports = "29060-29069"; action = "remap"; to = 7860; }
);
"""


NETNS = os.geteuid() == 0 and shutil.which("unshare")


class ToolTest(PolicyTest):
    POLICY = POLICY

    def in_netns(self, script):
        """script (sh) in a network namespace of its own: sysctls of its own."""
        r = subprocess.run(["unshare", "-n", "sh", "-euc", script], capture_output=True, text=True,
                           timeout=30, env=base_env({"PF": BUILD["portfence"], "PYTHON": sys.executable}))
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.splitlines()


class Squat(ToolTest):
    def test_collision_with_python_http_server(self):
        r = portfence("squat", "29010", "--", sys.executable, "-m", "http.server", "29010",
                      "--bind", "127.0.0.1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("OSError: [Errno 98] Address already in use", r.stderr)
        self.assertIn("portfence: squat: holding 29010/tcp on 127.0.0.1 and ::1", r.stderr)

    def test_collision_with_test_server_tcp_and_udp(self):
        for proto, sock, addr in (("tcp", "tcp4", "0.0.0.0"), ("tcp", "tcp6", "::"),
                                  ("udp", "udp4", "127.0.0.1"), ("udp", "udp6", "::1")):
            with self.subTest(proto=proto, sock=sock):
                r = portfence("squat", "--proto", proto, "29011", "--", BUILD["probe"], sock, "reuse",
                              "bind", addr, "29011")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(lines(r)[-1], "bind -1 EADDRINUSE")
        # ...and released afterwards: the same bind now works.
        self.assertEqual(lines(probe("tcp4", "bind", "0.0.0.0", "29011"))[1], "bind 0 0")

    def test_exit_status_is_the_commands(self):
        self.assertEqual(portfence("squat", "29012", "--", "sh", "-c", "exit 5").returncode, 5)

    def test_hold_and_report(self):
        holder = self.start([BUILD["portfence"], "squat", "-4", "--hold", "30", "29013"],
                            ready="portfence: squat: holding")
        self.assertEqual(holder.lines[0], "portfence: squat: holding 29013/tcp on 127.0.0.1 as a "
                                          f"client would (pid {holder.proc.pid})")
        r = portfence("squat", "29013")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "portfence: squat: 29013/tcp on 127.0.0.1 is in use already, by "
                                   f"pid {holder.proc.pid} (portfence)\n")
        holder.proc.terminate()
        holder.proc.wait(timeout=10)
        self.assertEqual(lines(probe("tcp4", "bind", "127.0.0.1", "29013"))[1], "bind 0 0")

    def test_ipv6_only(self):
        holder = self.start([BUILD["portfence"], "squat", "-6", "--hold", "30", "29015"],
                            ready="portfence: squat: holding")
        self.assertEqual(holder.lines[0], "portfence: squat: holding 29015/tcp on ::1 as a client "
                                          f"would (pid {holder.proc.pid})")
        self.assertEqual(lines(probe("tcp6", "bind", "::1", "29015"))[1], "bind -1 EADDRINUSE")
        self.assertEqual(lines(probe("tcp4", "bind", "127.0.0.1", "29015"))[1], "bind 0 0")
        holder.stop()

    def test_usage(self):
        for args, message in (((), "no port given (portfence squat PORT... [-- CMD])"),
                              (("0",), "bad port '0': expected a number 1-65535"),
                              (("70000",), "bad port '70000': expected a number 1-65535"),
                              (("29014", "--"), "no command after '--'"),
                              (("--", "true"), "no port given (portfence squat PORT... [-- CMD])"),
                              (("--proto", "sctp", "29014"), "unknown proto 'sctp' (tcp or udp)"),
                              (("29014", "--hold", "0"), "bad --hold '0': expected seconds, 1 or more"),
                              (("-4", "-6", "29014"), "-4 and -6 together: give one of them, or neither for both"),
                              (("29014", "29014"), "port 29014 is given twice"),
                              (("29014", "--hold", "5", "--", "true"),
                               "--hold and a command contradict each other: the ports are held while "
                               "the command runs")):
            with self.subTest(args=args):
                r = portfence("squat", *args)
                self.assertEqual((r.returncode, r.stderr.splitlines()[0]), (2, "portfence: squat: " + message))

    def test_options_after_ports(self):
        r = portfence("squat", "29016", "-4", "--proto", "udp", "--", "true")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("holding 29016/udp on 127.0.0.1 as a client would", r.stderr)

    def time_wait_on(self, port):
        """Connections in TIME_WAIT with local port `port` (IPv4 and IPv6)."""
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if int(fields[1].split(":")[1], 16) == port and fields[3] == "06":
                        count += 1
        return count

    def gone(self, pid):
        """pid has exited (reaped, or a zombie of someone else)."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    def test_signals_reach_the_command_and_everything_is_released(self):
        for port, sig in ((29017, signal.SIGTERM), (29018, signal.SIGINT), (29019, signal.SIGHUP)):
            with self.subTest(sig=sig.name):
                squat = self.start([BUILD["portfence"], "squat", str(port), "--", "sh", "-c",
                                    "echo child $$; exec sleep 60"], ready="child")
                child = int(squat.lines[-1].split()[1])
                squat.proc.send_signal(sig)
                self.assertEqual(squat.proc.wait(timeout=10), 128 + sig)
                self.assertTrue(self.gone(child))
                self.assertEqual(self.time_wait_on(port), 0)
                self.assertEqual(lines(probe("tcp4", "bind", "127.0.0.1", str(port)))[1], "bind 0 0")

    def test_the_command_dies_with_squat(self):
        squat = self.start([BUILD["portfence"], "squat", "29022", "--", "sh", "-c",
                            "echo child $$; exec sleep 60"], ready="child")
        child = int(squat.lines[-1].split()[1])
        squat.proc.kill()
        squat.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not self.gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(self.gone(child))


class Scan(ToolTest):
    def test_clean(self):
        r = portfence("scan", "-c", self.policy, "--json")
        self.assertEqual((r.returncode, json.loads(r.stdout)), (0, []), r.stderr)

    def test_finds_server_and_client(self):
        server = self.start([BUILD["probe"], "tcp4", "bind", "127.0.0.1", "29020", "listen", "ready",
                             "wait"], ready="ready")
        udp = self.start([BUILD["probe"], "udp6", "bind", "::1", "29021", "ready", "wait"], ready="ready")
        # A client sitting on 7705, a port of the remap pool: a server's port.
        client = self.start([BUILD["portfence"], "squat", "-4", "7705"], ready="portfence: squat: holding")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = portfence("scan", "-c", self.policy, "--json")
            found = json.loads(r.stdout)
            if len(found) >= 3:
                break
            time.sleep(0.1)
        self.assertEqual(r.returncode, 1)
        got = {(f["proto"], f["address"], f["port"], f["kind"], f["program"], f["pid"]) for f in found}
        self.assertIn(("tcp", "127.0.0.1", 29020, "server-in-ephemeral", "pf-probe", server.proc.pid), got)
        # Unconnected UDP: a server, or a client sending from a kernel-chosen port.
        self.assertIn(("udp", "::1", 29021, "udp-in-ephemeral", "pf-probe", udp.proc.pid), got)
        self.assertIn(("tcp", "127.0.0.1", 7705, "client-on-server-port", "portfence", client.proc.pid), got)
        by_port = {f["port"]: f for f in found}
        self.assertEqual(by_port[29020]["verdict"], {"action": "remap", "target": 7720, "errno": None,
                                                     "rule": None, "reason": "default_action for guarded ports"})
        self.assertIn("the policy would remap this bind", by_port[29020]["risk"])
        self.assertIn("cannot tell them apart", by_port[29021]["risk"])
        self.assertIn("fails with EADDRINUSE while this client holds it", by_port[7705]["risk"])
        self.assertEqual(by_port[7705]["owners"], [{"pid": client.proc.pid, "program": "portfence"}])
        text = portfence("scan", "-c", self.policy)
        self.assertIn(f"tcp 127.0.0.1:29020 pid {server.proc.pid} (pf-probe): server-in-ephemeral: "
                      "remap -> 7720 (default_action for guarded ports): the policy would remap",
                      text.stdout)

    def scan_until(self, policy, port):
        """scan --json until a finding on port shows (bounded), then it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = [f for f in json.loads(portfence("scan", "-c", policy, "--json").stdout) if f["port"] == port]
            if found:
                return found[0]
            time.sleep(0.1)
        self.fail(f"nothing found on {port}")

    def test_allowed_server_reported_with_its_rule(self):
        server = self.start([BUILD["probe"], "tcp4", "reuse", "bind", "127.0.0.1", "29050", "listen", "ready",
                             "wait"], ready="ready")
        found = self.scan_until(self.policy, 29050)
        self.assertEqual((found["kind"], found["verdict"]["action"], found["verdict"]["rule"]),
                         ("server-in-ephemeral", "allow", 1))
        self.assertIn("reserve it", found["risk"])
        self.assertRegex(found["verdict"]["reason"], r"^rule 1, .*:6$")
        server.stop()

    @unittest.skipUnless(NETNS, "needs root and unshare")
    def test_a_reserved_port_protects_its_server(self):
        out = self.in_netns("""
            ip link set lo up 2>/dev/null || true
            "$PYTHON" -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 29026)); s.listen(); print("ready", flush=True); time.sleep(30)' &
            holder=$!
            sleep 0.5
            "$PF" scan -c "$POLICY" --json | tr -d '\\n'; echo
            echo 29026 > /proc/sys/net/ipv4/ip_local_reserved_ports
            "$PF" scan -c "$POLICY" --json | tr -d '\\n'; echo
            kill $holder""".replace("$POLICY", self.policy))
        before, after = json.loads(out[-2]), json.loads(out[-1])
        self.assertEqual([f["port"] for f in before], [29026])
        self.assertEqual(after, [])

    def test_a_widened_range_is_warned_of(self):
        """Someone widens ip_local_port_range (1024-65535, a common fix for
        running out of ports): the policy's server ports fall inside it, and
        scan says which until they are reserved."""
        policy = write_policy('version = 1;\nephemeral = "40000-40099";\ndefault_action = "refuse";\n'
                              'rules = ( { ports = "40005"; action = "allow"; },\n'
                              '          { ports = "40010"; action = "remap"; to = 7010; } );\n')
        self.addCleanup(os.unlink, policy)
        script = f"""
            "$PF" scan -c {policy} 2>&1 >/dev/null | tr -d '\\n'; echo .
            echo "1024 65535" > /proc/sys/net/ipv4/ip_local_port_range
            "$PF" scan -c {policy} 2>&1 >/dev/null | tr -d '\\n'; echo .
            echo "32768 60999" > /proc/sys/net/ipv4/ip_local_port_range
            "$PF" scan -c {policy} 2>&1 >/dev/null | tr -d '\\n'; echo .
            echo 40005 > /proc/sys/net/ipv4/ip_local_reserved_ports
            "$PF" scan -c {policy} 2>&1 >/dev/null | tr -d '\\n'; echo ."""
        first, widened, narrowed, reserved = self.in_netns(script)
        self.assertIn("not reserved: 40005:", first)
        self.assertIn("ip_local_port_range (1024-65535) and not reserved: 7010,40005:", widened)
        self.assertIn("ip_local_port_range (32768-60999) and not reserved: 40005:", narrowed)
        self.assertNotIn("not reserved", reserved)

    def test_client_on_an_allowed_port_outside_the_guarded_range(self):
        policy = write_policy(POLICY.replace("rules = (", 'rules = (\n  { ports = "7650"; action = "allow"; },'))
        self.addCleanup(os.unlink, policy)
        self.start([BUILD["portfence"], "squat", "-4", "7650"], ready="portfence: squat: holding")
        self.assertEqual(self.scan_until(policy, 7650)["kind"], "client-on-server-port")

    def test_every_owner_of_a_shared_socket(self):
        script = ("import os, socket, time\n"
                  "s = socket.socket(); s.bind(('127.0.0.1', 29024)); s.listen()\n"
                  "child = os.fork()\n"
                  "if child == 0:\n    time.sleep(30); os._exit(0)\n"
                  "print('ready', child, flush=True); time.sleep(30)\n")
        holder = self.start([sys.executable, "-c", script], ready="ready")
        child = int(holder.lines[-1].split()[1])
        self.addCleanup(lambda: os.kill(child, signal.SIGKILL))
        found = self.scan_until(self.policy, 29024)
        self.assertEqual(sorted(o["pid"] for o in found["owners"]), sorted([holder.proc.pid, child]))

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv")
    def test_unprivileged_scan_says_root_sees_owners(self):
        server = self.start([BUILD["probe"], "tcp4", "bind", "127.0.0.1", "29025", "listen", "ready", "wait"],
                            ready="ready")
        self.scan_until(self.policy, 29025)
        workdir = tempfile.mkdtemp(prefix="pf-unprivileged-")
        self.addCleanup(shutil.rmtree, workdir)
        copy, policy = shutil.copy(BUILD["portfence"], workdir), shutil.copy(self.policy, workdir)
        os.chmod(workdir, 0o755)
        os.chmod(policy, 0o644)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", copy, "scan",
                            "-c", policy, "--json"], capture_output=True, text=True, timeout=30)
        found = [f for f in json.loads(r.stdout) if f["port"] == 29025][0]
        self.assertEqual((found["pid"], found["owners"]), (0, []))
        self.assertEqual(r.stderr.count("the owners of other users' sockets are shown to root only"), 1)
        server.stop()

    def test_accepted_connections_are_not_clients(self):
        """A server on an allowed port with a connection: not a collision."""
        server = self.start([BUILD["probe"], "tcp4", "reuse", "bind", "127.0.0.1", "29050", "listen", "ready",
                             "accept", "wait"], ready="ready")
        with socket.create_connection(("127.0.0.1", 29050)):
            time.sleep(0.2)
            found = json.loads(portfence("scan", "-c", self.policy, "--json").stdout)
        self.assertEqual([f for f in found if f["port"] == 29050 and f["kind"] != "server-in-ephemeral"], [])
        server.stop()



class Export(ToolTest):
    def test_nothing_to_export_is_said(self):
        """The shipped policy's servers all sit outside ip_local_port_range:
        reserving them would protect nothing."""
        r = portfence("export", "sysctl", "-c", os.path.join(SOURCE, "config", "portfence.conf"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("net.ipv4", r.stdout)
        self.assertTrue(r.stdout.startswith("# portfence: nothing to export:"), r.stdout)
        self.assertIn("nothing to export", r.stderr)

    @unittest.skipUnless(NETNS, "needs root and unshare")
    def test_sysctl_exports_what_protects_and_applies(self):
        out = self.in_netns("""
            echo 29000 29999 > /proc/sys/net/ipv4/ip_local_port_range
            echo 29990 > /proc/sys/net/ipv4/ip_local_reserved_ports
            "$PF" export sysctl -c "$POLICY" > /tmp/pf-export-$$.conf
            cat /tmp/pf-export-$$.conf
            sysctl -q -p /tmp/pf-export-$$.conf; rm -f /tmp/pf-export-$$.conf
            cat /proc/sys/net/ipv4/ip_local_reserved_ports""".replace("$POLICY", self.policy))
        # Only the allowed server inside the range, beside what was reserved already.
        self.assertEqual(out[-2:], ["net.ipv4.ip_local_reserved_ports = 29050,29990", "29050,29990"])
        self.assertIn("per network namespace", out[0])

    @unittest.skipUnless(NETNS, "needs root and unshare")
    def test_reserving_ports_moves_no_target(self):
        policy = write_policy('version = 1;\nephemeral = "host";\ndefault_action = "remap";\n'
                              'rules = ( { ports = "45000"; action = "allow"; } );\n')
        self.addCleanup(os.unlink, policy)
        out = self.in_netns("""
            check() { "$PF" check -c "$POLICY" 50000 33000 | cut -d' ' -f4; }
            check
            echo 40000 > /proc/sys/net/ipv4/ip_local_reserved_ports; check
            "$PF" export sysctl -c "$POLICY" | sysctl -q -p -; cat /proc/sys/net/ipv4/ip_local_reserved_ports
            check""".replace("$POLICY", policy))
        before, unrelated, reserved, after = out[0:2], out[2:4], out[4], out[5:7]
        self.assertEqual(reserved, "40000,45000")
        self.assertEqual(unrelated, before)
        self.assertEqual(after, before)
        self.assertEqual(before, [str(50000 - 32768 + 1024), str(33000 - 32768 + 1024)])

    def test_systemd(self):
        policy = write_policy(POLICY.replace("rules = (", 'rules = (\n  { program = "x"; action = "allow"; },\n'
                                                         '  { ports = "29070"; action = "log"; },'))
        self.addCleanup(os.unlink, policy)
        r = portfence("export", "systemd", "-c", policy)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.splitlines()
        self.assertEqual(out[1:3], ["# enforced only by a systemd built with +BPF_FRAMEWORK (see 'systemctl "
                                    "--version')", "[Service]"])
        # Said on stderr as this host's systemd has it.
        version = subprocess.run(["/usr/bin/systemctl", "--version"], capture_output=True, text=True).stdout \
            if os.access("/usr/bin/systemctl", os.X_OK) else ""
        if "-BPF_FRAMEWORK" in version:
            self.assertIn("this host's systemd is built without BPF_FRAMEWORK", r.stderr)
        elif "+BPF_FRAMEWORK" not in version:
            self.assertIn("'systemctl --version' must show +BPF_FRAMEWORK", r.stderr)
        for proto in ("tcp", "udp"):
            self.assertIn(f"SocketBindDeny={proto}:29000-29099", out)
            self.assertIn(f"SocketBindAllow={proto}:29050", out)
            self.assertIn(f"SocketBindAllow={proto}:29070", out)
        self.assertIn(f"# rule 1 ({policy}:6): its family, address or program conditions cannot be "
                      "expressed: its ports are decided as if it never matched", out)
        self.assertIn(f"# rule 2 ({policy}:7): systemd does not log binds: its ports are allowed", out)
        self.assertIn(f"# rule 4 ({policy}:9): systemd cannot move a bind: its ports are denied instead", out)

    def test_systemd_list_limit(self):
        """systemd takes 128 entries per list: a policy needing more is an
        error, and nothing is printed (the output is appended to units)."""
        refused = ",\n".join(f'  {{ ports = "{29100 + 2 * i}"; action = "refuse"; }}' for i in range(130))
        policy = write_policy(POLICY.replace("rules = (\n", "rules = (\n" + refused + ",\n"))
        self.addCleanup(os.unlink, policy)
        r = portfence("export", "systemd", "-c", policy)
        self.assertEqual((r.returncode, r.stdout), (2, ""))
        self.assertIn("systemd takes at most 128 entries per list; this policy needs", r.stderr)

    def test_systemd_with_many_conditional_rules(self):
        """The export and check give one verdict, however many conditional
        rules precede it (8 and 9 once made export deny every port)."""
        for count in (8, 9):
            with self.subTest(count=count):
                conditional = "".join(f'  {{ program = "x{i}"; action = "refuse"; }},\n'
                                      for i in range(count))
                policy = write_policy(POLICY.replace("rules = (\n", "rules = (\n" + conditional))
                self.addCleanup(os.unlink, policy)
                check = portfence("check", "-c", policy, "--json", "8080", "29050", "29001")
                verdicts = {v["port"]: v["action"] for v in json.loads(check.stdout)}
                self.assertEqual(verdicts, {8080: "allow", 29050: "allow", 29001: "remap"})
                out = portfence("export", "systemd", "-c", policy).stdout.splitlines()
                for proto in ("tcp", "udp"):
                    self.assertIn(f"SocketBindDeny={proto}:29000-29099", out)
                    self.assertIn(f"SocketBindAllow={proto}:29050", out)
                    self.assertEqual([line for line in out if line.startswith(f"SocketBindDeny={proto}")],
                                     [f"SocketBindDeny={proto}:29000-29099"])

    def test_usage(self):
        self.assertEqual(portfence("export", "-c", self.policy).returncode, 2)
        self.assertEqual(portfence("export", "nftables", "-c", self.policy).returncode, 2)


LEARN_BASE = """version = 1;
# rules = ( a list in a comment is not the setting )
/* rules = ( nor is one in a block comment ) */
ephemeral = "27000-27999";
default_action = "refuse";
rules = (
  { ports = "8080"; action = "allow"; }
);
"""

# Binds three guarded ports (TCP, UDP, IPv6), one unguarded and one the kernel
# chooses, then waits for stdin (or reports and exits).
BINDER = """
import socket, sys
a = socket.socket(); a.bind(("127.0.0.1", 27001)); a.listen()
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("127.0.0.1", 27002))
c = socket.socket(socket.AF_INET6); c.bind(("::1", 27003)); c.listen()
d = socket.socket(); d.bind(("127.0.0.1", 6543)); d.listen()
e = socket.socket(); e.listen()
print("bound", a.getsockname()[1], b.getsockname()[1], c.getsockname()[1], d.getsockname()[1], flush=True)
if len(sys.argv) > 1:
    sys.stdin.readline()
"""


class Learn(ToolTest):
    POLICY = LEARN_BASE

    def learned_rules(self, text):
        return re.findall(r'\{ ports = "(\d+)"; proto = "(\w+)"; action = "remap"; to = (\d+); \}', text)

    def test_learn_and_rerun(self):
        out = tempfile.mktemp(prefix="pf-learned-", suffix=".conf")
        self.addCleanup(lambda: os.path.exists(out) and os.unlink(out))
        r = portfence("learn", "-c", self.policy, "-o", out, "--", sys.executable, "-c", BINDER)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("3 guarded ports moved by the proposal, 1 unguarded left alone, 1 chosen by "
                      "the kernel", r.stderr)
        with open(out) as f:
            text = f.read()
        rules = self.learned_rules(text)
        self.assertEqual(sorted((port, proto) for port, proto, _ in rules),
                         [("27001", "tcp"), ("27002", "udp"), ("27003", "tcp")])
        targets = [int(to) for _, _, to in rules]
        self.assertEqual(len(set(targets)), 3)                  # no collision between them
        self.assertIn(f"# learned: '{os.path.basename(sys.executable)}' bound ::1 27003/tcp 1 time", text)
        self.assertIn('{ ports = "8080"; action = "allow"; }', text)    # the base is kept
        self.assertEqual(portfence("check", "-c", out).returncode, 0)
        rerun = fenced(out, sys.executable, "-c", BINDER)
        self.assertEqual(rerun.returncode, 0, rerun.stderr)
        for (port, proto, to) in rules:
            self.assertIn(f":{port}/{proto}: remap -> {to}", rerun.stderr)
        self.assertNotIn("refuse", rerun.stderr)

    def test_rules_in_an_included_file_are_not_rewritten(self):
        """learn writes into the policy's own rules list; one in an @include'd
        file is said, and nothing is written."""
        d = tempfile.mkdtemp(prefix="pf-learn-")
        self.addCleanup(shutil.rmtree, d)
        with open(os.path.join(d, "rules.inc"), "w") as f:
            f.write('rules = ( { ports = "8080"; action = "allow"; } );\n')
        base = os.path.join(d, "base.conf")
        with open(base, "w") as f:
            f.write(LEARN_BASE.split("rules = (\n")[0] + '@include "rules.inc"\n')
        out = os.path.join(d, "out.conf")
        r = portfence("learn", "-c", base, "-o", out, "--", sys.executable, "-c", BINDER)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(f"portfence: learn: the rules of {base} are in an @include'd file", r.stderr)
        self.assertFalse(os.path.exists(out))

    def test_duration_ends_a_server(self):
        r = portfence("learn", "-c", self.policy, "--duration", "1", "--", sys.executable, "-c",
                      BINDER + "\nimport time; time.sleep(60)\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.learned_rules(r.stdout)), 3)

    @unittest.skipIf(cgroup_skip_reason(), cgroup_skip_reason())
    def test_cgroup_learn(self):
        """Any binary of a cgroup, learned through a fence that only logs:
        nothing is refused while learning, and the fence is gone after."""
        cgroup = Cgroup()
        self.addCleanup(cgroup.cleanup)
        out = tempfile.mktemp(prefix="pf-learned-", suffix=".conf")
        self.addCleanup(lambda: os.path.exists(out) and os.unlink(out))
        learner = self.start([BUILD["portfence"], "cgroup", "learn", "-c", self.policy, "--duration",
                              "3", "-o", out, cgroup.path])
        for _ in range(100):        # until the learning fence is in place
            if portfence("cgroup", "status", cgroup.path).returncode == 0:
                break
            time.sleep(0.05)
        r = cgroup.run(sys.executable, "-c", BINDER)
        self.assertEqual(r.stdout, "bound 27001 27002 27003 6543\n", r.stderr)
        _, err = learner.finish("")
        self.assertEqual(learner.proc.returncode, 0, err)
        with open(out) as f:
            rules = self.learned_rules(f.read())
        self.assertEqual(sorted((port, proto) for port, proto, _ in rules),
                         [("27001", "tcp"), ("27002", "udp"), ("27003", "tcp")])
        self.assertEqual(portfence("cgroup", "status", cgroup.path).returncode, 2)   # detached

    def test_usage(self):
        self.assertEqual(portfence("learn", "-c", self.policy).returncode, 2)
        self.assertEqual(portfence("learn", "--duration", "x", "--", "true").returncode, 2)


class ClientPorts(ToolTest):
    def test_client_takes_a_server_port(self):
        policy = write_policy('version = 1;\nephemeral = "29000-29099";\ndefault_action = "allow";\n'
                              'client_ports = "29080-29081";\n')
        self.addCleanup(os.unlink, policy)
        peer = self.start([BUILD["probe"], "tcp4", "bind", "127.0.0.1", "0", "listen", "sockname",
                           "ready", "wait"], ready="ready")
        peer_port = peer.lines[-2].split()[-1]
        client = probe("tcp4", "connect", "127.0.0.1", peer_port, "sockname", policy=policy)
        self.assertEqual(lines(client)[1:], ["connect 0 0", "sockname 0 0 127.0.0.1 29080"])
        # While such a client holds it, the server cannot start: the collision on purpose.
        holder = self.start([BUILD["portfence"], "run", "-c", policy, "--", BUILD["probe"], "tcp4",
                             "connect", "127.0.0.1", peer_port, "ready", "wait"], ready="ready")
        self.assertEqual(lines(probe("tcp4", "bind", "0.0.0.0", "29080"))[1], "bind -1 EADDRINUSE")
        holder.stop()


@unittest.skipIf(ASAN_RUNTIME, "the demo runs curl, which hangs with libasan preloaded")
@unittest.skipUnless(shutil.which("curl"), "needs curl")
class Demo(unittest.TestCase):
    def test_demo_behaves(self):
        r = subprocess.run([os.path.join(SOURCE, "scripts", "demo")], capture_output=True, text=True,
                           timeout=120, env=base_env({"PORTFENCE": BUILD["portfence"]}))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("The demo behaved as told.", r.stdout)
        self.assertIn("Address already in use", r.stdout)


if __name__ == "__main__":
    main({"demo": ["Demo"],
          "netns": ["Export.test_sysctl_exports_what_protects_and_applies",
                    "Export.test_reserving_ports_moves_no_target", "Scan.test_a_reserved_port_protects_its_server",
                    "Scan.test_a_widened_range_is_warned_of"],
          "cgroup": ["Learn.test_cgroup_learn"]})
