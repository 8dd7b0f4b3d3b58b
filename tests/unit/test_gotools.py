"""The shared Go builder: builds once, reuses the cache, serializes concurrent builders, reports failures."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from tests import gotools

HELLO = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from the cache") }\n'


@pytest.fixture
def go() -> str:
    found = shutil.which("go")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("Go is not installed (CI is set, so this is a failure, not a skip)")
        pytest.skip("Go is not installed")
    return found


def program(directory: Path, source: str = HELLO) -> Path:
    directory.mkdir(parents=True)
    (directory / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n")
    (directory / "main.go").write_text(source)
    return directory


def tool(tmp_path: Path, module: Path) -> gotools.Tool:
    return gotools.Tool(
        name="hello",
        module_dir=module,
        package=".",
        target=tmp_path / "cache" / f"hello-{gotools.source_digest(module)}",
        purpose="this test builds hello",
    )


def test_builds_once_then_reuses_the_cached_binary(go: str, tmp_path: Path) -> None:
    hello = tool(tmp_path, program(tmp_path / "hello"))
    messages: list[str] = []
    built = gotools.ensure(hello, messages.append)
    assert built == hello.target and gotools.usable(built)
    assert [m for m in messages if m.startswith("building")], messages
    first = built.stat().st_mtime_ns
    again: list[str] = []
    assert gotools.ensure(hello, again.append) == built
    assert again == [] and built.stat().st_mtime_ns == first
    assert not list(built.parent.glob("*.partial"))


def test_concurrent_builders_build_once(go: str, tmp_path: Path) -> None:
    hello = tool(tmp_path, program(tmp_path / "hello"))
    messages: list[str] = []
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(gotools.ensure(hello, messages.append)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [hello.target] * 3
    assert len([m for m in messages if m.startswith("building")]) == 1, messages


def test_a_failed_build_says_why_and_leaves_nothing_behind(go: str, tmp_path: Path) -> None:
    broken = tool(
        tmp_path, program(tmp_path / "broken", "package main\n\nfunc main() { undefinedThing() }\n")
    )
    with pytest.raises(gotools.BuildError, match="undefined: undefinedThing") as failure:
        gotools.ensure(broken)
    assert "full log:" in str(failure.value)
    assert not broken.target.exists()
    assert not list(broken.target.parent.glob("*.partial"))


def test_without_go_the_error_names_the_version_and_who_needs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    hello = tool(tmp_path, program(tmp_path / "hello"))
    with pytest.raises(gotools.GoMissing, match=r"this test builds hello; install Go >= 1\.22 "):
        gotools.ensure(hello)


def test_a_cached_binary_needs_no_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hello = tool(tmp_path, program(tmp_path / "hello"))
    hello.target.parent.mkdir(parents=True)
    hello.target.write_text("#!/bin/sh\n")
    hello.target.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gotools.ensure(hello) == hello.target


def test_versions_come_from_go_mod(tmp_path: Path) -> None:
    module = tmp_path / "pinned"
    module.mkdir()
    (module / "go.mod").write_text("module x\n\ngo 1.26.0\n\nrequire (\n\tk8s.io/kubernetes v1.34.4\n)\n")
    assert gotools.go_version(module) == "1.26.0"
    assert gotools.module_version(module, "k8s.io/kubernetes") == "v1.34.4"
    with pytest.raises(gotools.BuildError, match=r"no version for sigs\.k8s\.io/nothing"):
        gotools.module_version(module, "sigs.k8s.io/nothing")


def test_a_pinned_tool_is_cached_per_pinned_version_with_the_version_stamped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A new pin is a new cache entry (never a stale binary); ``{version}`` in ldflags is the pin."""
    module = tmp_path / "t"  # the folder names the program
    module.mkdir()
    go_mod = "module x\n\ngo 1.26.0\n\ntool example.com/t/cmd/t\n\nrequire (\n\texample.com/t v1.2.3\n)\n"
    (module / "go.mod").write_text(go_mod)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pinned = gotools.Pinned(
        module_dir=module,
        requirement="example.com/t",
        package="example.com/t/cmd/t",
        purpose="this test builds t",
        ldflags="-s -w -X example.com/t/version.v={version}",
    )
    assert pinned.version() == "v1.2.3"
    assert pinned.cached_path() == tmp_path / "cache" / "kube-agent-guard" / "tools" / "t-v1.2.3"
    assert pinned.tool() == gotools.Tool(
        name="t v1.2.3",
        module_dir=module,
        package="example.com/t/cmd/t",
        target=pinned.cached_path(),
        purpose="this test builds t",
        ldflags="-s -w -X example.com/t/version.v=v1.2.3",
    )
    (module / "go.mod").write_text(go_mod.replace("v1.2.3", "v1.2.4"))
    assert pinned.cached_path().name == "t-v1.2.4"
    pinned.cached_path().parent.mkdir(parents=True)
    pinned.cached_path().write_text("#!/bin/sh\n")
    pinned.cached_path().chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))  # no Go: the cached binary is found, not rebuilt
    assert pinned.ensure() == pinned.cached_path()
