"""The real node's host bookkeeping (``tests/e2e/controlplane/host.py``) without a node: what it
would remove and what it reports, so that a teardown that leaves something behind cannot pass."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.controlplane import host

BEFORE = """\
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:OTHER-SESSION - [0:0]
-A POSTROUTING -j OTHER-SESSION
COMMIT
"""
AFTER = """\
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:OTHER-SESSION - [0:0]
:KUBE-SERVICES - [0:0]
:CNI-abc - [0:0]
:SOMEONE-ELSE - [0:0]
-A PREROUTING -m comment --comment "portals" -j KUBE-SERVICES
-A POSTROUTING -s 10.213.0.5/32 -j CNI-abc
-A POSTROUTING -j OTHER-SESSION
-A POSTROUTING -j SOMEONE-ELSE
-A KUBE-SERVICES -d 10.96.0.250/32 -j ACCEPT
COMMIT
"""


def saved(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], 0, stdout=text, stderr="")


def test_only_the_nodes_rules_and_chains_are_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "run", lambda *a, **k: saved(BEFORE))
    before = host.Rules.read("iptables")
    calls: list[tuple[str, ...]] = []

    def fake(*command: str, **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return saved(AFTER)

    monkeypatch.setattr(host, "run", fake)
    assert host.rule_changes("iptables", before) == [
        "iptables -t nat: new chain CNI-abc",
        "iptables -t nat: new chain KUBE-SERVICES",
        'iptables -t nat: new rule -A PREROUTING -m comment --comment "portals" -j KUBE-SERVICES',
        "iptables -t nat: new rule -A POSTROUTING -s 10.213.0.5/32 -j CNI-abc",
        "iptables -t nat: new rule -A KUBE-SERVICES -d 10.96.0.250/32 -j ACCEPT",
    ]
    calls.clear()
    host.undo_rules("iptables", before)
    deletes = [c for c in calls if "-D" in c]
    assert deletes == [
        ("iptables", "-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment", "portals", "-j", "KUBE-SERVICES"),  # noqa: E501
        ("iptables", "-t", "nat", "-D", "POSTROUTING", "-s", "10.213.0.5/32", "-j", "CNI-abc"),
    ]  # fmt: skip
    removed = {c[-1] for c in calls if "-X" in c}
    assert removed == {"KUBE-SERVICES", "CNI-abc"}  # never OTHER-SESSION or SOMEONE-ELSE


def test_a_process_left_in_the_work_directory_is_reported(tmp_path: Path) -> None:
    workdir = tmp_path / "node"
    workdir.mkdir()
    snapshot = host.Snapshot(workdir, set(), {}, {}, set(), bridge=True, cgroup="none", cgroups=True)
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(workdir)])
    try:
        deadline = time.monotonic() + 10  # until the child has exec'd (its command line names workdir)
        mine = f"process {left.pid} "
        found = snapshot.leftovers()
        while not any(i.startswith(mine) for i in found) and time.monotonic() < deadline:
            time.sleep(0.05)
            found = snapshot.leftovers()
        assert any(item.startswith(mine) for item in found), found
        host.kill_processes_mentioning(str(workdir))
        assert left.wait(timeout=10) is not None
        assert not any(item.startswith("process") for item in snapshot.leftovers())
    finally:
        left.kill()
        left.wait()


def test_cgroup_walk_survives_a_cgroup_removed_mid_walk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Teardown walks the kubelet's cgroup tree while containers exit and their cgroups vanish (CI saw
    ``FileNotFoundError`` from ``rglob`` there). A directory removed between listing and reading is
    skipped; the rest of the tree and its processes are still found."""
    root = tmp_path / host.CGROUP_ROOT
    (root / "kubepods" / "pod-a" / "ctr").mkdir(parents=True)
    (root / "kubepods" / "pod-b").mkdir(parents=True)
    (root / "kubepods" / "pod-b" / "cgroup.procs").write_text("4242\n")
    monkeypatch.setattr(host, "cgroup_dirs", lambda name=host.CGROUP_ROOT: [root])
    real_scandir = os.scandir

    def vanishing(path: os.PathLike[str] | str) -> object:
        if Path(path).name == "pod-a":  # the container exited after its parent was listed
            (root / "kubepods" / "pod-a" / "ctr").rmdir()
            (root / "kubepods" / "pod-a").rmdir()
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", vanishing)
    assert host.cgroup_processes() == {4242}
    assert root / "kubepods" / "pod-a" not in host.cgroup_tree(root)
