#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The portfence command run as a real process: exit codes, messages, --json."""
import json
import os
import re
import shlex
import shutil
import subprocess
import socket
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import main, ASAN_RUNTIME, BUILD, POLICIES, SOURCE, base_env, portfence as run, write_policy  # noqa: E402


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
        self.assertEqual(r.stderr, "portfence: check: bad port '80/sctp': expected PORT[-PORT][/tcp|/udp], PORT 0-65535\n")
        r = run("ranges", "--os", "beos")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "portfence: ranges: unknown os 'beos' (see 'portfence ranges')\n")
        r = run("suggest", "-n", "0")
        self.assertEqual(r.returncode, 2)

    def test_policy_from_stdin_and_empty_path(self):
        text = 'version = 1;\nephemeral = "30000-30010";\ndefault_action = "refuse";\n'
        r = run("check", "-c", "-", "30005", input=text)
        self.assertEqual((r.returncode, r.stdout), (0, "30005/tcp refuse EADDRINUSE (default_action for guarded ports)\n"))
        r = run("check", "-c", "-", input="version = 1;\nbogus = 1;\n")
        self.assertEqual((r.returncode, r.stderr), (2, "(stdin):2: unknown key 'bogus'\n"))
        r = run("check", "-c", "")
        self.assertEqual((r.returncode, r.stderr),
                         (2, "portfence: check: -c '': an empty policy path (an unset variable?)\n"))

    def test_check_a_range_of_ports(self):
        r = run("check", "-c", os.path.join(SOURCE, "config", "portfence.conf"), "--json", "40000-40002/udp")
        got = [(v["port"], v["proto"]) for v in json.loads(r.stdout)]
        self.assertEqual(got, [(40000, "udp"), (40001, "udp"), (40002, "udp")])
        self.assertEqual(run("check", "40002-40000").returncode, 2)

    def test_cgroup_says_when_it_was_not_built(self):
        r = run("cgroup", "status")
        if "cgroup enforcer: built" in run("--version").stdout:
            self.assertNotIn("built without BPF", r.stderr)
        else:
            self.assertEqual((r.returncode, r.stderr), (2, "portfence: cgroup: this portfence was built without "
                                                           "BPF support (meson -Dbpf=enabled)\n"))

    def test_option_errors_name_portfence_and_the_command(self):
        for args, message in ((("check", "-x"), "unknown option '-x'"),
                              (("check", "--bogus=1"), "unknown option '--bogus'"),
                              (("check", "-c"), "option '-c' needs an argument"),
                              (("scan", "--config"), "option '--config' needs an argument"),
                              (("ranges", "-n", "3"), "unknown option '-n'"),
                              (("squat", "-q", "24001"), "unknown option '-q'"),
                              (("cgroup", "status", "--frob"), "unknown option '--frob'")):
            if args[0] == "cgroup" and "cgroup enforcer: not built" in run("--version").stdout:
                continue
            with self.subTest(args=args):
                r = run(*args)
                self.assertEqual(r.returncode, 2)
                self.assertEqual(r.stderr.splitlines()[0], f"portfence: {' '.join(args[:2] if args[0] == 'cgroup' else args[:1])}: {message}")


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
        self.assertEqual(self.complete("portfence export s"), ["sysctl", "systemd", "systemd-dropin"])
        self.assertEqual(self.complete("portfence cgroup g"), ["guard"])
        self.assertEqual(self.complete("portfence o"), ["oci-hook"])
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

    def test_a_policy_that_moves_servers_says_who_cannot_follow(self):
        r = run("check", "-c", self.policy)     # rule 2 remaps
        self.assertIn("only by clients portfence runs or fences", r.stderr)
        refuse = write_policy('version = 1;\nephemeral = "40000-40009";\ndefault_action = "refuse";\n')
        self.addCleanup(os.unlink, refuse)
        r = run("check", "-c", refuse)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("only by clients portfence runs or fences", r.stderr)

    def test_for_landlock_shows_eacces_where_the_shim_cannot_see(self):
        r = run("check", "-c", self.policy, "--for", "landlock", "40000", "40001/udp", "8080")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), [
            f"40000/tcp refuse EACCES (rule 2, {self.policy}:6)",                # remapped: no remap there
            "40001/udp refuse EADDRINUSE (default_action for guarded ports)",   # UDP: not covered
            f"8080/tcp allow (rule 1, {self.policy}:5)",
        ])
        self.assertIn("Landlock knows no remap", r.stderr)
        r = run("check", "-c", self.policy, "--for", "seccomp")
        self.assertEqual((r.returncode, r.stderr),
                         (2, "portfence: check: unknown enforcer 'seccomp' (cgroup, shim or landlock)\n"))

    def test_fail_on_guarded_names_each_guarded_port(self):
        r = run("check", "-c", self.policy, "--fail-on-guarded", "8080", "40000", "41000/udp", "50000")
        self.assertEqual(r.returncode, 1)
        self.assertEqual([line for line in r.stderr.splitlines() if "is guarded" in line], [
            "portfence: check: 40000/tcp is guarded: inside the ephemeral range of this policy, "
            "a client may be handed it",
            "portfence: check: 41000/udp is guarded: inside the ephemeral range of this policy, "
            "a client may be handed it"])
        r = run("check", "-c", self.policy, "--fail-on-guarded", "8080", "50000")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("check", "-c", self.policy, "--fail-on-guarded")
        self.assertEqual((r.returncode, r.stderr), (2, "portfence: check: --fail-on-guarded: no ports given\n"))

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


