#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Three-way parity: random valid policies and random binds, each decided by
'portfence check --json', by the shim and by a fenced cgroup, which must all
agree; then, per policy, a server bound at a remapped port and connects to
every port: only the one a server was really moved from follows it. Bounded
(PF_PARITY_POLICIES x PF_PARITY_QUERIES: 6 x 25 in the quick suite, 48 x 50 in
the slow one); raise both for a longer run. The seed is printed: PF_PARITY_SEED repeats a run."""
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import (main, scale, BUILD, Cgroup, PolicyTest, base_env, cgroup_mount, cgroup_skip_reason,  # noqa: E402
                    fenced, lines, portfence, run_steers, write_policy)

SEED = int(os.environ.get("PF_PARITY_SEED", str(int(time.time()))))
POLICIES = int(os.environ.get("PF_PARITY_POLICIES", str(scale(6, 48))))
QUERIES = int(os.environ.get("PF_PARITY_QUERIES", str(scale(25, 50))))

# A block of ports nobody else uses: guarded 27000-27199, pools and targets
# in 7900-7999 (unguarded), addresses of loopback only.
GUARDED = (27000, 27199)
ADDRESSES = {"tcp4": ["127.0.0.1", "0.0.0.0"], "udp4": ["127.0.0.1"], "tcp6": ["::1", "::"],
             "udp6": ["::1", "::ffff:127.0.0.1"]}
CIDRS = ["127.0.0.0/8", "::1", "0.0.0.0/0", "::/0"]
# In a network namespace of the test's own (NetnsParity), more addresses of
# this host, and conditions on them.
NETNS_ADDRESSES = {"tcp4": ["10.250.0.1"], "udp4": ["10.250.0.1", "10.250.1.1"], "tcp6": ["fd00:250::1"],
                   "udp6": ["fd00:250::1", "::ffff:10.250.0.1"]}
if os.environ.get("PF_PARITY_IN_NETNS"):
    for _sock, _addrs in NETNS_ADDRESSES.items():
        ADDRESSES[_sock] = ADDRESSES[_sock] + _addrs
    CIDRS += ["10.250.0.0/16", "10.250.1.0/24", "fd00:250::/32"]
ERRNOS = ["EADDRINUSE", "EACCES", "EPERM"]


def random_policy(rng):
    """A valid policy the cgroup enforcer takes: at most two conditional
    rules per port, globs HEAD or HEAD*TAIL, remap targets that never collide."""
    lines_ = ["version = 1;", f'ephemeral = "{GUARDED[0]}-{GUARDED[1]}";', 'getsockname = "real";',
              f'default_action = "{rng.choice(["allow", "log", "refuse", "remap"])}";',
              f'refuse_errno = "{rng.choice(ERRNOS)}";', 'remap_pool = "7900-7949";']
    rules, next_to, conditional_ports = [], 7950, set()
    for _ in range(rng.randint(0, 6)):
        lo = rng.randint(GUARDED[0], GUARDED[1] - 4)
        hi = lo + rng.randint(0, 3)
        action = rng.choice(["allow", "log", "refuse", "remap"])
        rule = [f'ports = "{lo}-{hi}"', f'action = "{action}"']
        if rng.random() < 0.3:
            rule.append(f'proto = "{rng.choice(["tcp", "udp"])}"')
        conditions = []
        if rng.random() < 0.25:
            conditions.append(f'family = "{rng.choice(["ipv4", "ipv6"])}"')
        if rng.random() < 0.2:
            conditions.append(f'address = "{rng.choice(CIDRS)}"')
        if rng.random() < 0.2:
            conditions.append(f'program = "{rng.choice(["pf-probe", "pf-*", "*probe", "pf-pro?e", "other"])}"')
        if conditions:
            if any(p in conditional_ports for p in range(lo, hi + 1)):
                conditions = []         # the kernel checks two per port: keep it to one
            else:
                conditional_ports.update(range(lo, hi + 1))
        if action == "remap" and rng.random() < 0.5 and next_to + (hi - lo) <= 7999:
            rule.append(f"to = {next_to}")
            next_to += hi - lo + 1
        rules.append("{ " + "; ".join(rule + conditions) + "; }")
    lines_.append("rules = (\n  " + ",\n  ".join(rules) + "\n);" if rules else "")
    return "\n".join(lines_) + "\n"


def random_queries(rng):
    out = []
    for _ in range(QUERIES):
        sock = rng.choice(sorted(ADDRESSES))
        out.append((sock, rng.choice(ADDRESSES[sock]), rng.randint(GUARDED[0] - 2, GUARDED[1] + 2)))
    return out


def expected(check):
    """What a bind shows for a verdict of 'check': the errno, or the port."""
    if check["action"] == "refuse":
        return ("refused", check["errno"])
    return ("bound", check["target"] if check["action"] == "remap" else check["port"])


def observed(probe_lines):
    """('refused', ERRNO) or ('bound', real port) from pf-probe's bind+sockname."""
    bind = probe_lines[1].split()
    if bind[1] != "0":
        return ("refused", bind[2])
    return ("bound", int(probe_lines[2].split()[-1]))


