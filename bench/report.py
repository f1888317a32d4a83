#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""portfence's benchmark report: every fast-path figure measured in one run
and printed as a table of figure, target and whether it is met. It reports;
it never fails on a figure (exit 0 unless a measurement could not run).

  user-space instructions the shim adds per call: callgrind, the slope
    between two loop lengths (start-up cancels out), shim minus plain;
  system calls the shim adds per call: strace -c, the same slopes;
  kernel cost per call of a cgroup program: kernel.bpf_stats_enabled (its
    old value restored), run_time_ns / run_cnt of the fence's own program;
  policy load: bench-decide (portfence's part = load - libconfig's parse);
  wall ratios: plain and wrapped runs interleaved, best and median of N.

usage: report.py BUILD_DIR [--rounds N] [--quick]"""
import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

POLICY = """version = 1;
ephemeral = "20000-29999";
remap_pool = "7000-7099";
rules = ( { ports = "8080"; action = "allow"; },
          { ports = "20000-20099"; action = "remap"; to = 7300; } );
log = { level = "LEVEL"; };
"""
# The same with two rules whose conditions a bind of 8081 does not meet.
CONDITIONAL = POLICY.replace('rules = ( ', """rules = ( { ports = "8081"; program = "nomatch*"; action = "refuse"; },
          { ports = "8081"; address = "10.0.0.0/8"; action = "refuse"; },
          """)
# bench-fence's loops (bench/bench-fence.c: enum loop)
BIND, CONNECT_REFUSED, CONNECT_MOVED = 0, 4, 5


class Bench:
    def __init__(self, build, rounds, quick):
        self.build = build
        self.rounds = rounds
        self.quick = quick
        self.portfence = os.path.join(build, "cli", "portfence")
        self.loops = os.path.join(build, "bench", "bench-fence")
        self.tmp = tempfile.mkdtemp(prefix="portfence-bench-")
        self.policies = {}
        for name, text in (("error", POLICY.replace("LEVEL", "error")), ("warn", POLICY.replace("LEVEL", "warn")),
                           ("conditional", CONDITIONAL.replace("LEVEL", "error")),
                           ("unsteered", POLICY.replace("LEVEL", "error") + "steer = false;\n")):
            path = os.path.join(self.tmp, f"bench-{name}.conf")
            with open(path, "w") as f:
                f.write(text)
            self.policies[name] = path
        self.rows = []

    def row(self, path, figure, target, met, note=""):
        self.rows.append((path, figure, target, "yes" if met else "no" if met is False else "-", note))
        print(f"  {path}: {figure} (target {target})", file=sys.stderr, flush=True)

    def wrapped(self, policy="error"):
        return [self.portfence, "run", "-c", self.policies[policy], "--"]

    # ---- callgrind and strace -------------------------------------------------

    def instructions(self, prefix, loop, n, port):
        out = os.path.join(self.tmp, "callgrind.out")
        subprocess.run(prefix + ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                 self.loops, "--loop", str(loop), str(n), str(port)],
                       check=True, capture_output=True)
        with open(out) as f:
            return int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1))

    def added_instructions(self, loop, port, policy="error"):
        n1, n2 = (500, 1500) if self.quick else (2000, 6000)
        plain = self.instructions([], loop, n2, port) - self.instructions([], loop, n1, port)
        shim = self.instructions(self.wrapped(policy), loop, n2, port) - \
            self.instructions(self.wrapped(policy), loop, n1, port)
        return (shim - plain) / (n2 - n1)

    def syscalls(self, prefix, loop, n, port):
        out = os.path.join(self.tmp, "strace.out")
        subprocess.run(prefix + ["strace", "-f", "-c", "-o", out, self.loops, "--loop", str(loop), str(n),
                                 str(port)], check=True, capture_output=True)
        counts = {}
        with open(out) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 5 and fields[-1] != "total" and fields[3].isdigit():
                    counts[fields[-1]] = int(fields[3])
        return counts

    def added_syscalls(self, loop, port, policy):
        n1, n2 = 1000, 3000
        result = {}
        for prefix, sign in (([], -1), (self.wrapped(policy), 1)):
            a, b = self.syscalls(prefix, loop, n1, port), self.syscalls(prefix, loop, n2, port)
            for name in set(a) | set(b):
                result[name] = result.get(name, 0) + sign * (b.get(name, 0) - a.get(name, 0)) / (n2 - n1)
        return {k: round(v, 2) for k, v in result.items() if abs(v) >= 0.01}

    def shim_rows(self):
        allowed = self.added_instructions(BIND, 8080)
        self.row("shim, allowed bind (instructions added per call, callgrind)", f"{allowed:.0f}", "<= 120",
                 allowed <= 120)
        refused = self.added_instructions(CONNECT_REFUSED, 20002)
        self.row("shim, connect not redirected (guarded port, nothing moved)", f"{refused:.0f}", "<= 150",
                 refused <= 150)
        unguarded = self.added_instructions(CONNECT_REFUSED, 9)
        self.row("shim, connect to an unguarded port", f"{unguarded:.0f}", "<= 150", unguarded <= 150)
        remapped = self.added_instructions(BIND, 20001, "warn")
        extra = self.added_syscalls(BIND, 20001, "warn")
        others = {k: v for k, v in extra.items() if k != "getsockopt"}
        said = ", ".join(f"{k} {v:g}" for k, v in sorted(extra.items())) or "none"
        self.row('shim, remapped bind, log.level "warn" (instructions; system calls added)',
                 f"{remapped:.0f}; {said}", "<= 600; one getsockopt",
                 remapped <= 600 and extra.get("getsockopt", 0) <= 1 and not others)

    # ---- BPF programs: kernel.bpf_stats_enabled ---------------------------------

    def cgroup_mount(self):
        return subprocess.run([self.portfence, "cgroup", "root"], capture_output=True, text=True).stdout.strip()

    def fence(self, policy):
        path = os.path.join(self.cgroup_mount(), f"portfence-bench-{os.getpid()}-{len(self.rows)}")
        os.mkdir(path)
        r = subprocess.run([self.portfence, "cgroup", "attach", "-c", policy, path], capture_output=True,
                           text=True)
        if r.returncode != 0:
            os.rmdir(path)
            raise RuntimeError(r.stderr)
        return path

    def unfence(self, path):
        subprocess.run([self.portfence, "cgroup", "detach", path], capture_output=True)
        os.rmdir(path)

    @staticmethod
    def pinned_stats(pin, kind="prog"):
        """run_time_ns and run_cnt of a program pinned at pin (kind "link":
        of the program a pinned link holds)."""
        shown = json.loads(subprocess.run(["bpftool", "-j", kind, "show", "pinned", pin],
                                          capture_output=True, text=True, check=True).stdout)
        if kind == "link":
            shown = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(shown["prog_id"])],
                                              capture_output=True, text=True, check=True).stdout)
        return shown.get("run_time_ns", 0), shown.get("run_cnt", 0)

    def ns_per_run_of(self, stats, cgroup, loop, port, n):
        """Nanoseconds per run of the program stats() reads while bench-fence
        runs loop in cgroup: the best of 3, the least disturbed run."""
        def enter():
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        best = None
        for _ in range(3):
            t0, c0 = stats()
            subprocess.run([self.loops, "--loop", str(loop), str(n), str(port)], check=True,
                           capture_output=True, preexec_fn=enter)
            t1, c1 = stats()
            if c1 > c0:
                ns = (t1 - t0) / (c1 - c0)
                best = ns if best is None else min(best, ns)
        return best

    def ns_per_run(self, cgroup, program, loop, port, n):
        pin = f"/sys/fs/bpf/portfence/{os.stat(cgroup).st_ino}/{program}"
        return self.ns_per_run_of(lambda: self.pinned_stats(pin, "link"), cgroup, loop, port, n)

    def in_cgroup(self, cgroup, code, *args, **kw):
        def enter():
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], preexec_fn=enter, **kw)

    def wire_rows(self, cgroup, n, floor):
        """The fence's tc programs on loopback (its UDP steering): what every
        packet pays with no UDP server moved, with one moved, and what a
        steered datagram and a moved server's answer pay."""
        pins = {name: f"/sys/fs/bpf/portfence/{os.stat(cgroup).st_ino}/{name}-1" for name in ("udp_in", "udp_out")}
        pins["steer_lookup"] = f"/sys/fs/bpf/portfence/{os.stat(cgroup).st_ino}/steer_lookup"
        stats = {name: (lambda pin=pin: self.pinned_stats(pin, "link")) for name, pin in pins.items()}

        def row(path, ns, target):
            above = f" ({ns - floor:.0f} above the floor)" if floor is not None else ""
            self.row(path, f"{ns:.0f} ns{above}", f"<= {target} ns", ns <= target)

        def per_packet(name, traffic):
            t0, c0 = stats[name]()
            traffic()
            t1, c1 = stats[name]()
            return (t1 - t0) / (c1 - c0) if c1 > c0 else float("nan")

        for name in ("udp_in", "udp_out"):
            ns = self.ns_per_run_of(stats[name], cgroup, CONNECT_MOVED, 20003, n // 4)
            row(f"tc {name} per packet, no UDP server moved (TCP connects on loopback)", ns, 80)
        # A moved UDP server (20005 -> 7305) that reads, and sends count
        # datagrams to a sink when told.
        count = n
        server = self.in_cgroup(cgroup, textwrap.dedent("""
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 20005))
            print("ready", flush=True)
            for line in sys.stdin:
                if line.strip() == "send":
                    sink = int(sys.stdin.readline())
                    for _ in range(int(sys.argv[1])):
                        s.sendto(b"x", ("127.0.0.1", sink))
                    print("sent", flush=True)
                else:
                    s.settimeout(0.2)
                    try:
                        while True:
                            s.recv(16)
                    except OSError:
                        print("drained", flush=True)
        """), count, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            server.stdout.readline()
            ns = self.ns_per_run_of(stats["udp_in"], cgroup, CONNECT_MOVED, 20003, n // 4)
            row("tc udp_in per packet, a UDP server moved (TCP connects on loopback)", ns, 120)

            def datagrams_to_the_moved_port():
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                    for _ in range(count):
                        c.sendto(b"x", ("127.0.0.1", 20005))
                server.stdin.write("drain\n")
                server.stdin.flush()
                server.stdout.readline()
            datagrams_to_the_moved_port()      # the first puts the server in the steering map
            ns = per_packet("udp_in", datagrams_to_the_moved_port)
            row("tc udp_in per datagram to a moved server's port (the server in the map)", ns, 250)
            ns = per_packet("steer_lookup", datagrams_to_the_moved_port)
            row("sk_lookup per datagram steered to a moved server", ns, 700)

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
                sink.bind(("127.0.0.1", 0))

                def answers_of_the_moved_server():
                    server.stdin.write(f"send\n{sink.getsockname()[1]}\n")
                    server.stdin.flush()
                    server.stdout.readline()
                ns = per_packet("udp_out", answers_of_the_moved_server)
            row("tc udp_out per datagram a moved server sends (source port rewritten)", ns, 300)
        finally:
            server.kill()
            server.wait()

    def empty_program_ns(self, n):
        """bpf_stats' figure for a bind4 program that does nothing: the floor
        under every kernel row (running and timing a program), None when the
        build has no empty.bpf.o."""
        obj = os.path.join(self.build, "bench", "empty.bpf.o")
        if not os.path.exists(obj):
            return None
        path = os.path.join(self.cgroup_mount(), f"portfence-bench-{os.getpid()}-empty")
        pin = f"/sys/fs/bpf/portfence-bench-{os.getpid()}-empty"
        os.mkdir(path)
        try:
            subprocess.run(["bpftool", "prog", "load", obj, pin, "type", "cgroup/bind4"], check=True,
                           capture_output=True)
            subprocess.run(["bpftool", "cgroup", "attach", path, "bind4", "pinned", pin], check=True,
                           capture_output=True)
            return self.ns_per_run_of(lambda: self.pinned_stats(pin), path, BIND, 8080, n)
        finally:
            subprocess.run(["bpftool", "cgroup", "detach", path, "bind4", "pinned", pin], capture_output=True)
            if os.path.exists(pin):
                os.unlink(pin)
            os.rmdir(path)

    def kernel_rows(self):
        if os.geteuid() != 0 or not self.cgroup_mount() or not shutil.which("bpftool"):
            for path in ("cgroup bind4, allowed", "cgroup bind4, remapped", "cgroup connect4 to a moved server",
                         "cgroup bind4, 2 conditional rules"):
                self.row(path, "not measured (needs root, cgroup v2 and bpftool)", "-", None)
            return
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            old = f.read().strip()
        cgroup = None
        try:
            with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
                f.write("1")
            n = 5000 if self.quick else 20000
            floor = self.empty_program_ns(n)
            if floor is not None:
                self.row("cgroup bind4, a program that does nothing (the floor of every kernel row)",
                         f"{floor:.0f} ns", "-", None)
            cgroup = self.fence(self.policies["conditional"])
            ns = self.ns_per_run(cgroup, "bind4", BIND, 8081, n)
            above = f" ({ns - floor:.0f} above the floor)" if floor is not None else ""
            self.row("cgroup bind4, 2 conditional rules (conditions not met)", f"{ns:.0f} ns{above}", "<= 150 ns", ns <= 150)
            self.unfence(cgroup)
            cgroup = None
            cgroup = self.fence(self.policies["error"])
            for path, program, loop, port, target in (
                    ("cgroup bind4, allowed (ns per run, bpf_stats)", "bind4", BIND, 8080, 80),
                    ("cgroup bind4, remapped (socket storage; no events reader)", "bind4", BIND, 20001, 300),
                    ("cgroup post_bind4 after a remap", "post_bind4", BIND, 20001, None),
                    ("cgroup post_bind4 after an allowed bind (for scale: a program that "
                     "only looks up its socket's storage)", "post_bind4", BIND, 8080, None),
                    ("cgroup connect4 to a moved server, steered (no redirect)", "connect4", CONNECT_MOVED, 20003,
                     300),
                    ("cgroup connect4, not redirected (guarded, nothing moved)", "connect4", CONNECT_REFUSED,
                     20002, None)):
                ns = self.ns_per_run(cgroup, program, loop, port, n if loop == BIND else n // 4)
                above = f" ({ns - floor:.0f} above the floor)" if floor is not None else ""
                self.row(path, f"{ns:.0f} ns{above}", f"<= {target} ns" if target else "-",
                         ns <= target if target else None)
            self.wire_rows(cgroup, n, floor)
            self.unfence(cgroup)
            cgroup = None
            cgroup = self.fence(self.policies["unsteered"])
            ns = self.ns_per_run(cgroup, "connect4", CONNECT_MOVED, 20003, n // 4)
            above = f" ({ns - floor:.0f} above the floor)" if floor is not None else ""
            self.row("cgroup connect4 to a moved server, redirected (steer = false)", f"{ns:.0f} ns{above}",
                     "<= 300 ns", ns <= 300)
        finally:
            if cgroup:
                self.unfence(cgroup)
            with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
                f.write(old)

    # ---- policy load -------------------------------------------------------------

    def load_row(self):
        out = subprocess.run([os.path.join(self.build, "bench", "bench-decide")], capture_output=True, text=True,
                             check=True).stdout
        total = float(re.search(r"load, 10000 rules:\s+([\d.]+) ms", out).group(1))
        libconfig = float(re.search(r"of which libconfig:\s+([\d.]+) ms", out).group(1))
        own = total - libconfig
        self.row("policy load, 10,000 rules (portfence's part; libconfig's parse beside)",
                 f"{own:.2f} ms (libconfig {libconfig:.2f} ms)", "<= 2 ms", own <= 2)

    # ---- wall ratios: real servers, interleaved --------------------------------------

    @staticmethod
    def wait_port(port, proc, deadline=10):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"port {port} never listened")

    def server_round(self, server, port, client, wrapped):
        """One client run against a fresh server on port (which the policy
        moves by 12700 - 300: the wrapped server really listens there)."""
        prefix = self.wrapped() if wrapped else []
        proc = subprocess.Popen(prefix + server, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            self.wait_port(port - 12700 if wrapped else port, proc)
            return subprocess.run(prefix + client, capture_output=True, text=True, check=True, timeout=300).stdout
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    def ratio_row(self, path, one_round, target):
        plain, wrapped = [], []
        for i in range(self.rounds):        # interleaved: drift hits both alike
            for is_wrapped, results in ((False, plain), (True, wrapped)) if i % 2 == 0 else \
                    ((True, wrapped), (False, plain)):
                results.append(one_round(is_wrapped))
        best = max(wrapped) / max(plain)
        median = statistics.median(wrapped) / statistics.median(plain)
        self.row(path, f"best {best:.3f}, median {median:.3f} ({statistics.median(plain):.0f} req/s plain)",
                 f">= {target} (median)", median >= target)

    def redis_round(self, wrapped):
        # 20079 is remapped to 7379: the wrapped client follows the move
        out = self.server_round(["redis-server", "--port", "20079", "--save", "", "--appendonly", "no"],
                                20079, ["redis-benchmark", "-p", "20079", "-t", "set,get", "-q", "--csv",
                                       "-n", "20000" if self.quick else "100000"], wrapped)
        rates = [float(row.split(",")[1].strip('"')) for row in out.splitlines()[1:] if row.count(",") >= 1]
        return sum(rates) / len(rates)

    def nginx_round(self, wrapped):
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off; master_process off; worker_processes 1;
pid {self.tmp}/nginx.pid; error_log {self.tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {self.tmp}; proxy_temp_path {self.tmp};
        fastcgi_temp_path {self.tmp}; uwsgi_temp_path {self.tmp}; scgi_temp_path {self.tmp};
        server {{ listen 127.0.0.1:20080; location / {{ return 200 "ok\\n"; }} }} }}
""")
        out = self.server_round(["nginx", "-c", conf, "-p", self.tmp], 20080,
                                ["ab", "-q", "-n", "5000" if self.quick else "20000", "-c", "8",
                                 "http://127.0.0.1:20080/"], wrapped)
        return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))

    def wall_rows(self):
        for program, path, one_round in (
                ("redis-server", "redis-benchmark SET/GET, both sides wrapped (req/s ratio)", self.redis_round),
                ("nginx", "nginx + ab -n 20000 -c 8, no keep-alive, both sides wrapped (ratio)", self.nginx_round)):
            if not shutil.which(program):
                self.row(path, f"not measured ({program} is not installed)", ">= 0.99", None)
                continue
            self.ratio_row(path, one_round, 0.99)

    def table(self):
        cpu = "?"
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1) if m else cpu
        print(f"portfence benchmark report: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
              f"{time.strftime('%Y-%m-%d')}, {self.rounds} rounds\n")
        print("| path | figure | target | met |")
        print("|---|---|---|---|")
        for path, figure, target, met, _ in self.rows:
            print(f"| {path} | {figure} | {target} | {met} |")


def main():
    ap = argparse.ArgumentParser(description="portfence's fast paths, measured")
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="shorter loops and runs: a smoke test")
    ap.add_argument("--only", choices=["shim", "kernel", "load", "wall"], action="append")
    args = ap.parse_args()
    bench = Bench(os.path.abspath(args.build), args.rounds, args.quick)
    try:
        for name, step in (("shim", bench.shim_rows), ("kernel", bench.kernel_rows), ("load", bench.load_row),
                           ("wall", bench.wall_rows)):
            if not args.only or name in args.only:
                step()
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    bench.table()


if __name__ == "__main__":
    main()