def usages(help_text):
    """The usage lines of a --help: (the command's words, its options)."""
    text = help_text[:help_text.index("\n\n")] if "\n\n" in help_text else help_text
    found = []
    for usage in re.split(r"(?:usage:|\n) +portfence ", " " + text)[1:]:
        usage = " ".join(usage.split())
        words = re.match(r"[a-z][\w-]*(?: [a-z][\w-]*)?", usage).group(0).split()
        if words[0] not in ("cgroup", "export"):
            words = words[:1]
        found.append((words, set(re.findall(r"(?<![\w-])(--[a-z][\w-]*|-[A-Za-z0-9](?![\w-]))", usage))))
    return found


class ManPage(unittest.TestCase):
    """portfence(1) is the reference: every command, subcommand and option that
    --help prints is on the command's line of the page."""

    def test_every_option_of_every_command_is_documented(self):
        with open(os.path.join(SOURCE, "docs", "portfence.1.scd")) as f:
            page = [line for line in f.read().splitlines() if line.startswith("*")]
        commands = re.findall(r"\n  ([a-z][\w-]*) ", run("--help").stdout)
        self.assertIn("cgroup", commands)
        checked = 0
        for command in commands:
            r = run(command, "--help")
            if "built without BPF" in r.stderr:
                continue
            for words, options in usages(r.stdout):
                with self.subTest(command=" ".join(words)):
                    lines = [line for line in page
                             if re.match(r"\*" + re.escape(words[0]) + r"\b", line) and
                             all(f"*{w}*" in line or f" {w}*" in line.split(" [")[0] or
                                 f"*{words[0]} {w}*" in line for w in words[1:])]
                    self.assertTrue(lines, f"no line of portfence(1) for '{' '.join(words)}'")
                    missing = sorted(o for o in options if not any(f"*{o}*" in line for line in lines))
                    self.assertEqual(missing, [], f"'{' '.join(words)}' options not in portfence(1)")
                    checked += 1
        built = "cgroup enforcer: built" in run("--version").stdout
        self.assertGreater(checked, 15 if built else 8)     # without BPF: no cgroup, no oci-hook

    def test_every_policy_key_is_documented(self):
        """portfence.conf(5): every key the loader knows (its lists in
        policy/load.c: the top level, log, rules)."""
        with open(os.path.join(SOURCE, "policy", "load.c")) as f:
            source = f.read()
        lists = re.findall(r"(?:keys\[\]|rule_keys\[KEY_COUNT\]) = \{(.*?)\}", source, re.S)
        keys = {k for body in lists for k in re.findall(r'"([a-z_]+)"', body)}
        self.assertGreater(len(keys), 15)
        with open(os.path.join(SOURCE, "docs", "portfence.conf.5.scd")) as f:
            page = f.read()
        self.assertEqual(sorted(k for k in keys if f"*{k}*" not in page), [])

    def test_the_check_finds_what_is_missing(self):
        """The parser the test above relies on sees every option of a usage."""
        self.assertEqual(usages("usage: portfence cgroup attach [-c FILE] [-v] [--whole-host] PATH\n"
                                "       portfence cgroup prune\n\n  attach ..."),
                         [(["cgroup", "attach"], {"-c", "-v", "--whole-host"}), (["cgroup", "prune"], set())])