class Parity(PolicyTest):
    steers = False      # new TCP connections to a moved server's port reach it, from anyone
    POLICY = "version = 1;\n"

    def cases(self):
        rng = random.Random(SEED)
        print(f"parity seed {SEED} (PF_PARITY_SEED={SEED} repeats this run)", file=sys.stderr)
        for n in range(POLICIES):
            text = random_policy(rng)
            yield n, text, random_queries(rng)

    def decide_all(self, text, queries):
        policy = write_policy(text)
        self.addCleanup(os.unlink, policy)
        verdicts = {}
        for sock, addr, port in queries:
            proto = sock[:3]
            r = portfence("check", "--json", "--for", "cgroup", "-c", policy, "--address", addr,
                          "--program", "pf-probe", f"{port}/{proto}")
            self.assertEqual(r.returncode, 0, r.stderr + text)
            verdicts[(sock, addr, port)] = expected(json.loads(r.stdout)[0])
        return policy, verdicts

    def compare(self, run_probe, serve):
        self.compared = {"binds": 0, "connects": 0, "datagrams": 0}
        self.addCleanup(lambda: print(f"parity: {self.compared['binds']} binds, {self.compared['connects']} "
                                      f"connects, {self.compared['datagrams']} datagrams compared",
                                      file=sys.stderr))
        for n, text, queries in self.cases():
            policy, verdicts = self.decide_all(text, queries)
            for query in queries:
                sock, addr, port = query
                got = observed(run_probe(policy, sock, "bind", addr, str(port), "sockname"))
                self.compared["binds"] += 1
                with self.subTest(policy=n, query=query):
                    self.assertEqual(got, verdicts[query], f"seed {SEED}, policy:\n{text}")
            self.compare_connects(n, text, policy, verdicts, run_probe, serve)

    def compare_connects(self, n, text, policy, verdicts, run_probe, serve):
        """A TCP server at a port the policy moves: clients reach it through
        the port it asked for (when the policy, asked with no program name as
        a client's connect is, remaps that port; whatever it says where the
        enforcer steers), and through no other."""
        moved = sorted({q[2] for q, v in verdicts.items() if q[0] == "tcp4" and q[1] == "127.0.0.1"
                        and v[0] == "bound" and v[1] != q[2]})
        if not moved:
            return
        port = moved[0]
        server = serve(policy, "tcp4", "bind", "127.0.0.1", str(port), "listen", "ready", "accept", "wait")
        as_client = json.loads(portfence("check", "--json", "-c", policy, "--address", "127.0.0.1",
                                         f"{port}/tcp").stdout)[0]["action"]
        for other in [port] + [p for p in moved[1:3]]:
            got = run_probe(policy, "tcp4", "connect", "127.0.0.1", str(other), "peername", "reset")
            self.compared["connects"] += 1
            reached = other == port and (as_client == "remap" or self.steers)
            want = ["connect 0 0", f"peername 0 0 127.0.0.1 {other}"] if reached else ["connect -1 ECONNREFUSED"]
            with self.subTest(policy=n, connect=other):
                self.assertEqual(got[1:1 + len(want)], want, f"seed {SEED}, server at {port}, policy:\n{text}")
        server.finish()
        self.compare_datagrams(n, text, policy, verdicts, run_probe, serve, as_client)

    def compare_datagrams(self, n, text, policy, verdicts, run_probe, serve, as_client):
        """A UDP server moved the same way answers a sendto() at the port it
        asked for, and recvfrom() names that port."""
        moved = sorted({q[2] for q, v in verdicts.items() if q[0] == "udp4" and q[1] == "127.0.0.1"
                        and v[0] == "bound" and v[1] != q[2]})
        if not moved:
            return
        port = moved[0]
        as_client = json.loads(portfence("check", "--json", "-c", policy, "--address", "127.0.0.1",
                                         f"{port}/udp").stdout)[0]["action"]
        if as_client != "remap":
            return              # not followed: the datagram would wait for no one
        server = serve(policy, "udp4", "bind", "127.0.0.1", str(port), "ready", "echo", "wait")
        got = run_probe(policy, "udp4", "sendto", "127.0.0.1", str(port), "hi", "recvfrom")
        self.compared["datagrams"] += 1
        with self.subTest(policy=n, sendto=port):
            self.assertEqual(got[1:], ["sendto 2 0", f"recvfrom 2 0 127.0.0.1 {port}"],
                             f"seed {SEED}, policy:\n{text}")
        server.finish()


