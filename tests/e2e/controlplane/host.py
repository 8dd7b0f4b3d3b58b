"""What a real node changes on the host, and how the suite puts it all back.

A kubelet with containerd, the reference CNI plugins and kube-proxy cannot run without touching the
machine: a bridge, iptables chains (kube-proxy's ``KUBE-*``, the CNI plugins' ``CNI-*``), cgroups,
network namespaces and mounts, ``/var/log/containers`` links, sysctls (``ip_forward``; the kubelet's
``vm.overcommit_memory``, ``kernel.panic``, ...). Everything the node needs that can live in the
suite's work directory does (containerd's root, state and socket, the kubelet's root dir and pod logs,
the CNI configuration and IP allocations). For the rest, ``Snapshot.take`` records the host before
the node starts, ``Snapshot.restore`` removes what appeared since (only that: another developer's
state is never touched) and ``Snapshot.leftovers`` lists anything still different, which the suite
reports as a failure.

The names are chosen not to clash with anything else on a shared machine: bridge ``kag-node0``, pod
subnet ``10.213.0.0/24``, cgroup root ``kag-node-e2e``.

``ensure_packages`` installs the Debian packages a node needs (root and apt-get; ``apt-get update``
first); without them the suite is unavailable (skipped locally, a failure under ``CI``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests import gotools

BRIDGE = "kag-node0"
POD_SUBNET = "10.213.0.0/24"
GATEWAY = "10.213.0.1"  # the bridge's address: the node's InternalIP, where the apiserver reaches the kubelet
PREFIX_LENGTH = 24
CGROUP_ROOT = "kag-node-e2e"  # the kubelet's cgroupRoot: every pod's cgroup lives under it
# The image build's dockerd puts its containers under a cgroup of its own: this prefix and the
# build's scratch directory name, so that a teardown only ever touches its own build's cgroups.
BUILD_CGROUP_PREFIX = "kag-node-e2e-build"
CGROUP_FS = Path("/sys/fs/cgroup")

# containerd, runc, the CNI plugins and iptables for the node; docker.io and debootstrap to build the
# guard's image from its Dockerfile on a base image made locally (controlplane.images).
PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "conntrack",
    "iptables",
    "iproute2",
    "docker.io",
    "debootstrap",
    "gcc",
    "libc6-dev",
)
# What the kubelet, kube-proxy and the bridge plugin may change; restored to the recorded values.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv4/conf/all/forwarding",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Host directories the node writes into whatever its configuration says (containerd's shim sockets,
# CRI's network namespaces, libcni's result cache, the kubelet's /var/log/containers links). New
# entries are removed; the directory itself only when the node created it.
STATE_DIRS = (
    Path("/run/containerd"),
    Path("/run/netns"),
    Path("/var/lib/cni"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/var/lib/kubelet"),
    Path("/etc/cni"),
    Path("/run/docker"),  # the image build's dockerd: plugin sockets, its identity key
    Path("/etc/docker"),
    Path("/var/lib/docker"),
)
IPTABLES = ("iptables", "ip6tables")


class HostUnavailable(Exception):
    """The host cannot run a node (not root, no apt-get, a package failed); the message says why."""


def run(*command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=timeout)


def missing_packages(packages: Iterable[str] = PACKAGES) -> list[str]:
    missing = []
    for package in packages:
        found = run("dpkg-query", "-W", "-f=${Status}", package, check=False)
        if found.returncode != 0 or "install ok installed" not in found.stdout:
            missing.append(package)
    return missing


def ensure_packages(progress: Callable[[str], None], packages: Iterable[str] = PACKAGES) -> None:
    """Install the missing Debian packages (root and apt-get needed), or say why they cannot be."""
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        raise HostUnavailable("a real node needs a Debian host with apt-get (no dpkg-query/apt-get here)")
    missing = missing_packages(packages)
    if not missing:
        return
    if os.geteuid() != 0:
        raise HostUnavailable(
            f"a real node needs root (to install {' '.join(missing)}, start containerd and a kubelet, "
            "change iptables); run as root, or install them: apt-get install " + " ".join(missing)
        )
    progress(f"installing Debian packages: {' '.join(missing)}")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise HostUnavailable(f"{' '.join(command)} failed ({result.returncode}):\n{tail}")


def require_root() -> None:
    if os.geteuid() != 0:
        raise HostUnavailable(
            "a real node needs root (containerd, a kubelet, iptables, a bridge); run the suite as root"
        )


# --- the bridge ---------------------------------------------------------------------------------


def create_bridge() -> None:
    """The pods' bridge with the gateway address, before the apiserver starts (it dials the kubelet
    there). The CNI bridge plugin finds it and attaches the pods' veths."""
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{GATEWAY}/{PREFIX_LENGTH}", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def delete_bridge() -> None:
    if bridge_exists():
        run("ip", "link", "delete", BRIDGE, check=False)


