#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Fleets: containers fenced by the OCI hook before their first instruction,
a node agent (cgroup guard) fencing every container started below it, the
systemd drop-in, Kubernetes recipes and a scan of every network namespace.
Real podman and runc where they run; the shipped hook JSON, units and
manifest checked for what their readers require."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import (main, BUILD, PROBE_STATIC, SOURCE, TIMEOUT, Background, Cgroup, PolicyTest,  # noqa: E402
                    base_env, cgroup_mount, cgroup_skip_reason, portfence, write_policy)

BUILD_ROOT = os.path.dirname(os.path.dirname(BUILD["portfence"]))
CONFIG_BUILD = os.path.join(BUILD_ROOT, "config")
KUBERNETES = os.path.join(SOURCE, "config", "kubernetes")
SHIPPED = os.path.join(SOURCE, "config", "portfence.conf")

# A guarded range nobody else uses; one port moved to a fixed target.
POLICY = """version = 1;
ephemeral = "27000-27099";
default_action = "refuse";
rules = ( { ports = "27010"; action = "remap"; to = 27510; } );
"""
OTHER_POLICY = POLICY.replace('default_action = "refuse"', 'default_action = "allow"')

OCI_STAGES = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop"}
OCI_WHEN = {"always", "annotations", "commands", "hasBindMounts"}


def listening_ports(pid, proto="tcp"):
    """The local ports of pid's TCP listeners (or bound UDP sockets), from
    /proc (its own netns)."""
    ports = set()
    for name in (proto, proto + "6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if proto == "udp" or fields[3] == "0A":
                        ports.add(int(fields[1].split(":")[1], 16))
        except OSError:
            pass
    return ports


def configured_portfence():
    """Where the build installs portfence: what shipped files must name."""
    r = subprocess.run(["meson", "introspect", "--buildoptions", BUILD_ROOT], capture_output=True, text=True)
    options = {o["name"]: o["value"] for o in json.loads(r.stdout)}
    return os.path.join(options["prefix"], options["bindir"], "portfence")


def fence_ids():
    r = portfence("cgroup", "status", "--json")
    return {f["cgroup_id"] for f in json.loads(r.stdout or "[]")}


def fenced_path(path):
    r = portfence("cgroup", "status", "--json")
    return any(f["cgroup"] == path for f in json.loads(r.stdout or "[]"))


def fences_below(path):
    """The fences on path and below it: this test's own (the host may have others)."""
    r = portfence("cgroup", "status", "--json")
    return [f for f in json.loads(r.stdout or "[]") if (f["cgroup"] or "").startswith(path)]


# ---- what the shipped files promise --------------------------------------------

class ShippedHooks(unittest.TestCase):
    """The hooks.d JSON as podman and CRI-O read it (schema 1.0.0)."""

    def check_hook(self, name):
        with open(os.path.join(CONFIG_BUILD, name)) as f:
            hook = json.load(f)
        self.assertEqual(set(hook), {"version", "hook", "when", "stages"})
        self.assertEqual(hook["version"], "1.0.0")
        self.assertTrue(os.path.isabs(hook["hook"]["path"]))
        self.assertEqual(os.path.basename(hook["hook"]["path"]), "portfence")
        self.assertEqual(hook["hook"]["args"], ["portfence", "oci-hook"])
        self.assertEqual(set(hook["stages"]), {"createRuntime", "poststop"})
        self.assertLessEqual(set(hook["stages"]), OCI_STAGES)
        self.assertTrue(set(hook["when"]) and set(hook["when"]) <= OCI_WHEN)
        for pattern, value in hook["when"].get("annotations", {}).items():
            re.compile(pattern)
            re.compile(value)
        return hook

    def test_opt_in_hook_matches_the_annotation_only(self):
        when = self.check_hook("portfence.json")["when"]
        self.assertNotIn("always", when)
        (key, value), = when["annotations"].items()
        self.assertTrue(re.search(key, "io.portfence.policy"))
        self.assertFalse(re.search(key, "io.portfence.policyx"))
        self.assertFalse(re.search(key, "xio.portfence.policy"))
        self.assertTrue(re.search(value, "web"))

    def test_always_hook(self):
        self.assertEqual(self.check_hook("portfence-always.json")["when"], {"always": True})

    def test_hooks_name_the_configured_bindir(self):
        for name in ("portfence.json", "portfence-always.json", "portfence-metrics.service"):
            with open(os.path.join(CONFIG_BUILD, name)) as f:
                self.assertIn(configured_portfence(), f.read())


class KubernetesRecipe(unittest.TestCase):
    """The manifest and the Containerfile: what a cluster would run."""

    def load(self):
        try:
            import yaml
        except ImportError:
            self.skipTest("python3-yaml is not installed")
        with open(os.path.join(KUBERNETES, "portfence-daemonset.yaml")) as f:
            return {d["kind"]: d for d in yaml.safe_load_all(f)}

    def test_daemonset_guards_the_pod_root_once(self):
        docs = self.load()
        ds = docs["DaemonSet"]
        self.assertEqual(ds["apiVersion"], "apps/v1")
        self.assertEqual(ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"])
        pod = ds["spec"]["template"]["spec"]
        self.assertTrue(pod["hostPID"])
        (c,) = pod["containers"]
        self.assertTrue(c["securityContext"]["privileged"])
        command = c["command"]
        # the host's cgroup namespace, then one guard: no polling loop
        self.assertEqual(command[:5], ["nsenter", "--target", "1", "--cgroup", "--"])
        self.assertEqual(command[6:9], ["cgroup", "guard", "--kubepods"])
        self.assertNotIn("sleep", " ".join(command + c.get("args", [])))
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(volumes[mounts["/sys/fs/cgroup"]]["hostPath"]["path"], "/sys/fs/cgroup")
        self.assertEqual(volumes[mounts["/sys/fs/bpf"]]["hostPath"]["path"], "/sys/fs/bpf")
        # the policy the guard reads is the ConfigMap's, and it is valid
        policy = command[command.index("-c") + 1]
        (mount_path, name), = [(p, n) for p, n in mounts.items() if policy.startswith(p + "/")]
        config_map = docs["ConfigMap"]
        self.assertEqual(volumes[name]["configMap"]["name"], config_map["metadata"]["name"])
        text = config_map["data"][os.path.basename(policy)]
        r = portfence("check", "-c", "-", input=text)
        self.assertEqual(r.returncode, 0, r.stderr)
        # and it moves no pod's server: the node's fence steers in the node's
        # network namespace only, and pods have their own
        r = portfence("check", "-c", "-", "--json", "40000/tcp", "40000/udp", input=text)
        self.assertEqual({v["action"] for v in json.loads(r.stdout)}, {"log"}, r.stderr)

    def test_containerfile_builds_this_repository(self):
        with open(os.path.join(KUBERNETES, "Containerfile")) as f:
            text = f.read()
        self.assertIn("COPY . /src", text)
        self.assertRegex(text, r"meson setup /build /src [^\n]*\\\n[^\n]*-Dbpf=enabled")
        self.assertIn("util-linux", text)       # nsenter, which the DaemonSet runs
        self.assertIn("/etc/portfence", text)


class KubernetesSysctls(PolicyTest):
    POLICY = POLICY.replace('ephemeral = "27000-27099"', 'ephemeral = "33000-33099"').replace("27010", "33010") \
                   .replace("to = 27510", "to = 34010")

    def test_pod_sysctl_reserves_server_ports_in_the_default_range(self):
        r = portfence("export", "kubernetes-sysctls", "-c", self.policy)
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            import yaml
        except ImportError:
            self.skipTest("python3-yaml is not installed")
        doc = yaml.safe_load(r.stdout)
        (sysctl,) = doc["securityContext"]["sysctls"]
        self.assertEqual(sysctl["name"], "net.ipv4.ip_local_reserved_ports")
        self.assertEqual(sysctl["value"], "34010")
        self.assertIn("32768-60999", r.stdout)

    def test_nothing_to_reserve_is_said(self):
        p = write_policy(POLICY)        # 27510: below a pod's 32768-60999
        self.addCleanup(os.unlink, p)
        r = portfence("export", "kubernetes-sysctls", "-c", p)
        self.assertEqual(r.returncode, 0)
        self.assertNotIn("sysctls", r.stdout)
        self.assertIn("nothing to export", r.stderr)

    def test_cni_entry_is_json_or_nothing(self):
        r = portfence("export", "cni", "-c", self.policy)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout),
                         {"type": "tuning", "sysctl": {"net.ipv4.ip_local_reserved_ports": "34010"}})
        p = write_policy(POLICY)        # 27510: below a container's 32768-60999
        self.addCleanup(os.unlink, p)
        r = portfence("export", "cni", "-c", p)
        self.assertEqual((r.returncode, r.stdout), (0, ""))
        self.assertIn("nothing to export", r.stderr)
        r = portfence("export", "cni", "-c", p, "extra")
        self.assertEqual((r.returncode, r.stderr), (2, "portfence: export cni: unexpected argument 'extra'\n"))

    def test_sysctl_says_it_is_per_namespace(self):
        r = portfence("export", "sysctl", "-c", self.policy)
        self.assertIn("per network namespace", r.stdout)


