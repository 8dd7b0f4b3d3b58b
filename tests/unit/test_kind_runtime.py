"""The e2e-kind engine's runtime wrapper (tests/e2e/kind/runc-bounded): asks runc only for
capabilities the host can grant, and otherwise passes every argument through unchanged."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

from tests import reviews

SCRIPT = reviews.ROOT / "tests" / "e2e" / "kind" / "runc-bounded"
ALL = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]


def wrapper() -> ModuleType:
    loader = SourceFileLoader("runc_bounded", str(SCRIPT))
    spec = importlib.util.spec_from_loader("runc_bounded", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def spec(capabilities: list[str]) -> dict[str, object]:
    kinds = ("bounding", "effective", "inheritable", "permitted")
    return {"process": {"args": ["/sbin/init"], "capabilities": {kind: list(capabilities) for kind in kinds}}}


def test_capabilities_outside_the_bounding_set_are_removed_from_every_set() -> None:
    caps = spec(ALL)["process"]["capabilities"]  # type: ignore[index]
    assert wrapper().restrict(caps, {"CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"}) is True
    assert all(names == ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"] for names in caps.values())


def test_a_config_within_the_bounding_set_is_left_alone() -> None:
    caps = spec(["CAP_CHOWN"])["process"]["capabilities"]  # type: ignore[index]
    assert wrapper().restrict(caps, {"CAP_CHOWN", "CAP_KILL"}) is False


def test_the_bounding_set_is_read_from_this_process() -> None:
    mask = next(
        int(line.split()[1], 16)
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("CapBnd:")
    )
    found = wrapper().bounding()
    assert ("CAP_SYS_RESOURCE" in found) == bool(mask >> 24 & 1)
    assert ("CAP_CHOWN" in found) == bool(mask & 1)


def run(tmp_path: Path, *arguments: str) -> str:
    env = {**os.environ, "KAG_RUNC": "/bin/echo"}  # echo stands in for runc: it shows the arguments
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    ).stdout


def test_create_rewrites_the_bundle_and_passes_the_arguments_through(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(spec([*ALL, "CAP_NOT_A_CAPABILITY"])))
    arguments = (
        "--root",
        "/run/x",
        "--log",
        "l.json",
        "create",
        "--bundle",
        str(tmp_path),
        "--pid-file",
        "p",
        "id",
    )
    assert run(tmp_path, *arguments).split() == list(arguments)
    written = json.loads((tmp_path / "config.json").read_text())["process"]["capabilities"]
    expected = sorted(wrapper().bounding() & set(ALL))
    assert all(sorted(names) == expected for names in written.values())


def test_exec_rewrites_the_process_file(tmp_path: Path) -> None:
    process = tmp_path / "process.json"
    process.write_text(json.dumps(spec(["CAP_NOT_A_CAPABILITY", "CAP_CHOWN"])["process"]))
    run(tmp_path, "exec", "--process", str(process), "--detach", "id")
    assert json.loads(process.read_text())["capabilities"]["effective"] == ["CAP_CHOWN"]


def test_other_commands_touch_nothing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(spec(["CAP_NOT_A_CAPABILITY"])))
    assert run(tmp_path, "--root", "/run/x", "delete", "id").split() == ["--root", "/run/x", "delete", "id"]
    assert "CAP_NOT_A_CAPABILITY" in (tmp_path / "config.json").read_text()