class ShimParity(Parity):
    def setUp(self):
        super().setUp()
        self.steers = run_steers()      # as root

    def test_check_and_shim_agree(self):
        self.compare(lambda policy, *words: lines(fenced(policy, BUILD["probe"], *words)),
                     lambda policy, *words: self.start([BUILD["portfence"], "run", "-c", policy, "--",
                                                        BUILD["probe"], *words], ready="ready"))


@unittest.skipIf(cgroup_skip_reason(), cgroup_skip_reason())
class KernelParity(Parity):
    steers = True
    def test_check_and_cgroup_agree(self):
        cgroup = Cgroup()
        self.addCleanup(cgroup.cleanup)
        attached = [False]

        def run_probe(policy, *words):
            if getattr(run_probe, "policy", None) != policy:
                r = (portfence("cgroup", "reload", "-c", policy, cgroup.path) if attached[0]
                     else cgroup.attach(policy))
                self.assertEqual(r.returncode, 0, r.stderr)
                attached[0], run_probe.policy = True, policy
            return cgroup.probe(*words)

        def serve(policy, *words):
            run_probe(policy, "tcp4")       # the fence holds this policy
            return self.start([BUILD["probe"], *words], ready="ready", preexec_fn=cgroup.enter)

        self.compare(run_probe, serve)


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"),
                     "needs root, unshare and ip")
class NetnsParity(unittest.TestCase):
    """The same, in a network namespace with more addresses of this host
    (10.250.0.1, 10.250.1.1, fd00:250::1) and conditions on them."""

    def test_in_a_network_namespace_with_more_addresses(self):
        script = ('ip link set lo up && ip addr add 10.250.0.1/32 dev lo && ip addr add 10.250.1.1/32 dev lo && '
                  'ip addr add fd00:250::1/128 dev lo nodad && '
                  f'"$PYTHON" {os.path.abspath(__file__)} && "$PYTHON" {os.path.abspath(__file__)} cgroup')
        env = dict(os.environ, PF_PARITY_IN_NETNS="1", PYTHON=sys.executable, PF_PARITY_SEED=str(SEED))
        r = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, env=env,
                           timeout=600)
        self.assertIn(r.returncode, (0, 77), r.stderr[-4000:])


@unittest.skipIf(cgroup_skip_reason() or not shutil.which("unshare"), cgroup_skip_reason() or "needs unshare")
class CgroupnsParity(unittest.TestCase):
    """The kernel's side of the parity again, from inside a cgroup namespace
    (its cgroup2 mount showing the namespace, as a container's does) while
    another fence exists on the host: the fences made there must decide as
    'check' says."""

    def test_in_a_cgroup_namespace_beside_another_fence(self):
        root, other = Cgroup(), Cgroup()
        self.addCleanup(root.cleanup)
        self.addCleanup(other.cleanup)
        policy = write_policy('version = 1;\nephemeral = "27000-27199";\n')
        self.addCleanup(os.unlink, policy)
        self.assertEqual(other.attach(policy).returncode, 0)
        mount = cgroup_mount()
        inner = (f"umount -l {mount} && mount -t cgroup2 none {mount} && "
                 f'exec "$PYTHON" {os.path.abspath(__file__)} cgroup')
        script = f"echo $$ > {root.path}/cgroup.procs && exec unshare --cgroup --mount sh -euc {shlex.quote(inner)}"
        env = dict(base_env(), PYTHON=sys.executable, PF_PARITY_SEED=str(SEED))
        r = subprocess.run(["sh", "-euc", script], capture_output=True, text=True, env=env, timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr[-4000:])
        self.assertIn("Ran 1 test", r.stderr)


if __name__ == "__main__":
    main({"cgroup": ["KernelParity"], "netns": ["NetnsParity"], "cgroupns": ["CgroupnsParity"],
          "slow": ["KernelParity", "NetnsParity", "CgroupnsParity"]})