class SystemdUnits(PolicyTest):
    """Every shipped unit and the drop-in, as systemd-analyze verify reads them."""
    POLICY = POLICY

    def setUp(self):
        super().setUp()
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed")
        self.dir = tempfile.mkdtemp(prefix="pf-test-units-")
        self.addCleanup(shutil.rmtree, self.dir)

    def verify(self, unit):
        return subprocess.run(["systemd-analyze", "verify", "--man=no", os.path.join(self.dir, unit)],
                              capture_output=True, text=True, timeout=TIMEOUT)

    def install(self, name, text):
        # the configured bindir is not installed here: the built program stands in
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(re.sub(r"/\S+/bin/portfence", BUILD["portfence"], text))

    def test_shipped_units_verify(self):
        for name, source in (("portfence-metrics.service", CONFIG_BUILD),
                             ("portfence-metrics.timer", os.path.join(SOURCE, "config", "systemd"))):
            with open(os.path.join(source, name)) as f:
                self.install(name, f.read())
        for name in ("portfence-metrics.service", "portfence-metrics.timer"):
            r = self.verify(name)
            self.assertEqual((r.returncode, r.stderr), (0, ""))

    def dropin(self, unit):
        r = portfence("export", "systemd-dropin", "-c", self.policy, unit)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_dropin_fences_before_the_main_process(self):
        text = self.dropin("demo.service")
        self.assertIn(f"ExecStartPre=+{configured_portfence()} cgroup attach", text)
        self.assertIn(f"cgroup attach -c {self.policy} pid:self", text)
        self.assertIn("ExecStopPost=-+", text)
        self.install("demo.service", "[Unit]\nDescription=demo\n[Service]\nExecStart=/bin/true\n")
        os.mkdir(os.path.join(self.dir, "demo.service.d"))
        self.install("demo.service.d/portfence.conf", text)
        r = self.verify("demo.service")
        self.assertEqual((r.returncode, r.stderr), (0, ""))

    def test_dropin_refuses_what_a_unit_cannot_hold(self):
        r = portfence("export", "systemd-dropin", "-c", self.policy, "a b.service")
        self.assertEqual(r.returncode, 2)
        self.assertIn("bad unit 'a b.service'", r.stderr)
        r = portfence("export", "systemd-dropin", "-c", self.policy)
        self.assertEqual((r.returncode, r.stderr.strip()), (2, "portfence: export systemd-dropin: no UNIT given"))
        r = portfence("export", "systemd-dropin", "-c", "/nonexistent.conf", "demo.service")
        self.assertEqual(r.returncode, 2)
        self.assertIn("/nonexistent.conf", r.stderr)
        self.assertEqual(r.stdout, "")