# --- cgroups --------------------------------------------------------------------------------------


def cgroup_hierarchies(*, controllers_only: bool = False) -> list[Path]:
    """The mounted cgroup hierarchies (cgroup v2: the one unified tree). On a hybrid v1 host runc and
    the kubelet also mirror their cgroups into ``unified``, which has no controllers."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]
    return sorted(
        p
        for p in CGROUP_FS.iterdir()
        if p.is_dir() and not p.is_symlink() and not (controllers_only and p.name == "unified")
    )


def create_cgroup_root() -> None:
    """The kubelet's ``cgroupRoot`` must exist; cpuset needs its cpus and mems before children work."""
    for hierarchy in cgroup_hierarchies(controllers_only=True):
        path = hierarchy / CGROUP_ROOT
        path.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


def cgroup_dirs(name: str = CGROUP_ROOT) -> list[Path]:
    return [h / name for h in cgroup_hierarchies() if (h / name).exists()]


def cgroup_tree(root: Path) -> list[Path]:
    """Every cgroup directory under ``root``, deepest first. The kubelet and containerd create and
    remove cgroups while this walks (a container exiting during teardown), so a directory that vanishes
    mid-walk is skipped: ``os.walk`` ignores scandir errors, where ``Path.rglob`` raises them."""
    found = [Path(top) / d for top, dirs, _ in os.walk(root) for d in dirs]
    return sorted(found, key=lambda p: -len(p.parts))


def cgroup_processes(name: str = CGROUP_ROOT) -> set[int]:
    found: set[int] = set()
    for root in cgroup_dirs(name):
        for cgroup in [root, *cgroup_tree(root)]:
            with contextlib.suppress(OSError):
                found.update(int(line) for line in (cgroup / "cgroup.procs").read_text().split())
    return found