@unittest.skipUnless(os.geteuid() == 0, "needs root (the cgroup example)")
@unittest.skipIf(ASAN_RUNTIME, "the examples run curl, which hangs with libasan preloaded")
class ReadmeExamples(unittest.TestCase):
    """The README's examples run as written, in order, from a scratch
    directory, and say what the README says they show."""

    def test_examples_run(self):
        with open(os.path.join(SOURCE, "README.md")) as f:
            blocks = re.findall(r"\n```sh\n(.*?)```\n", f.read(), re.S)
        self.assertEqual(len(blocks), 4)
        env = base_env({"PATH": os.path.dirname(BUILD["portfence"]) + ":" + os.environ["PATH"]})
        outputs = []
        with tempfile.TemporaryDirectory() as scratch:
            for block in blocks:
                r = subprocess.run(["bash", "-euc", block], cwd=scratch, env=env, capture_output=True,
                                   text=True, timeout=120)
                self.assertEqual(r.returncode, 0, block + r.stdout + r.stderr)
                outputs.append(r.stdout)
        self.assertIn("40000/tcp remap -> 7040", outputs[0])
        self.assertEqual(outputs[1], "HTTP 200\n")
        self.assertIn("OSError: [Errno 98] Address already in use", outputs[2])
        self.assertRegex(outputs[2], r"refuse 1 remap 0")
        self.assertIn("OSError: [Errno 98] Address already in use", outputs[3])
        self.assertRegex(outputs[3], r"(?m)^\d+\n\d+\n\d+\n")   # suggest -n 3


