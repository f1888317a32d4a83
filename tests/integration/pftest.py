# SPDX-License-Identifier: MIT
"""Shared by the integration tests: where the built programs are, how to run
them with and without the shim, and one fixture for background servers that
always cleans up."""
import ctypes
import os
import signal
import sys
import socket
import subprocess
import tempfile
import time
import unittest

BUILD = {
    name: os.environ.get(var, "")
    for name, var in (("portfence", "PORTFENCE"), ("shim", "PF_SHIM"), ("probe", "PF_PROBE"),
                      ("stress", "PF_STRESS"), ("signal", "PF_SIGNAL"),
                      ("libconfig", "PF_LIBCONFIG"), ("ctor", "PF_CTOR_LIB"),
                      ("stack", "PF_STACK_LIB"), ("notcx", "PF_NOTCX_LIB"))
}
SOURCE = os.environ.get("PF_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
POLICIES = os.path.join(SOURCE, "tests", "policies")     # fixtures shared by every suite
ASAN_RUNTIME = os.environ.get("PF_ASAN_RUNTIME", "")
TIMEOUT = 60
PIN_ROOT = "/sys/fs/bpf/portfence"
PROBE_STATIC = os.environ.get("PF_PROBE_STATIC", "")
URING = os.environ.get("PF_URING", "")
GO_LISTEN = os.environ.get("PF_GO_LISTEN", "")
# The slow suite (PF_SLOW=1) runs the stress tests whole; the quick one
# samples them, each behaviour still tested.
SLOW = os.environ.get("PF_SLOW") == "1"


def scale(quick, slow):
    """How much of a stress test to run: its quick or its slow size."""
    return slow if SLOW else quick


def base_env(extra=None):
    """The environment for a child: no policy inherited from the caller; under
    AddressSanitizer its runtime preloaded first and leak checks off (the
    children include python3 and curl, which are not ours)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PORTFENCE_") and k != "LD_PRELOAD"}
    if ASAN_RUNTIME:
        env["LD_PRELOAD"] = ASAN_RUNTIME
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    env.update(extra or {})
    return env


def preload(*libs):
    """An LD_PRELOAD value with the given libraries, after the sanitizer's."""
    return ":".join(([ASAN_RUNTIME] if ASAN_RUNTIME else []) + list(libs))


def fixture(name):
    """The text of a policy in tests/policies/ (the ones several suites share)."""
    with open(os.path.join(POLICIES, name)) as f:
        return f.read()


def write_policy(text):
    f = tempfile.NamedTemporaryFile("w", prefix="pf-test-", suffix=".conf", delete=False)
    f.write(text)
    f.close()
    return f.name


def portfence(*args, env=None, **kw):
    return subprocess.run([BUILD["portfence"], *args], capture_output=True, text=True,
                          env=base_env(env), timeout=TIMEOUT, **kw)


def fenced(policy, *cmd, env=None, verbose=False, **kw):
    """Run cmd under 'portfence run -c policy'."""
    args = ["run", "-c", policy] + (["-v"] if verbose else []) + ["--", *cmd]
    return portfence(*args, env=env, **kw)


def probe(*words, policy=None, env=None):
    """Run pf-probe, under the shim when a policy is given; its lines."""
    if policy:
        r = fenced(policy, BUILD["probe"], *words, env=env)
    else:
        r = subprocess.run([BUILD["probe"], *words], capture_output=True, text=True,
                           env=base_env(env), timeout=TIMEOUT)
    return r


def listener_bound_at(port):
    """Is a TCP listener of this network namespace bound to port itself? (A
    connect may reach a moved server there by steering: this asks where
    sockets are, from /proc/net/tcp and tcp6.)"""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def port_listening(port, host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


class Background:
    """A process started in the background that the test waits for and always
    stops: as a context manager, or with stop() from a tearDown."""

    def __init__(self, cmd, env=None, ready=None, ready_port=None, preexec_fn=None):
        """ready: wait for a line of stdout starting with it; ready_port: for a
        listener on that port of 127.0.0.1; preexec_fn: run in the child
        before cmd (e.g. to enter a cgroup)."""
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=base_env(env),
                                     preexec_fn=preexec_fn)
        self.lines = []
        deadline = time.monotonic() + 20
        try:
            if ready:
                while time.monotonic() < deadline:
                    line = self.proc.stdout.readline()
                    if not line:
                        raise RuntimeError("exited before ready: " + self.proc.stderr.read())
                    self.lines.append(line.rstrip("\n"))
                    if line.startswith(ready):
                        break
            if ready_port:
                while not port_listening(ready_port):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("port %d never listened: %s" %
                                           (ready_port, self.proc.stderr.read() if self.proc.poll() is not None else ""))
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def finish(self, stdin_text="\n"):
        """Let a probe waiting on stdin go on; its remaining output."""
        out, err = self.proc.communicate(stdin_text, timeout=TIMEOUT)
        self.lines += out.splitlines()
        return self.lines, err

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.communicate(timeout=10)
        except (ValueError, OSError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def lines(result):
    return result.stdout.splitlines()


class PolicyTest(unittest.TestCase):
    """A test with the class's POLICY in a file (self.policy) and background
    processes that are stopped whatever happens (self.start)."""
    POLICY = ""

    @classmethod
    def setUpClass(cls):
        cls.policy = write_policy(cls.POLICY)

    @classmethod
    def tearDownClass(cls):
        os.unlink(cls.policy)

    def setUp(self):
        self.background = []
        self.addCleanup(self.stop_background)

    def stop_background(self):
        for b in self.background:
            b.stop()

    def start(self, *args, **kw):
        b = Background(*args, **kw)
        self.background.append(b)
        return b


# ---- cgroups (root, cgroup v2, BPF) ------------------------------------------

def cgroup_mount():
    """Where cgroup v2 is mounted, as portfence finds it (one parser of
    /proc/self/mountinfo for every part of the project), or None."""
    r = portfence("cgroup", "root")
    return r.stdout.strip() if r.returncode == 0 else None


def cgroup_skip_reason():
    if os.geteuid() != 0:
        return "needs root"
    if not cgroup_mount():
        return "no cgroup v2"
    if not os.path.exists("/sys/kernel/btf/vmlinux") and not os.path.exists("/sys/fs/bpf"):
        return "no BPF"
    r = portfence("cgroup", "--help")
    if "built without BPF" in r.stderr:
        return "portfence built without BPF"
    return None


def run_steers():
    """Does 'portfence run' steer here (root, a kernel and build that can)?
    Then a server its shim moves is reached at the port it asked for by
    every TCP client, not only by the wrapped ones the policy redirects."""
    policy = write_policy('version = 1;\nephemeral = "20000-20009";\ndefault_action = "remap";\n')
    try:
        r = subprocess.run([BUILD["portfence"], "run", "-c", policy, "--", "sh", "-c", 'echo "$PORTFENCE_STEER"'],
                           capture_output=True, text=True, env=base_env(), timeout=TIMEOUT)
    finally:
        os.unlink(policy)
    return r.returncode == 0 and r.stdout.strip() != ""


class Cgroup:
    """A fresh cgroup below the v2 mount; processes run inside it."""
    count = 0
    created_ids = set()         # what this process made: all it may check for leftovers

    def __init__(self, parent=None):
        Cgroup.count += 1
        base = parent.path if parent else cgroup_mount()
        self.path = os.path.join(base, f"pf-test-{os.getpid()}-{Cgroup.count}")
        os.mkdir(self.path)
        Cgroup.created_ids.add(os.stat(self.path).st_ino)
        self.children = []

    def enter(self):
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def run(self, *cmd, env=None, **kw):
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60,
                              env=base_env(env), preexec_fn=self.enter, **kw)

    def popen(self, *cmd, **kw):
        p = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=base_env(),
                             preexec_fn=self.enter, **kw)
        self.children.append(p)
        return p

    def probe(self, *words, static=False):
        return self.run(PROBE_STATIC if static else BUILD["probe"], *words).stdout.splitlines()

    def attach(self, policy, *extra):
        return portfence("cgroup", "attach", "-c", policy, *extra, self.path)

    def cleanup(self):
        for p in self.children:
            if p.poll() is None:
                p.kill()
            p.communicate()
        portfence("cgroup", "detach", self.path)
        for sub in os.listdir(self.path):
            if sub.startswith("pf-test-"):
                os.rmdir(os.path.join(self.path, sub))
        with open(os.path.join(self.path, "cgroup.procs")) as f:
            for pid in f.read().split():
                os.kill(int(pid), signal.SIGKILL)
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("cannot remove " + self.path)


