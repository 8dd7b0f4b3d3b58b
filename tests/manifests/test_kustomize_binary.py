"""Where kustomize (and helm) are cached and what happens without Go."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.manifests import helm_binary, kustomize_binary


def test_version_comes_from_the_pinning_module() -> None:
    version = kustomize_binary.version()
    assert version.startswith("v5.")
    assert f"sigs.k8s.io/kustomize/kustomize/v5 {version}" in (kustomize_binary.MODULE / "go.mod").read_text()
    assert "tool sigs.k8s.io/kustomize/kustomize/v5" in (kustomize_binary.MODULE / "go.mod").read_text()


@pytest.mark.parametrize(("binary", "name"), [(kustomize_binary, "kustomize"), (helm_binary, "helm")])
def test_cached_next_to_the_control_plane_binaries(
    binary: ModuleType, name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``tools/<name>-<pinned version>``: where earlier runs left them, so they are found, not rebuilt."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert binary.cached_path() == tmp_path / "kube-agent-guard" / "tools" / f"{name}-{binary.version()}"
    assert binary.tool().target == binary.cached_path()


def test_without_go_and_without_a_cached_binary_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(kustomize_binary.GoMissing, match=r"install Go >= 1\.26"):
        kustomize_binary.ensure()