class ReadmeAndCollisions(unittest.TestCase):
    def test_readme_check_example_matches_its_policy(self):
        with open(os.path.join(SOURCE, "docs", "guide.md")) as f:
            readme = f.read()
        block = readme[readme.index("    version = 1;                          # required"):]
        policy = write_policy("\n".join(line[4:] for line in block[:block.index("\n\n")].splitlines()) + "\n")
        self.addCleanup(os.unlink, policy)
        example = readme[readme.index("      $ portfence check "):]
        example = [line[6:] for line in example[:example.index("\n\n")].splitlines()]
        r = run("check", "-c", policy, *example[0].split()[3:])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.replace(policy, "/etc/portfence.conf").splitlines(),
                         [line for line in example[1:] if not line.startswith("portfence:")])
        self.assertTrue(r.stderr.startswith(example[-1].rstrip(".")), r.stderr)

    def test_colliding_targets_are_errors_with_both_places(self):
        base = 'version = 1;\nephemeral = "40000-49999";\nremap_pool = "7000-7099";\nrules = (\n'
        for rules, message in (
                ('{ ports = "40000-40009"; action = "remap"; to = 8000; },\n'
                 '{ ports = "41000-41009"; action = "remap"; to = 8005; }',
                 "6: rule 2: remap targets 8005-8014 overlap those of rule 1 ({policy}:5): two servers "
                 "would be sent to one port"),
                ('{ ports = "8003"; action = "allow"; },\n'
                 '{ ports = "40000-40009"; action = "remap"; to = 8000; }',
                 "6: rule 2: remap targets 8000-8009 take ports rule 1 ({policy}:5) allows to servers"),
                ('{ ports = "40000-40009"; action = "remap"; to = 7090; },\n'
                 '{ ports = "41000"; action = "remap"; }',
                 "5: rule 1: remap targets 7090-7099 are in the remap pool, where other servers are moved")):
            with self.subTest(message=message):
                policy = write_policy(base + rules + "\n);\n")
                self.addCleanup(os.unlink, policy)
                r = run("check", "-c", policy)
                self.assertEqual((r.returncode, r.stderr), (2, f"{policy}:" + message.format(policy=policy) + "\n"))
        # Different protocols never collide.
        policy = write_policy(base + '{ ports = "40000-40009"; proto = "tcp"; action = "remap"; to = 8000; },\n'
                                     '{ ports = "41000-41009"; proto = "udp"; action = "remap"; to = 8000; }\n);\n')
        self.addCleanup(os.unlink, policy)
        self.assertEqual(run("check", "-c", policy).returncode, 0)

    def test_what_each_enforcer_would_refuse(self):
        rules = [f'{{ ports = "{20000 + i}"; action = "allow"; }}' for i in range(1024)]
        rules.append('{ ports = "30000"; family = "ipv6"; action = "allow"; }')
        policy = write_policy('version = 1;\nephemeral = "20000-39999";\nrules = (\n' + ",\n".join(rules) + "\n);\n")
        self.addCleanup(os.unlink, policy)
        limit = "rule 1025 has conditions, but the kernel checks those of the first 1024 rules only"
        built = "cgroup enforcer: built" in run("--version").stdout
        r = run("check", "-c", policy)
        self.assertEqual(r.returncode, 0)
        if built:
            self.assertIn(f"note: 'portfence cgroup attach' would refuse this policy (the shim takes it): {limit}",
                          r.stderr)
        r = run("check", "--for", "cgroup", "-c", policy)
        self.assertEqual((r.returncode, r.stderr), (2, "portfence: check: the cgroup enforcer would refuse this "
                                                       "policy: " + (limit if built else "this portfence was built "
                                                                     "without the cgroup enforcer") + "\n"))
        r = run("check", "--for", "shim", "-c", policy)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(run("check", "--for", "kernel").returncode, 2)

    def test_syslog_without_a_socket_is_warned(self):
        policy = write_policy('version = 1;\nlog = { to = "syslog"; };\n')
        self.addCleanup(os.unlink, policy)
        r = run("check", "-c", policy)
        warned = "warning: log to syslog, but /dev/log is no socket here" in r.stderr
        import stat
        self.assertEqual(warned, not (os.path.exists("/dev/log") and stat.S_ISSOCK(os.stat("/dev/log").st_mode)))

    def test_pool_wrap_around_is_explained(self):
        policy = write_policy('version = 1;\nephemeral = "40000-40099";\ndefault_action = "remap";\n'
                              'remap_pool = "7000-7009";\n')
        self.addCleanup(os.unlink, policy)
        r = run("check", "-c", policy, "40000", "40010")
        self.assertEqual(r.stdout.count("remap -> 7000"), 2)
        self.assertIn("100 ports are moved into it and up to 10 go to one pool port (40000 and 40010 both "
                      "go to 7000/tcp)", r.stderr)