# ---- running a suite ------------------------------------------------------------

SKIPPED = 77    # meson's code for a test that could not run here


CLONE_NEWNET = 0x40000000


PRIVATE_NETWORK = False        # the suite runs in a network namespace of its own


def _private_network():
    """This suite in a network namespace of its own, loopback up: its fixed
    ports meet no other suite's, so meson runs suites side by side
    (PF_TEST_NETNS=private, given by meson where the tests run as root)."""
    global PRIVATE_NETWORK
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "unshare(CLONE_NEWNET): " + os.strerror(err))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=TIMEOUT)
    PRIVATE_NETWORK = True


def main(groups=None):
    """Run this suite, or one of its groups. groups maps a name to the tests
    that need something of the environment (root, a program, a kernel
    feature), given as unittest names ("Class" or "Class.test"): meson runs
    each group as a test of its own, so a group that cannot run here shows
    as SKIP in the summary instead of hiding inside a suite that says OK. A
    run whose every test was skipped exits 77. The group "slow" holds stress
    tests that run sampled in the suite and whole in the slow suite."""
    groups = groups or {}
    if os.environ.pop("PF_TEST_NETNS", "") == "private" and os.geteuid() == 0:
        _private_network()      # once: a suite run inside a test keeps the test's network
    module = sys.modules["__main__"]
    loader = unittest.TestLoader()
    name = sys.argv[1] if len(sys.argv) > 1 else None
    if name:
        if name not in groups:
            sys.exit(f"unknown group '{name}' (groups: {', '.join(groups) or 'none'})")
        suite = loader.loadTestsFromNames(groups[name], module)
    else:
        grouped = {n for group, names in groups.items() if group != "slow" for n in names}
        suite = unittest.TestSuite(t for t in _flatten(loader.loadTestsFromModule(module))
                                   if not _named(t, grouped))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if not result.wasSuccessful():
        sys.exit(1)
    if result.testsRun == len(result.skipped):
        print("every test was skipped:", "; ".join(sorted({why for _, why in result.skipped})))
        sys.exit(SKIPPED)


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def _named(test, names):
    cls = type(test).__name__
    return cls in names or f"{cls}.{test._testMethodName}" in names
