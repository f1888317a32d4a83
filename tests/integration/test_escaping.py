#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every output that carries text a program controls (its name, a cgroup's
path) stays valid and gives the bytes back: each byte 0x01-0xff through the
shim's JSON and text logs, 'scan --json', 'cgroup events --json' and
'cgroup status --json'. JSON strings read as Latin-1 return the bytes."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import (main, BUILD, TIMEOUT, Cgroup, PolicyTest, base_env, cgroup_skip_reason,  # noqa: E402
                    portfence, write_policy)


EVERY_BYTE = bytes(b for b in range(1, 256) if b != ord("/"))
# The kernel's comm keeps 15 bytes: every byte, 15 at a time.
COMM_CHUNKS = [EVERY_BYTE[i:i + 15] for i in range(0, len(EVERY_BYTE), 15)]
HOSTILE = b'evil"}\n{"x\\\x1b[0m\xff'

POLICY = """version = 1;
ephemeral = "26000-26999";
default_action = "refuse";
log = { format = "%s"; };
"""

# Sets its comm to each name given in hex, binds a guarded (refused) port
# after each, then, with --listen, keeps one listener under the last name.
RENAMER = """
import ctypes, socket, sys
libc = ctypes.CDLL(None)
listen = sys.argv[1] == "--listen"
for name in sys.argv[2:]:
    libc.prctl(15, ctypes.c_char_p(bytes.fromhex(name)), 0, 0, 0)   # PR_SET_NAME
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 26001))
    except OSError:
        pass
    if listen:
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
        print("ready", s.getsockname()[1], flush=True); sys.stdin.readline()
"""

def latin1(text):
    return text.encode("latin-1")

class ShimLogs(PolicyTest):
    def run_named(self, fmt, name):
        """pf-probe run with argv[0] = name, under the shim: its log lines."""
        link = os.path.join(os.path.dirname(BUILD["probe"]), "pf-probe")
        policy = write_policy(POLICY % fmt)
        self.addCleanup(os.unlink, policy)
        r = subprocess.run([BUILD["portfence"], "run", "-c", policy, "--", sys.executable, "-c",
                            "import os, sys; os.execv(sys.argv[1], [bytes.fromhex(sys.argv[2])] + "
                            "sys.argv[3:])", link, name.hex(), "tcp4", "bind", "127.0.0.1", "26002"],
                           capture_output=True, env=base_env(), timeout=TIMEOUT)
        return r.stderr.splitlines()

    def test_json_log_every_byte(self):
        lines = self.run_named("json", EVERY_BYTE)
        self.assertEqual(len(lines), 1, lines)
        event = json.loads(lines[0])
        self.assertEqual(latin1(event["program"]), EVERY_BYTE)
        self.assertEqual((event["port"], event["action"], event["rule"]), (26002, "refuse", None))

    def test_text_log_stays_one_line(self):
        lines = self.run_named("text", HOSTILE)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(b'evil"}\\x0a{"x\\x5c\\x1b[0m\xff: bind 127.0.0.1:26002/tcp: refuse', lines[0])

class Scan(PolicyTest):
    POLICY = POLICY % "text"

    def test_scan_json_every_byte(self):
        names = [chunk.hex() for chunk in COMM_CHUNKS]
        for name in names:
            with self.subTest(name=name):
                # A listener on a port of the guarded range, under a hostile comm.
                proc = self.start([sys.executable, "-c", RENAMER, "--listen", name], ready="ready")
                port = int(proc.lines[-1].split()[1])
                policy = write_policy(f'version = 1;\nephemeral = "{port}";\n')
                self.addCleanup(os.unlink, policy)
                r = portfence("scan", "-c", policy, "--json")
                found = [f for f in json.loads(r.stdout) if f["port"] == port]
                if os.geteuid() == 0:
                    self.assertEqual([latin1(f["program"]) for f in found], [bytes.fromhex(name)])
                proc.stop()

@unittest.skipIf(cgroup_skip_reason(), cgroup_skip_reason())
class Cgroups(PolicyTest):
    POLICY = POLICY % "text"

    def test_events_json_every_byte(self):
        cgroup = Cgroup()
        self.addCleanup(cgroup.cleanup)
        self.assertEqual(cgroup.attach(self.policy).returncode, 0)
        events = subprocess.Popen([BUILD["portfence"], "cgroup", "events", "--json", "--count",
                                   str(len(COMM_CHUNKS)), cgroup.path], stdout=subprocess.PIPE,
                                  env=base_env())
        self.addCleanup(lambda: events.poll() is None and events.kill())
        for _ in range(100):    # the reader is ready once it has drained what came before
            probe = cgroup.run(sys.executable, "-c", RENAMER, "--bind", COMM_CHUNKS[0].hex())
            self.assertEqual(probe.returncode, 0, probe.stderr)
            out = events.stdout.readline()
            if out:
                break
        got = [latin1(json.loads(out)["program"])]
        cgroup.run(sys.executable, "-c", RENAMER, "--bind", *[c.hex() for c in COMM_CHUNKS[1:]])
        out, _ = events.communicate(timeout=TIMEOUT)
        got += [latin1(json.loads(line)["program"]) for line in out.splitlines()]
        self.assertEqual(got, COMM_CHUNKS)

    def test_status_json_hostile_path(self):
        cgroup = Cgroup()
        self.addCleanup(cgroup.cleanup)
        hostile = os.path.join(cgroup.path, os.fsdecode(b'pf-test-"\\\t\x7f\xff x'))
        os.mkdir(hostile)
        self.addCleanup(os.rmdir, hostile)
        r = subprocess.run([BUILD["portfence"], "cgroup", "attach", "-c", self.policy, hostile],
                           capture_output=True, env=base_env(), timeout=TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(subprocess.run, [BUILD["portfence"], "cgroup", "detach", hostile],
                        capture_output=True, timeout=TIMEOUT)
        r = subprocess.run([BUILD["portfence"], "cgroup", "status", "--json", hostile],
                           capture_output=True, env=base_env(), timeout=TIMEOUT)
        status = json.loads(r.stdout)
        self.assertEqual(latin1(status[0]["cgroup"]), os.fsencode(hostile))
        text = subprocess.run([BUILD["portfence"], "cgroup", "status", hostile], capture_output=True,
                              env=base_env(), timeout=TIMEOUT).stdout
        self.assertEqual(len(text.splitlines()), 1)
        self.assertIn(b'pf-test-"\\x5c\\x09\\x7f\xff x', text)

if __name__ == "__main__":
    main({"cgroup": ["Cgroups"]})