# ---- the hook and the agent on real cgroups (root) -----------------------------

def state(**fields):
    base = {"ociVersion": "1.0.2", "id": f"pf-test-{os.getpid()}", "status": "creating",
            "bundle": "/nonexistent", "annotations": {}}
    base.update(fields)
    return json.dumps(base)


class HookCommand(PolicyTest):
    """portfence oci-hook given a state by hand, for a process in a test cgroup."""
    POLICY = POLICY

    def setUp(self):
        super().setUp()
        reason = cgroup_skip_reason()
        if reason:
            self.skipTest(reason)
        self.cg = Cgroup()
        self.addCleanup(self.cg.cleanup)
        self.policies = tempfile.mkdtemp(prefix="pf-test-policies-")
        self.states = tempfile.mkdtemp(prefix="pf-test-states-")
        self.addCleanup(shutil.rmtree, self.policies)
        self.addCleanup(shutil.rmtree, self.states)
        os.chmod(self.states, 0o700)
        with open(os.path.join(self.policies, "open.conf"), "w") as f:
            f.write(OTHER_POLICY)
        with open(os.path.join(self.policies, "broken.conf"), "w") as f:
            f.write("version = 1;\nbogus = 1;\n")

    def hook(self, text):
        return portfence("oci-hook", "-c", self.policy, "--policy-dir", self.policies,
                         "--state-dir", self.states, input=text)

    def sleeper(self):
        return self.cg.popen("sleep", "60").pid

    def test_create_fences_the_cgroup_and_poststop_removes_it(self):
        pid = self.sleeper()
        r = self.hook(state(pid=pid))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(fenced_path(self.cg.path))
        self.assertEqual(self.cg.probe("tcp4", "bind", "127.0.0.1", "27001")[1], "bind -1 EADDRINUSE")
        r = portfence("cgroup", "status", "--probe", self.cg.path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("decided as the policy says", r.stdout)
        self.assertEqual(os.listdir(self.states), [f"pf-test-{os.getpid()}"])
        r = self.hook(state(status="stopped", pid=0))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(fenced_path(self.cg.path))
        self.assertEqual(os.listdir(self.states), [])
        # a second poststop (or one for a container never fenced) is no error
        self.assertEqual(self.hook(state(status="stopped")).returncode, 0)

    def test_annotation_names_a_policy_of_the_directory(self):
        pid = self.sleeper()
        r = self.hook(state(pid=pid, annotations={"io.portfence.policy": "open"}))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.cg.probe("tcp4", "bind", "127.0.0.1", "27001")[1], "bind 0 0")
        self.assertEqual(self.hook(state(status="stopped")).returncode, 0)

    def test_default_annotation_is_the_default_policy(self):
        pid = self.sleeper()
        r = self.hook(state(pid=pid, annotations={"io.portfence.policy": "default"}))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.cg.probe("tcp4", "bind", "127.0.0.1", "27001")[1], "bind -1 EADDRINUSE")
        self.assertEqual(self.hook(state(status="stopped")).returncode, 0)

    def assert_refused(self, text, message):
        r = self.hook(text)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(message, r.stderr)
        self.assertTrue(r.stderr.startswith("portfence: oci-hook: ") or r.stderr.startswith(self.policies),
                        r.stderr)
        self.assertFalse(fenced_path(self.cg.path))
        self.assertEqual(os.listdir(self.states), [])

    def test_bad_states_fail_closed(self):
        pid = self.sleeper()
        for text, message in (
                ("", "empty"),
                ("{", "a string expected at byte 1"),
                ('{"id": "x", "status": "creating", "pid": 1,}', "a string expected"),
                ('{"id": "x", "status": "creating", "pid": 1} x', "text after the object"),
                ('{"id": "x", "status": "creating", "pid": 1}\x00x', "text after the object"),
                ('{"id": "x", "status": "creating", "pid": 1.5}', "'pid' is not a process id"),
                ('{"id": "x", "status": "creating", "pid": -1}', "'pid' is not a process id"),
                ('{"id": "x", "status": "creating", "pid": %d, "pid": %d}' % (pid, pid), "'pid' given twice"),
                ('{"id": "x", "status": "creating"}', "no 'pid'"),
                ('{"id": "x", "pid": %d}' % pid, "no 'status'"),
                ('{"id": "x\\u0000y", "status": "creating", "pid": 1}', "NUL"),
                ('[' * 100, "an object expected"),
                ('{"a":' + '[' * 100 + ']' * 100 + '}', "nested deeper"),
                (state(pid=pid, status="running"), "status 'running'"),
                (state(pid=pid, id="../x"), "container id '../x' is not a name"),
                (state(pid=pid, id="a\nb"), "container id 'a\\x0ab'"),
                (state(pid=2 ** 22 + 1), "no such process"),
        ):
            with self.subTest(text=text[:40]):
                self.assert_refused(text, message)

    def test_bad_annotations_fail_closed(self):
        pid = self.sleeper()
        for name, message in (("../open", "never a path"), ("a/b", "never a path"), ("", "never a path"),
                              (".hidden", "never a path"), ("x" * 65, "never a path"),
                              ("missing", "cannot read '%s/missing.conf'" % self.policies),
                              ("broken", "broken.conf:2"),
                              ("\x1b[31mred", "'\\x1b[31mred'")):
            with self.subTest(name=name):
                self.assert_refused(state(pid=pid, annotations={"io.portfence.policy": name}), message)

    def test_root_cgroup_is_refused(self):
        with open("/proc/1/cgroup") as f:
            if "0::/\n" not in f.read():
                self.skipTest("pid 1 is not in the root cgroup here")
        self.assert_refused(state(pid=1), "runs in the root cgroup: refusing to fence the whole host")