def kill_cgroup_processes(name: str = CGROUP_ROOT, timeout: float = 15.0) -> None:
    """SIGKILL every process left in the cgroup tree ``name`` (the containers), until none is left."""
    deadline = time.monotonic() + timeout
    while (pids := cgroup_processes(name)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def remove_cgroups(name: str = CGROUP_ROOT, timeout: float = 15.0) -> None:
    """rmdir the cgroup tree ``name``, deepest first (a cgroup dies when it is empty)."""
    deadline = time.monotonic() + timeout
    while (roots := cgroup_dirs(name)) and time.monotonic() < deadline:
        for root in roots:
            for path in cgroup_tree(root):
                with contextlib.suppress(OSError):
                    path.rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()
        if cgroup_dirs(name):
            time.sleep(0.2)


def remove_stale() -> list[str]:
    """What a node killed without its teardown (SIGKILL, power loss) left with names only this suite's
    node uses: the bridge, and *empty* cgroups under its cgroup root. Called under ``exclusive``, so no
    live node owns them; no process is ever killed here (a live one would not be ours to kill)."""
    found = []
    if bridge_exists():
        found.append(f"bridge {BRIDGE}")
        delete_bridge()
    if cgroup_dirs(CGROUP_ROOT) and not cgroup_processes(CGROUP_ROOT):
        found.append(f"cgroup tree {CGROUP_ROOT}")
        remove_cgroups(CGROUP_ROOT, timeout=2.0)
    return found


def lock_file() -> Path:
    return gotools.cache_root() / ".e2e-node.lock"


@contextlib.contextmanager
def exclusive(progress: Callable[[str], None]) -> Iterator[None]:
    """One session at a time changes this host: a node (bridge, cgroup root, Service routes, iptables
    chains) or the image build's dockerd (whose snapshot must not see a node's rules appear). A
    second session (another worktree's make e2e-node) waits for the first to finish."""
    path = lock_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"another session is changing this host (lock {path}): waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- mounts ---------------------------------------------------------------------------------------


def mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        points.append(point.encode().decode("unicode_escape"))  # \040 for spaces
    return points


def unmount(points: Iterable[str]) -> None:
    for point in sorted(set(points), key=lambda p: -len(p)):
        run("umount", "--lazy", point, check=False)


# --- iptables -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """``iptables-save``'s view of one family: per table, its chains and its rules."""

    chains: dict[str, set[str]]
    rules: dict[str, list[str]]

    @staticmethod
    def read(family: str) -> Rules:
        saved = run(f"{family}-save", check=False).stdout
        chains: dict[str, set[str]] = {}
        rules: dict[str, list[str]] = {}
        table = ""
        for line in saved.splitlines():
            if line.startswith("*"):
                table = line[1:]
                chains[table], rules[table] = set(), []
            elif line.startswith(":"):
                chains[table].add(line[1:].split()[0])
            elif line.startswith("-A "):
                rules[table].append(line)
        return Rules(chains, rules)


# What the node's parts name their chains (kube-proxy and the kubelet: KUBE-*, the CNI plugins:
# CNI-*, dockerd: DOCKER*) and what their rules mention: only such rules are ever removed or reported.
OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-", "DOCKER")
OUR_RULE_MARKS = (*OUR_CHAIN_PREFIXES, BRIDGE, POD_SUBNET)


def ours(rule: str) -> bool:
    return any(mark in rule for mark in OUR_RULE_MARKS)


def new_chains(now: Rules, before: Rules, table: str) -> set[str]:
    added = now.chains[table] - before.chains.get(table, set())
    return {c for c in added if c.startswith(OUR_CHAIN_PREFIXES)}


def undo_rules(family: str, before: Rules) -> None:
    """Delete the node's rules and chains that appeared since ``before`` (and only those)."""
    now = Rules.read(family)
    for table, rules in now.rules.items():
        old = set(before.rules.get(table, []))
        added = new_chains(now, before, table)
        for rule in rules:
            if rule not in old and ours(rule) and rule.split()[1] not in added:
                run(family, "-t", table, "-D", *shlex.split(rule)[1:], check=False)
        for chain in added:
            run(family, "-t", table, "-F", chain, check=False)
        for chain in added:
            run(family, "-t", table, "-X", chain, check=False)


def rule_changes(family: str, before: Rules) -> list[str]:
    now = Rules.read(family)
    changes = []
    for table in now.chains:
        changes += [f"{family} -t {table}: new chain {c}" for c in sorted(new_chains(now, before, table))]
        old = set(before.rules.get(table, []))
        changes += [
            f"{family} -t {table}: new rule {r}" for r in now.rules[table] if r not in old and ours(r)
        ]
    return changes


# --- sysctls and state directories --------------------------------------------------------------


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        path = Path("/proc/sys") / name
        with contextlib.suppress(OSError):
            values[name] = path.read_text().strip()
    return values


def restore_sysctls(values: dict[str, str]) -> list[str]:
    """Write back the values ``read_sysctls`` saw (a kubelet sets vm.overcommit_memory, kernel.panic, …
    on the host, also from inside a kind node); one note per sysctl changed."""
    notes = []
    for name, value in values.items():
        path = Path("/proc/sys") / name
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value)
                notes.append(f"sysctl {name} restored to {value}")
    return notes