class Ranges(unittest.TestCase):
    def test_table(self):
        r = run("ranges", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = {row["name"]: row for row in json.loads(r.stdout)}
        self.assertEqual(rows["ftx-3.3"]["dynamic"], ["1024-6123"])
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()
        self.assertTrue(rows["host"]["dynamic"][0].startswith(lo))
        # A UDP-only row carries its own protocol's ranges; every range is a list.
        self.assertEqual((rows["stcp-udp-pre-2119"]["ranges_for"], rows["stcp-udp-pre-2119"]["dynamic"],
                          rows["stcp-udp-pre-2119"]["registered"]), ("udp", ["1024-65535"], []))
        self.assertEqual(rows["kubernetes-nodeport"]["servers"], ["30000-32767"])
        self.assertEqual(rows["linux"]["dynamic"], ["32768-60999"])
        for row in rows.values():
            self.assertTrue(row["source"], row["name"])
        r = run("ranges")
        self.assertIn("stcp-udp-pre-2119", r.stdout)
        self.assertIn("  stcp-udp-pre-2119: the seed article's table", r.stdout)
        self.assertIn("counted in both", r.stdout)

    def test_table_of_one_protocol(self):
        rows = json.loads(run("ranges", "--proto", "udp", "--json").stdout)
        names = [row["name"] for row in rows]
        self.assertIn("stcp-udp", names)
        self.assertNotIn("stcp", names)
        self.assertEqual({row["ranges_for"] for row in rows}, {"udp"})

    def test_seed_tcp_stacks(self):
        r = run("ranges", "--os", "seed", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        self.assertEqual(got["proto"], "tcp")
        self.assertEqual(got["safe"], ["6124-9999"])
        self.assertEqual(got["dynamic"], ["1024-6123", "10000-65535"])
        self.assertEqual(len(got["os"]), 10)       # the seed's TCP rows

    def test_all_stacks_of_today_leave_nothing(self):
        got = json.loads(run("ranges", "--os", "all", "--json").stdout)
        self.assertIn("openbsd", got["os"])
        self.assertEqual(got["safe"], [])

    def test_udp_stacks(self):
        r = run("ranges", "--os", "seed", "--proto", "udp", "--json")
        self.assertEqual(json.loads(r.stdout)["safe"], [])
        r = run("ranges", "--os", "iana,linux-2.4")
        self.assertEqual(r.stdout, "os: iana,linux-2.4\nproto: tcp\n"
                                   "dynamic: 32768-65535\nsafe: 1024-32767\n")

    def test_well_known_never_safe_and_server_ranges_avoided(self):
        got = json.loads(run("ranges", "--os", "kubernetes-nodeport,linux", "--json").stdout)
        self.assertEqual(got["safe"], ["1024-29999", "61000-65535"])

    def test_a_profile_without_the_protocol_is_an_error(self):
        for args, message in ((("ranges", "--os", "stcp-udp", "--proto", "tcp"),
                               "profile 'stcp-udp' describes udp only; for tcp use stcp-pre-1098, stcp"),
                              (("suggest", "--os", "stcp", "--proto", "udp"),
                               "profile 'stcp' describes tcp only; for udp use stcp-udp-pre-2119, stcp-udp")):
            with self.subTest(args=args):
                r = run(*args)
                self.assertEqual((r.returncode, r.stdout, r.stderr), (2, "", f"portfence: {args[0]}: {message}\n"))


class Suggest(unittest.TestCase):
    def test_suggest_safe_free_unlisted(self):
        r = run("suggest", "--os", "seed", "-n", "5", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        ports = json.loads(r.stdout)
        self.assertEqual(len(ports), 5)
        listed = service_ports("tcp")
        for port in ports:
            self.assertTrue(6124 <= port <= 9999)
            self.assertNotIn(port, listed)

    def test_skips_bound_port(self):
        first = int(run("suggest", "--os", "seed").stdout)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", first))
            s.listen()
            second = int(run("suggest", "--os", "seed").stdout)
        self.assertNotEqual(first, second)
        self.assertGreater(second, first)

    def test_too_few(self):
        r = run("suggest", "--os", "seed", "--proto", "udp", "-n", "1")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "portfence: suggest: only 0 safe free ports, 1 asked\n")

    def test_key_is_stable_and_spreads_jobs(self):
        """Parallel CI jobs each asking with their own name get their own
        port, and the same job gets the same port every time."""
        safe = json.loads(run("ranges", "--os", "seed", "--json").stdout)["safe"]
        lo, hi = map(int, safe[0].split("-"))
        got = {}
        for job in ("job-1", "job-2", "job-3", "job-4", "job-5"):
            first = run("suggest", "--os", "seed", "--key", job)
            self.assertEqual(first.returncode, 0, first.stderr)
            self.assertEqual(run("suggest", "--os", "seed", "--key", job).stdout, first.stdout)
            got[job] = int(first.stdout)
            self.assertTrue(lo <= got[job] <= hi)
        self.assertGreater(len(set(got.values())), 3)
        # -n N from the key's place is N distinct ports, wrapping round the set.
        many = json.loads(run("suggest", "--os", "seed", "--key", "job-1", "-n", "20", "--json").stdout)
        self.assertEqual((len(many), len(set(many)), many[0]), (20, 20, got["job-1"]))

    def test_random(self):
        picks = {int(run("suggest", "--os", "seed", "--random").stdout) for _ in range(5)}
        self.assertGreater(len(picks), 1)
        r = run("suggest", "--key", "a", "--random")
        self.assertEqual((r.returncode, r.stderr),
                         (2, "portfence: suggest: --key and --random contradict each other: choose one\n"))


if __name__ == "__main__":
    main({"readme": ["ReadmeExamples"]})