class Guard(PolicyTest):
    """portfence cgroup guard: the node agent."""
    POLICY = POLICY

    def setUp(self):
        super().setUp()
        reason = cgroup_skip_reason()
        if reason:
            self.skipTest(reason)
        self.parent = Cgroup()
        self.addCleanup(self.parent.cleanup)

    def guard(self, *args, **kw):
        return self.start([BUILD["portfence"], "cgroup", "guard", *args], ready="/", **kw)

    def test_children_made_later_are_fenced_until_sigterm(self):
        g = self.guard("-c", self.policy, self.parent.path)
        self.assertEqual(g.lines[-1], f"{self.parent.path}: fenced with {self.policy}")
        pods = [Cgroup(self.parent) for _ in range(3)]
        for pod in pods:
            self.addCleanup(pod.cleanup)
            self.assertEqual(pod.probe("tcp4", "bind", "127.0.0.1", "27001")[1], "bind -1 EADDRINUSE")
        # the node agent's liveness check: a pod's binds are decided
        r = portfence("cgroup", "status", "--probe", pods[0].path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"fence of {self.parent.path}): decided as the policy says", r.stdout)
        g.proc.send_signal(signal.SIGTERM)
        out, err = g.proc.communicate(timeout=TIMEOUT)
        self.assertEqual((g.proc.returncode, out.strip(), err), (0, f"{self.parent.path}: detached", ""))
        self.assertFalse(fenced_path(self.parent.path))
        self.assertEqual(pods[0].probe("tcp4", "bind", "127.0.0.1", "27001")[1], "bind 0 0")

    def test_sighup_reloads_the_policy(self):
        policy = write_policy(POLICY)
        self.addCleanup(os.unlink, policy)
        g = self.guard("-c", policy, self.parent.path)
        pod = Cgroup(self.parent)
        self.addCleanup(pod.cleanup)
        self.assertEqual(pod.probe("tcp4", "bind", "127.0.0.1", "27001")[1], "bind -1 EADDRINUSE")
        with open(policy, "w") as f:
            f.write(OTHER_POLICY)
        g.proc.send_signal(signal.SIGHUP)
        self.assertEqual(g.proc.stdout.readline().strip(), f"{self.parent.path}: policy reloaded with {policy}")
        self.assertEqual(pod.probe("tcp4", "bind", "127.0.0.1", "27001")[1], "bind 0 0")
        # a broken policy is said, and the fence keeps the one it has
        with open(policy, "w") as f:
            f.write("version = 1;\nbogus = 1;\n")
        g.proc.send_signal(signal.SIGHUP)
        g.proc.send_signal(signal.SIGTERM)
        out, err = g.proc.communicate(timeout=TIMEOUT)
        self.assertIn(f"{policy}:2:", err)
        self.assertEqual(out.strip(), f"{self.parent.path}: detached")

    def test_a_killed_guard_leaves_the_fence_and_the_next_takes_it_over(self):
        g = self.guard("-c", self.policy, self.parent.path)
        g.proc.kill()
        g.proc.wait()
        self.assertTrue(fenced_path(self.parent.path))
        pod = Cgroup(self.parent)
        self.addCleanup(pod.cleanup)
        self.assertEqual(pod.probe("tcp4", "bind", "127.0.0.1", "27001")[1], "bind -1 EADDRINUSE")
        other = write_policy(OTHER_POLICY)
        self.addCleanup(os.unlink, other)
        g = self.guard("-c", other, self.parent.path)
        self.assertEqual(g.lines[-1], f"{self.parent.path}: fence taken over with {other}")
        self.assertEqual(pod.probe("tcp4", "bind", "127.0.0.1", "27001")[1], "bind 0 0")
        g.proc.send_signal(signal.SIGTERM)
        g.proc.communicate(timeout=TIMEOUT)
        self.assertFalse(fenced_path(self.parent.path))

    def test_keep_leaves_the_fence(self):
        g = self.guard("--keep", "-c", self.policy, self.parent.path)
        g.proc.send_signal(signal.SIGTERM)
        out, _ = g.proc.communicate(timeout=TIMEOUT)
        self.assertEqual(out.strip().splitlines()[-1], f"{self.parent.path}: fence kept (--keep)")
        self.assertTrue(fenced_path(self.parent.path))

    def test_usage(self):
        for args, message in ((["-c", self.policy], "give a cgroup PATH or --kubepods"),
                              (["--kubepods", "-c", self.policy, self.parent.path], "give a cgroup PATH or --kubepods"),
                              (["-c", self.policy, cgroup_mount()], "--whole-host"),
                              (["-c", "/nonexistent.conf", self.parent.path], "/nonexistent.conf")):
            r = portfence("cgroup", "guard", *args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(message, r.stderr)
        self.assertFalse(fenced_path(self.parent.path))

    def test_kubepods_found_in_a_cgroup_namespace(self):
        """The agent names the pod root in its cgroup namespace: here a private
        one rooted at a test cgroup, with a kubepods.slice made in it."""
        mount = cgroup_mount()
        pods = os.path.join(self.parent.path, "kubepods.slice")
        script = (f"echo $$ > {self.parent.path}/cgroup.procs && exec unshare --cgroup --mount sh -c '"
                  f"umount -l {mount} && mount -t cgroup2 none {mount} && mkdir {mount}/kubepods.slice && "
                  f"exec {BUILD['portfence']} cgroup guard --kubepods -c {self.policy}'")
        g = self.start(["sh", "-c", script], ready=mount)
        self.addCleanup(lambda: os.path.isdir(pods) and os.rmdir(pods))
        self.assertEqual(g.lines[-1], f"{mount}/kubepods.slice: fenced with {self.policy}")
        self.assertTrue(fenced_path(pods))      # the host's name of the same cgroup
        g.proc.send_signal(signal.SIGTERM)
        g.proc.communicate(timeout=TIMEOUT)
        self.assertFalse(fenced_path(pods))

    def test_kubepods_missing_is_said(self):
        mount = cgroup_mount()
        if any(os.path.isdir(os.path.join(mount, n)) for n in ("kubepods", "kubepods.slice")):
            self.skipTest("this host is a Kubernetes node")
        r = portfence("cgroup", "guard", "--kubepods", "-c", self.policy)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a Kubernetes node, or this process is not in the host's cgroup namespace", r.stderr)


class ScanAllNamespaces(PolicyTest):
    POLICY = POLICY.replace("27000-27099", "27000-27099,33000-33099")

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root")

    def test_a_server_in_another_namespace_is_found_with_it(self):
        p = self.start(["unshare", "--net", "sh", "-c",
                        f"ip link set lo up && exec {BUILD['probe']} tcp4 bind 127.0.0.1 27020 listen ready wait"],
                       ready="ready")
        ns = os.stat(f"/proc/{p.proc.pid}/ns/net").st_ino
        r = portfence("scan", "--all-netns", "--json", "-c", self.policy)
        self.assertEqual(r.returncode, 1, r.stderr)
        found = [f for f in json.loads(r.stdout) if f["port"] == 27020 and f["netns"]["inode"] == ns]
        self.assertEqual(len(found), 1, r.stdout)
        # the namespace's first process is the probe's shell, exec'd into the probe
        self.assertEqual(found[0]["netns"]["pid"], p.proc.pid)
        with open(f"/proc/{p.proc.pid}/cgroup") as f:
            self.assertIn("0::" + found[0]["netns"]["cgroup"], f.read())
        self.assertEqual(found[0]["kind"], "server-in-ephemeral")
        # this namespace's own scan does not see it; the text names the namespace
        r = portfence("scan", "--json", "-c", self.policy)
        self.assertFalse([f for f in json.loads(r.stdout) if f["port"] == 27020])
        r = portfence("scan", "--all-netns", "-c", self.policy)
        self.assertIn(f"netns {ns} (pid {p.proc.pid}, cgroup ", r.stdout)

    def test_reservations_are_read_per_namespace(self):
        script = ("ip link set lo up && echo 27021 > /proc/sys/net/ipv4/ip_local_reserved_ports && "
                  f"exec {BUILD['probe']} tcp4 bind 127.0.0.1 27021 listen ready wait")
        p = self.start(["unshare", "--net", "sh", "-c", script], ready="ready")
        ns = os.stat(f"/proc/{p.proc.pid}/ns/net").st_ino
        r = portfence("scan", "--all-netns", "--json", "-c", self.policy)
        self.assertFalse([f for f in json.loads(r.stdout or "[]") if f["port"] == 27021 and f["netns"]["inode"] == ns],
                         r.stdout)

    def test_needs_root(self):
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            BUILD["portfence"], "scan", "--all-netns"], capture_output=True, text=True,
                           env=base_env(), timeout=TIMEOUT)
        self.assertEqual((r.returncode, r.stderr.strip()),
                         (2, "portfence: scan: --all-netns needs root (entering a namespace takes CAP_SYS_ADMIN)"))