def listing(directory: Path) -> set[Path]:
    if not directory.exists():
        return set()
    found = {directory}
    with contextlib.suppress(OSError):
        found.update(directory.rglob("*"))
    return found


def listening(path: Path) -> bool:
    """A unix socket something still accepts connections on."""
    if not path.is_socket():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Snapshot:
    """The host before the node: what ``restore`` puts back and ``leftovers`` compares against."""

    workdir: Path
    mounts: set[str]
    rules: dict[str, Rules]
    sysctls: dict[str, str]
    state: set[Path]
    bridge: bool
    cgroup: str  # the cgroup tree of what runs (CGROUP_ROOT, or the image build's own)
    cgroups: bool
    notes: list[str] = field(default_factory=list)  # what restore did, for the report

    @staticmethod
    def take(workdir: Path, cgroup: str = CGROUP_ROOT) -> Snapshot:
        return Snapshot(
            workdir=workdir,
            mounts=set(mountpoints()),
            rules={family: Rules.read(family) for family in IPTABLES if shutil.which(f"{family}-save")},
            sysctls=read_sysctls(),
            state=set().union(*(listing(d) for d in STATE_DIRS)),
            bridge=bridge_exists(),
            cgroup=cgroup,
            cgroups=bool(cgroup_dirs(cgroup)),
        )

    def new_mounts(self) -> list[str]:
        """New mounts where the node mounts (its work directory, network namespaces, the state
        directories); another session's mounts elsewhere are none of its business."""
        places = (str(self.workdir), *(str(d) for d in STATE_DIRS), "/var/run/netns")
        return [m for m in mountpoints() if m not in self.mounts and m.startswith(places)]

    def new_state(self) -> list[Path]:
        """New entries in the shared state directories, except live sockets (and their directories):
        every process of ours is stopped by then, so a socket that still answers is another
        session's (another Docker engine's containerd shims also live in /run/containerd/s)."""
        now = set().union(*(listing(d) for d in STATE_DIRS))
        live = {p for p in now - self.state if listening(p)}
        keep = live | {parent for p in live for parent in p.parents}
        return sorted(now - self.state - keep)

    def restore(self) -> None:
        """Undo the node's changes to the host (processes must already be stopped)."""
        kill_cgroup_processes(self.cgroup)
        unmount(self.new_mounts())
        for family, before in self.rules.items():
            undo_rules(family, before)
        if not self.bridge:
            delete_bridge()
        remove_cgroups(self.cgroup)
        for path in sorted(self.new_state(), key=lambda p: -len(p.parts)):
            if path.is_mount():
                run("umount", "--lazy", str(path), check=False)
            remove_path(path)
        self.notes.extend(restore_sysctls(self.sysctls))

    def leftovers(self) -> list[str]:
        """Everything still different from the snapshot (empty when the host is as it was)."""
        found = [f"mount {m}" for m in self.new_mounts()]
        for family, before in self.rules.items():
            found += rule_changes(family, before)
        if bridge_exists() and not self.bridge:
            found.append(f"bridge {BRIDGE}")
        if cgroup_dirs(self.cgroup) and not self.cgroups:
            found += [f"cgroup {p}" for p in cgroup_dirs(self.cgroup)]
        found += [f"state {p}" for p in self.new_state()]
        now = read_sysctls()
        found += [f"sysctl {k}={now.get(k)} (was {v})" for k, v in self.sysctls.items() if now.get(k) != v]
        found += [f"process {pid} {cmdline}" for pid, cmdline in processes_mentioning(str(self.workdir))]
        return found


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Processes whose command line contains ``text`` (the node's work directory: only ours do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline:
                found.append((int(entry.name), cmdline.strip()))
    return found


def kill_processes_mentioning(text: str, timeout: float = 10.0) -> None:
    """containerd's shims outlive containerd by design; they name its socket, which is ours."""
    deadline = time.monotonic() + timeout
    sent = signal.SIGTERM
    while (found := processes_mentioning(text)) and time.monotonic() < deadline:
        for pid, _ in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sent)
        time.sleep(0.5)
        sent = signal.SIGKILL
