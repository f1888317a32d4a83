#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The portfence command run as a real process: exit codes, messages, --json."""
import json
import os
import shlex
import shutil
import subprocess
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import main, BUILD, POLICIES, SOURCE, portfence as run, write_policy  # noqa: E402


def service_ports(proto):
    ports = set()
    try:
        with open("/etc/services") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and fields[1].endswith("/" + proto):
                    ports.add(int(fields[1].split("/")[0]))
    except FileNotFoundError:
        pass
    return ports


POLICY = """version = 1;
ephemeral = "40000-49999";
remap_pool = "7000-7099";
rules = (
  { ports = "8080"; action = "allow"; },
  { ports = "40000-40009"; proto = "tcp"; action = "remap"; to = 7200; }
);
"""


class Basics(unittest.TestCase):
    def test_version_and_help(self):
        for flag in ("--version", "-V"):
            r = run(flag)
            self.assertEqual(r.returncode, 0)
            self.assertRegex(r.stdout, r"^portfence \d+\.\d+\.\d+ \(cgroup enforcer: (not )?built\)\n$")
        for cmd in ("check", "ranges", "suggest", "run", "cgroup", "squat", "scan", "export",
                    "cgroup attach", "cgroup reload", "cgroup detach", "cgroup status",
                    "cgroup events", "cgroup root", "export sysctl", "export systemd"):
            with self.subTest(cmd=cmd):
                r = run(*cmd.split(), "--help")
                if "built without BPF" in r.stderr:
                    continue
                self.assertEqual((r.returncode, r.stderr), (0, ""), cmd)
                self.assertIn("usage: portfence " + cmd.split()[0], r.stdout)
                self.assertEqual(run("help", cmd.split()[0]).stdout.splitlines()[0],
                                 run(cmd.split()[0], "--help").stdout.splitlines()[0])
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        for cmd in ("check", "ranges", "suggest", "run", "cgroup", "squat", "scan", "export"):
            self.assertRegex(r.stdout, rf"\n  {cmd} +\S")

    def test_usage_errors_exit_2(self):
        r = run()
        self.assertEqual(r.returncode, 2)
        r = run("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "portfence: unknown command 'frobnicate' (see 'portfence --help')\n")
        r = run("check", "--bogus")
        self.assertEqual(r.returncode, 2)
        r = run("check", "-c", os.path.join(SOURCE, "config", "portfence.conf"), "80/sctp")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "portfence: check: bad port '80/sctp': expected PORT[/tcp|/udp], PORT 0-65535\n")
        r = run("ranges", "--os", "windows")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "portfence: ranges: unknown os 'windows' (see 'portfence ranges')\n")
        r = run("suggest", "-n", "0")
        self.assertEqual(r.returncode, 2)


class Shipped(unittest.TestCase):
    """What an installed portfence carries beside its programs."""

    def test_man_pages_render_without_warnings(self):
        man_dir = os.environ.get("PF_MAN_DIR", "")
        if not man_dir or not shutil.which("man"):
            self.skipTest("needs scdoc at build time and man")
        for page, words in (("portfence.1", ("cgroup status", "learn", "Exit status")),
                            ("portfence.conf.5", ("default_action", "redirect_connect", "ERRORS"))):
            with self.subTest(page=page):
                r = subprocess.run(["man", "--warnings", "-l", os.path.join(man_dir, page)],
                                   capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80"))
                self.assertEqual((r.returncode, r.stderr), (0, ""))
                for word in words:
                    self.assertIn(word, r.stdout)

    def complete(self, line):
        """What bash completion offers for the last word of line."""
        script = ("source /usr/share/bash-completion/bash_completion; "
                  f"source {os.path.join(SOURCE, 'completions', 'portfence')}; "
                  f"PATH={os.path.dirname(BUILD['portfence'])}:$PATH; "
                  f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}; "
                  f"read -ra COMP_WORDS <<< {shlex.quote(line)}; "
                  + ("COMP_WORDS+=(''); " if line.endswith(" ") else "")
                  + "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _portfence; printf '%s\\n' \"${COMPREPLY[@]}\"")
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.stderr, "")
        return sorted(r.stdout.split())

    def test_bash_completion(self):
        if not os.path.exists("/usr/share/bash-completion/bash_completion"):
            self.skipTest("needs bash-completion")
        self.assertEqual(self.complete("portfence c"), ["cgroup", "check"])
        self.assertEqual(self.complete("portfence cgroup st"), ["status"])
        self.assertIn("--prometheus", self.complete("portfence cgroup status --"))
        self.assertIn("stcp-udp-pre-2119", self.complete("portfence ranges --os s"))
        self.assertEqual(self.complete("portfence export s"), ["sysctl", "systemd"])
        self.assertEqual(self.complete("portfence ranges --proto u"), ["udp"])
        self.assertEqual(self.complete("portfence run -- "), [])      # the command's own words