# ---- podman and runc ---------------------------------------------------------------

PODMAN_RUN = ["run", "--rm", "--runtime", "runc", "--cgroup-manager=cgroupfs", "--network", "none",
              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def podman_skip_reason():
    reason = cgroup_skip_reason()
    if reason:
        return reason
    for program in ("podman", "runc"):
        if not shutil.which(program):
            return f"{program} is not installed"
    if not PROBE_STATIC:
        return "no static probe in this build"
    return None


class Containers(PolicyTest):
    """Real containers: podman with runc, a rootfs of the static probe alone,
    each below a parent cgroup this test makes."""
    POLICY = POLICY
    rootfs = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.skip = podman_skip_reason()
        if cls.skip:
            return
        cls.rootfs = tempfile.mkdtemp(prefix="pf-test-rootfs-")
        os.mkdir(os.path.join(cls.rootfs, "bin"))
        shutil.copy(PROBE_STATIC, os.path.join(cls.rootfs, "bin", "probe"))
        r = subprocess.run(["podman", *PODMAN_RUN, "--rootfs", cls.rootfs, "/bin/probe", "tcp4"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or r.stdout != "tcp4 0 0\n":
            cls.skip = "podman cannot run a container here: " + r.stderr.strip()[-300:]

    @classmethod
    def tearDownClass(cls):
        if cls.rootfs:
            shutil.rmtree(cls.rootfs)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if self.skip:
            self.skipTest(self.skip)
        self.name = f"pf-test-{os.getpid()}-{self._testMethodName[5:25]}"
        self.parent = f"/{self.name}"
        self.addCleanup(self.remove_parent)
        self.hooks = tempfile.mkdtemp(prefix="pf-test-hooks-")
        self.states = tempfile.mkdtemp(prefix="pf-test-states-")
        self.policies = tempfile.mkdtemp(prefix="pf-test-policies-")
        for d in (self.hooks, self.states, self.policies):
            self.addCleanup(shutil.rmtree, d)
        os.chmod(self.states, 0o700)

    def remove_parent(self):
        """podman with cgroupfs makes the parent (and conmon's cgroup below it)
        in v2 and in every v1 hierarchy."""
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if " - cgroup" in line]
        for mount in mounts:
            for below, _, _ in os.walk(mount + self.parent, topdown=False):
                for _ in range(100):
                    try:
                        os.rmdir(below)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)

    def install_hook(self, name="portfence.json", extra=()):
        """The shipped hook JSON, run from this build with the test's dirs."""
        with open(os.path.join(CONFIG_BUILD, name)) as f:
            hook = json.load(f)
        hook["hook"]["path"] = BUILD["portfence"]
        hook["hook"]["args"] += ["-c", self.policy, "--policy-dir", self.policies,
                                 "--state-dir", self.states, *extra]
        hook["hook"]["env"] = [f"{k}={v}" for k, v in os.environ.items() if k.endswith("SAN_OPTIONS")]
        with open(os.path.join(self.hooks, "portfence.json"), "w") as f:
            json.dump(hook, f)

    def podman(self, *args, annotation=None, hooks=True, options=(), network="none", global_options=()):
        run = [network if word == "none" else word for word in PODMAN_RUN]
        cmd = ["podman", *global_options] + (["--hooks-dir", self.hooks] if hooks else []) + run + \
            list(options) + ["--name", self.name, "--cgroup-parent", self.parent]
        if annotation is not None:
            cmd += ["--annotation", f"io.portfence.policy={annotation}"]
        return cmd + ["--rootfs", self.rootfs] + list(args)

    def run_container(self, *args, **kw):
        return subprocess.run(self.podman(*args, **kw), capture_output=True, text=True, timeout=120)

    def container_cgroup(self, pid):
        with open(f"/proc/{pid}/cgroup") as f:
            below = [line[3:].strip() for line in f if line.startswith("0::")][0]
        return cgroup_mount() + below

    def test_hook_fences_from_the_first_instruction_and_leaves_nothing(self):
        self.install_hook()
        r = self.run_container("/bin/probe", "tcp4", "bind", "0.0.0.0", "27001",
                               "tcp4", "bind", "0.0.0.0", "27200", annotation="default")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), ["tcp4 0 0", "bind -1 EADDRINUSE", "tcp4 0 0", "bind 0 0"])
        # remapped: held at the target while it runs; then nothing is left
        c = self.start(self.podman("/bin/probe", "tcp4", "bind", "127.0.0.1", "27010", "listen",
                                   "ready", "wait", annotation="default", options=["-i"]), ready="ready")
        pid = int(subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", self.name],
                                 capture_output=True, text=True, timeout=60).stdout)
        path = self.container_cgroup(pid)
        self.assertTrue(path.startswith(cgroup_mount() + self.parent + "/"))
        self.assertEqual(listening_ports(pid), {27510})
        fence = [f for f in json.loads(portfence("cgroup", "status", "--json").stdout) if f["cgroup"] == path]
        self.assertEqual(len(fence), 1)
        self.assertEqual(os.listdir(self.states), [os.listdir(self.states)[0]])
        c.finish()
        self.assertEqual(c.proc.returncode, 0)
        self.assertNotIn(fence[0]["cgroup_id"], fence_ids())
        self.assertEqual(os.listdir(self.states), [])

    def test_hook_fences_hold_beside_other_fences(self):
        """In the container's own cgroup namespace (as Docker, containerd and
        LXC run them on cgroup v2), with other fences on the host."""
        others = [Cgroup() for _ in range(2)]
        for other in others:
            self.addCleanup(other.cleanup)
            self.assertEqual(other.attach(self.policy).returncode, 0)
        self.install_hook()
        r = self.run_container("/bin/probe", "tcp4", "bind", "0.0.0.0", "27001", annotation="default",
                               options=["--cgroupns=private"])
        self.assertEqual(r.stdout.splitlines(), ["tcp4 0 0", "bind -1 EADDRINUSE"], r.stderr)

    def test_attach_from_the_containers_cgroup_namespace(self):
        """A fence made by a command in the container's cgroup namespace, where
        the container's cgroup is the root of the tree it sees, holds beside
        other fences on the host."""
        other = Cgroup()
        self.addCleanup(other.cleanup)
        self.assertEqual(other.attach(self.policy).returncode, 0)
        c = self.start(self.podman("/bin/probe", "tcp4", "bind", "127.0.0.1", "27200", "listen", "ready", "wait",
                                   hooks=False, options=["-i", "--cgroupns=private"]), ready="ready")
        pid = int(subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", self.name],
                                 capture_output=True, text=True, timeout=60).stdout)
        mount = cgroup_mount()
        inside = (f"umount -l {mount} && mount -t cgroup2 none {mount} && "
                  f"exec {BUILD['portfence']} cgroup attach --whole-host -c {self.policy} {mount}")
        r = subprocess.run(["nsenter", "--cgroup", "-t", str(pid), "unshare", "--mount", "sh", "-euc", inside],
                           capture_output=True, text=True, env=base_env(), timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        path = self.container_cgroup(pid)
        self.addCleanup(portfence, "cgroup", "detach", path)
        r = subprocess.run(["podman", "exec", self.name, "/bin/probe", "tcp4", "bind", "0.0.0.0", "27001"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.stdout.splitlines(), ["tcp4 0 0", "bind -1 EADDRINUSE"], r.stderr)
        self.assertEqual(portfence("cgroup", "status", "--probe", path).returncode, 0)
        self.assertEqual(portfence("cgroup", "detach", path).returncode, 0)
        c.finish()

    def test_a_published_port_reaches_a_moved_server(self):
        """The shipped policy moves a container's server off a port of its
        ephemeral range; its published port and its own address still reach
        it at that port: the hook's fence steers in the container's network
        namespace."""
        self.install_hook("portfence-always.json")
        shutil.copy(SHIPPED, os.path.join(self.policies, "shipped.conf"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            host_port = s.getsockname()[1]
        c = self.start(self.podman("/bin/probe", "tcp4", "bind", "0.0.0.0", "40000", "listen", "ready",
                                   "accept", "recv", "sockname", "fd", "3", "accept", "recv", "wait",
                                   annotation="shipped", network="bridge",
                                   options=["-i", "-p", f"127.0.0.1:{host_port}:40000"]), ready="ready")
        address = subprocess.run(["podman", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", self.name],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        self.assertTrue(address, "no container address")
        for destination in (("127.0.0.1", host_port), (address, 40000)):
            with self.subTest(destination=destination):
                with socket.create_connection(destination, timeout=10) as client:
                    client.sendall(b"hi")
        lines, err = c.finish()
        self.assertEqual(lines[lines.index("ready") + 1:],
                         ["accept 0 0", "recv 2 0 hi", f"sockname 0 0 {address} 40000",
                          "accept 0 0", "recv 2 0 hi"], err)

    def test_a_published_udp_port_reaches_a_moved_server(self):
        """The same for UDP: datagrams to the published port and to the
        container's address reach the moved server, and its answers come
        back from the port they went to (connected clients take no other)."""
        self.install_hook("portfence-always.json")
        shutil.copy(SHIPPED, os.path.join(self.policies, "shipped.conf"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            host_port = s.getsockname()[1]
        c = self.start(self.podman("/bin/probe", "udp4", "bind", "0.0.0.0", "40001", "sockname", "ready",
                                   "echo", "echo", "wait", annotation="shipped", network="bridge",
                                   options=["-i", "-p", f"127.0.0.1:{host_port}:40001/udp"]), ready="ready")
        inspect = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}} {{.NetworkSettings.IPAddress}}",
                                  self.name], capture_output=True, text=True, timeout=60).stdout.split()
        self.assertEqual(len(inspect), 2, "no container address")
        pid, address = int(inspect[0]), inspect[1]
        moved = listening_ports(pid, "udp")
        self.assertEqual(len(moved), 1, moved)
        self.assertNotIn(40001, moved)
        for destination in (("127.0.0.1", host_port), (address, 40001)):
            with self.subTest(destination=destination):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                    client.settimeout(10)
                    client.connect(destination)
                    client.send(b"hi")
                    self.assertEqual(client.recv(2), b"hi")
        lines, err = c.finish()
        self.assertIn("sockname 0 0 0.0.0.0 40001", lines, err)
        self.assertEqual(len([line for line in lines if line.startswith("echo 2 0 ")]), 2, lines)

    def test_hook_reserves_server_ports_in_the_containers_namespace(self):
        """From its first instruction, a container's ip_local_reserved_ports
        holds every port the policy gives a server inside its range (an
        allowed port, a remap target); one on the host's network is left
        alone: the host's reservations are the administrator's."""
        self.install_hook("portfence-always.json")
        with open(os.path.join(self.policies, "reserve.conf"), "w") as f:
            f.write('version = 1;\nephemeral = "40000-40099";\ndefault_action = "refuse";\n'
                    'rules = ( { ports = "40005"; action = "allow"; },\n'
                    '          { ports = "40010"; action = "remap"; to = 45000; } );\n')
        for network in ("none", "bridge"):
            with self.subTest(network=network):
                r = self.run_container("/bin/probe", "cat", "/proc/sys/net/ipv4/ip_local_reserved_ports",
                                       annotation="reserve", network=network)
                self.assertEqual(r.stdout, "cat 0 0 40005,45000\n", r.stderr)
        # a policy whose server ports are outside the container's range: nothing
        r = self.run_container("/bin/probe", "cat", "/proc/sys/net/ipv4/ip_local_reserved_ports",
                               annotation="default")
        self.assertEqual(r.stdout, "cat 0 0 \n", r.stderr)
        with open("/proc/sys/net/ipv4/ip_local_reserved_ports") as f:
            host_before = f.read()
        r = self.run_container("/bin/probe", "cat", "/proc/sys/net/ipv4/ip_local_reserved_ports",
                               annotation="reserve", network="host")
        self.assertEqual(r.stdout, f"cat 0 0 {host_before.strip()}\n", r.stderr)
        with open("/proc/sys/net/ipv4/ip_local_reserved_ports") as f:
            self.assertEqual(f.read(), host_before)

    def test_a_cni_network_with_the_exported_entry_reserves_in_every_container(self):
        """'export cni' for the tuning plugin: every container of a network
        whose configuration has the entry starts with the reservation, with
        no hook."""
        policy = write_policy('version = 1;\nephemeral = "40000-40099";\ndefault_action = "refuse";\n'
                              'rules = ( { ports = "40005"; action = "allow"; },\n'
                              '          { ports = "40010"; action = "remap"; to = 45000; } );\n')
        self.addCleanup(os.unlink, policy)
        r = portfence("export", "cni", "-c", policy)
        self.assertEqual(r.returncode, 0, r.stderr)
        network, bridge = f"pf-test-{os.getpid()}", f"pfcni{os.getpid() % 10000}"
        config_dir = tempfile.mkdtemp(prefix="pf-test-cni-")
        self.addCleanup(shutil.rmtree, config_dir)
        self.addCleanup(shutil.rmtree, f"/var/lib/cni/networks/{network}", ignore_errors=True)
        self.addCleanup(subprocess.run, ["ip", "link", "del", bridge], capture_output=True)
        with open(os.path.join(config_dir, "90-pf-test.conflist"), "w") as f:
            json.dump({"cniVersion": "0.4.0", "name": network, "plugins": [
                {"type": "bridge", "bridge": bridge,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.252.7.0/24"}]]}},
                json.loads(r.stdout)]}, f)
        r = self.run_container("/bin/probe", "cat", "/proc/sys/net/ipv4/ip_local_reserved_ports", hooks=False,
                               network=network, global_options=["--network-config-dir", config_dir])
        self.assertEqual(r.stdout, "cat 0 0 40005,45000\n", r.stderr)

    def test_opt_in_hook_leaves_other_containers_alone(self):
        self.install_hook()
        r = self.run_container("/bin/probe", "tcp4", "bind", "0.0.0.0", "27001")
        self.assertEqual(r.stdout.splitlines()[1], "bind 0 0", r.stderr)

    def test_always_hook_and_a_named_policy(self):
        self.install_hook("portfence-always.json")
        r = self.run_container("/bin/probe", "tcp4", "bind", "0.0.0.0", "27001")
        self.assertEqual(r.stdout.splitlines()[1], "bind -1 EADDRINUSE", r.stderr)
        with open(os.path.join(self.policies, "open.conf"), "w") as f:
            f.write(OTHER_POLICY)
        r = self.run_container("/bin/probe", "tcp4", "bind", "0.0.0.0", "27001", annotation="open")
        self.assertEqual(r.stdout.splitlines()[1], "bind 0 0", r.stderr)

    def test_bad_annotation_or_policy_keeps_the_container_from_starting(self):
        self.install_hook()
        with open(os.path.join(self.policies, "broken.conf"), "w") as f:
            f.write("version = 1;\nbogus = 1;\n")
        for annotation, message in (("../etc/passwd", "never a path"), ("missing", "missing.conf"),
                                    ("broken", "broken.conf:2")):
            with self.subTest(annotation=annotation):
                r = self.run_container("/bin/probe", "tcp4", "bind", "0.0.0.0", "27200", annotation=annotation)
                self.assertNotEqual(r.returncode, 0)
                self.assertNotIn("bind", r.stdout)      # the program never ran
                self.assertIn(message, r.stderr)
        self.assertEqual(fences_below(cgroup_mount() + self.parent), [])
        self.assertEqual(os.listdir(self.states), [])

    def test_guard_fences_containers_started_below_it(self):
        os.mkdir(cgroup_mount() + self.parent)
        g = self.start([BUILD["portfence"], "cgroup", "guard", "-c", self.policy, cgroup_mount() + self.parent],
                       ready="/")
        for _ in range(3):
            r = self.run_container("/bin/probe", "tcp4", "bind", "0.0.0.0", "27001", hooks=False)
            self.assertEqual(r.stdout.splitlines(), ["tcp4 0 0", "bind -1 EADDRINUSE"], r.stderr)
        g.proc.send_signal(signal.SIGTERM)
        g.proc.communicate(timeout=TIMEOUT)
        self.assertEqual(g.proc.returncode, 0)
        self.assertFalse(fenced_path(cgroup_mount() + self.parent))
        r = self.run_container("/bin/probe", "tcp4", "bind", "0.0.0.0", "27001", hooks=False)
        self.assertEqual(r.stdout.splitlines()[1], "bind 0 0", r.stderr)


class BootedSystemd(unittest.TestCase):
    """The drop-in under a real systemd: this host's own root (an overlay, so
    nothing is written to it) booted with systemd as PID 1 in a privileged
    podman container, a oneshot unit whose program binds at once."""
    POLICY = 'version = 1;\nephemeral = "27000-27099";\ndefault_action = "refuse";\n'

    def setUp(self):
        reason = podman_skip_reason()
        if not reason and not os.path.exists("/lib/systemd/systemd"):
            reason = "no /lib/systemd/systemd to boot"
        if reason:
            self.skipTest(reason)
        self.name = f"pf-test-{os.getpid()}-systemd"
        self.boot = subprocess.Popen(
            ["podman", *PODMAN_RUN, "--name", self.name, "--privileged", "--systemd=always",
             "--tmpfs", "/tmp:rw,notmpcopyup", "--tmpfs", "/run:rw,notmpcopyup",
             "--tmpfs", "/run/lock:rw,notmpcopyup",
             # the build may be below /tmp, which the container has a tmpfs of
             "--volume", f"{BUILD_ROOT}:{BUILD_ROOT}:ro", "--rootfs", "/:O", "/lib/systemd/systemd"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(self.boot.communicate, timeout=60)      # cleanups run last first:
        self.addCleanup(subprocess.run, ["podman", "rm", "-f", "-t", "0", self.name], capture_output=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            state = self.exec("systemctl is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return
            if self.boot.poll() is not None:
                self.skipTest("systemd cannot boot in a container here: " + self.boot.stderr.read()[-300:])
            time.sleep(0.5)
        self.fail(f"systemd did not finish booting: {state}")

    def exec(self, script, **kw):
        return subprocess.run(["podman", "exec", "-i", self.name, "sh", "-c", script], capture_output=True,
                              text=True, timeout=TIMEOUT, **kw)

    def test_unit_fenced_from_its_first_bind(self):
        self.exec("cat > /etc/pf-test.conf", input=self.POLICY)
        # made inside, where the policy is (export checks it)
        r = self.exec(f"{BUILD['portfence']} export systemd-dropin -c /etc/pf-test.conf pf-demo.service")
        self.assertEqual(r.returncode, 0, r.stderr)
        text = re.sub(r"/\S+/bin/portfence", BUILD["portfence"], r.stdout)
        unit = ("[Service]\nType=oneshot\nStandardOutput=append:/run/pf-demo.out\n"
                f"ExecStart={PROBE_STATIC} tcp4 bind 127.0.0.1 27001 tcp4 bind 127.0.0.1 27200\n")
        self.exec("mkdir -p /etc/systemd/system/pf-demo.service.d && mount -t bpf bpf /sys/fs/bpf")
        self.exec("cat > /etc/systemd/system/pf-demo.service", input=unit)
        self.exec("cat > /etc/systemd/system/pf-demo.service.d/portfence.conf", input=text)
        r = self.exec("systemctl daemon-reload && systemctl start pf-demo.service")
        self.assertEqual(r.returncode, 0, r.stderr + self.exec("journalctl -u pf-demo --no-pager").stdout)
        out = self.exec("cat /run/pf-demo.out").stdout.splitlines()
        # the first bind of the unit's program is refused, the unguarded one not
        self.assertEqual([line for line in out if line.startswith("bind")], ["bind -1 EADDRINUSE", "bind 0 0"],
                         out)
        self.assertTrue(any(line.endswith("system.slice/pf-demo.service: fenced with /etc/pf-test.conf")
                            for line in out), out)
        self.assertTrue(any(line.endswith("system.slice/pf-demo.service: detached") for line in out), out)
        self.assertEqual(self.exec("ls -A /sys/fs/bpf/portfence").stdout, "")


if __name__ == "__main__":
    main({"cgroup": ["HookCommand", "Guard", "ScanAllNamespaces"], "podman": ["Containers"],
          "systemd": ["SystemdUnits"], "systemd-boot": ["BootedSystemd"]})
