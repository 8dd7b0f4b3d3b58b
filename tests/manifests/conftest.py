"""Render every overlay once per session with kustomize built from the Go module proxy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.manifests import helm_binary, kustomize_binary, rendering

MANIFESTS = rendering.MANIFESTS
OVERLAYS = rendering.OVERLAYS
TLS_COMPONENT_CERTS = rendering.TLS_COMPONENT_CERTS
Documents = rendering.Documents


@pytest.fixture(scope="session")
def kustomize() -> Path:
    """The kustomize binary; without Go: a skip locally, a failure under CI (``CI`` set)."""
    try:
        return kustomize_binary.ensure()
    except kustomize_binary.GoMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI is set, so this is a failure, not a skip)")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of manifests/ after the documented cert step (``make deploy-certs``)."""
    return rendering.tree(tmp_path_factory.mktemp("manifests"))


@pytest.fixture(scope="session")
def rendered(kustomize: Path, tree: Path) -> dict[str, Documents]:
    return {overlay: rendering.render(kustomize, tree, overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary; when it cannot be built: a skip that says why locally, a failure under CI."""
    try:
        return helm_binary.ensure()
    except helm_binary.BuildError as exc:  # GoMissing included
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI is set, so this is a failure, not a skip)")
        pytest.skip(f"helm could not be built, so the chart tests cannot run: {exc}")