class Check(unittest.TestCase):
    def setUp(self):
        self.policy = write_policy(POLICY)

    def tearDown(self):
        os.unlink(self.policy)

    def test_valid_policy(self):
        r = run("check", "-c", self.policy)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("valid, 2 rules", r.stdout)
        self.assertIn("guarded tcp: 40000-49999", r.stdout)

    def test_verdict_lines(self):
        r = run("check", "-c", self.policy, "40000", "40001/udp", "8080", "0", "50000/udp")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), [
            f"40000/tcp remap -> 7200 (rule 2, {self.policy}:6)",
            "40001/udp refuse EADDRINUSE (default_action for guarded ports)",
            f"8080/tcp allow (rule 1, {self.policy}:5)",
            "0/tcp allow (port 0: the kernel chooses)",
            "50000/udp allow (not guarded)",
        ])

    def test_json(self):
        r = run("check", "-c", self.policy, "--json", "40005/tcp", "41000/udp", "9999")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        self.assertEqual(got[0], {"port": 40005, "proto": "tcp", "action": "remap", "target": 7205,
                                  "errno": None, "rule": 2, "reason": f"rule 2, {self.policy}:6"})
        self.assertEqual(got[1]["action"], "refuse")
        self.assertIsNone(got[1]["rule"])
        self.assertEqual(got[1]["errno"], "EADDRINUSE")
        self.assertIsNone(got[1]["target"])
        self.assertEqual(got[2]["reason"], "not guarded")
        r = run("check", "-c", self.policy, "--json")
        self.assertEqual(json.loads(r.stdout), [])

    def test_kernel_glob_notes(self):
        policy = write_policy(POLICY.replace("rules = (", 'rules = (\n  { program = "*sql*"; action = "allow"; },'))
        try:
            r = run("check", "-c", policy)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"portfence: check: note: rule 1 ({policy}:5), program '*sql*': the cgroup "
                          "programs match the comm against HEAD or HEAD*TAIL", r.stderr)
        finally:
            os.unlink(policy)

    def test_address_and_program(self):
        policy = write_policy(POLICY.replace("rules = (", '''rules = (
  { ports = "41000"; address = "::1"; action = "allow"; },
  { ports = "41001"; program = "redis-*"; action = "allow"; },'''))
        self.addCleanup(os.unlink, policy)
        for args, action in (((), "refuse"), (("--address", "::1"), "allow"),
                             (("--address", "127.0.0.1"), "refuse")):
            with self.subTest(args=args):
                r = run("check", "-c", policy, "--json", *args, "41000")
                self.assertEqual(json.loads(r.stdout)[0]["action"], action, r.stderr)
        for args, action in (((), "refuse"), (("--program", "redis-server"), "allow"),
                             (("--program", "nginx"), "refuse")):
            with self.subTest(args=args):
                r = run("check", "-c", policy, "--json", *args, "41001")
                self.assertEqual(json.loads(r.stdout)[0]["action"], action, r.stderr)
        r = run("check", "-c", policy, "--address", "not-an-address", "41000")
        self.assertEqual((r.returncode, r.stderr), (2, "portfence: check: bad address 'not-an-address'\n"))

    def test_env_policy(self):
        r = run("check", "41000", env={"PORTFENCE_CONFIG": self.policy})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "41000/tcp refuse EADDRINUSE (default_action for guarded ports)\n")

    def test_broken_policy(self):
        path = os.path.join(POLICIES, "many-errors.conf")
        r = run("check", "-c", path, "40000")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 4)
        for line, number in zip(lines, (3, 4, 6, 7)):
            self.assertTrue(line.startswith(f"{path}:{number}: "), line)

    def test_missing_policy(self):
        r = run("check", "-c", "/nonexistent/p.conf")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "portfence: check: cannot read '/nonexistent/p.conf': No such file or directory\n")

    def test_shipped_policy_is_valid(self):
        for root, _, files in os.walk(os.path.join(SOURCE, "config")):
            for name in files:
                if name.endswith(".conf"):
                    path = os.path.join(root, name)
                    r = run("check", "-c", path)
                    self.assertEqual(r.returncode, 0, f"{path}: {r.stderr}")


class Ranges(unittest.TestCase):
    def test_table(self):
        r = run("ranges", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = {row["name"]: row for row in json.loads(r.stdout)}
        self.assertEqual(rows["ftx-3.3"]["dynamic"], ["1024-6123"])
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()
        self.assertTrue(rows["host"]["dynamic"][0].startswith(lo))
        r = run("ranges")
        self.assertIn("stcp-udp-pre-2119", r.stdout)

    def test_all_tcp_stacks(self):
        r = run("ranges", "--os", "all", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        self.assertEqual(got["proto"], "tcp")
        self.assertEqual(got["safe"], ["6124-9999"])
        self.assertEqual(got["dynamic"], ["1024-6123", "10000-65535"])
        self.assertEqual(len(got["os"]), 12)

    def test_all_udp_stacks(self):
        r = run("ranges", "--os", "all", "--proto", "udp", "--json")
        self.assertEqual(json.loads(r.stdout)["safe"], [])
        r = run("ranges", "--os", "iana,linux-2.4")
        self.assertEqual(r.stdout, "os: iana,linux-2.4\nproto: tcp\n"
                                   "dynamic: 32768-65535\nsafe: 1024-32767\n")


class Suggest(unittest.TestCase):
    def test_suggest_safe_free_unlisted(self):
        r = run("suggest", "--os", "all", "-n", "5", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        ports = json.loads(r.stdout)
        self.assertEqual(len(ports), 5)
        listed = service_ports("tcp")
        for port in ports:
            self.assertTrue(6124 <= port <= 9999)
            self.assertNotIn(port, listed)

    def test_skips_bound_port(self):
        first = int(run("suggest", "--os", "all").stdout)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", first))
            s.listen()
            second = int(run("suggest", "--os", "all").stdout)
        self.assertNotEqual(first, second)
        self.assertGreater(second, first)

    def test_too_few(self):
        r = run("suggest", "--os", "all", "--proto", "udp", "-n", "1")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "portfence: suggest: only 0 safe free ports, 1 asked\n")


if __name__ == "__main__":
    main()
