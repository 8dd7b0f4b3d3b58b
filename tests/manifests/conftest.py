"""Render every overlay once per session with kustomize built from the Go module proxy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import reviews
from tests.manifests import kustomize_binary
from webhook import certs

MANIFESTS = reviews.ROOT / "manifests"
OVERLAYS = ("enforce", "dry-run", "kind", "cert-manager")
TLS_COMPONENT_CERTS = Path("components/tls-secret/certs")

Documents = list[dict[str, Any]]


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
    copy = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, copy, ignore=shutil.ignore_patterns("certs"))
    certs.generate(copy / TLS_COMPONENT_CERTS, certs.DEFAULT_SERVICE, certs.DEFAULT_NAMESPACE)
    return copy


@pytest.fixture(scope="session")
def rendered(kustomize: Path, tree: Path) -> dict[str, Documents]:
    return {
        overlay: [
            doc
            for doc in yaml.safe_load_all(kustomize_binary.build(kustomize, tree / "overlays" / overlay))
            if doc
        ]
        for overlay in OVERLAYS
    }
