# SPDX-License-Identifier: MIT
"""Shared by the integration tests: where the built programs are, how to run
them with and without the shim, and one fixture for background servers that
always cleans up."""
import os
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
                      ("stack", "PF_STACK_LIB"))
}
SOURCE = os.environ.get("PF_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
ASAN_RUNTIME = os.environ.get("PF_ASAN_RUNTIME", "")
TIMEOUT = 60


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


def port_listening(port, host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


class Background:
    """A process started in the background that the test waits for and always
    stops: as a context manager, or with stop() from a tearDown."""

    def __init__(self, cmd, env=None, ready=None, ready_port=None):
        """ready: wait for a line of stdout starting with it; ready_port: for a
        listener on that port of 127.0.0.1."""
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=base_env(env))
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
