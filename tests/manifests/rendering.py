"""Render the kustomize overlays the way ``make deploy`` would, for the manifest and end-to-end tests.

``tree`` copies ``manifests/`` (without any certificates a developer made) and runs the documented
cert step into the copy, so rendering never depends on or touches the working tree's git-ignored
certificates.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from tests import reviews
from tests.manifests import kustomize_binary
from webhook import certs

MANIFESTS = reviews.ROOT / "manifests"
OVERLAYS = ("enforce", "dry-run", "kind", "cert-manager", "self-managed")
TLS_COMPONENT_CERTS = Path("components/tls-secret/certs")

Documents = list[dict[str, Any]]


def tree(parent: Path) -> Path:
    """A copy of manifests/ under ``parent`` after the cert step (``make deploy-certs``)."""
    copy = parent / "manifests"
    shutil.copytree(MANIFESTS, copy, ignore=shutil.ignore_patterns("certs"))
    certs.generate(copy / TLS_COMPONENT_CERTS, certs.DEFAULT_SERVICE, certs.DEFAULT_NAMESPACE)
    return copy


def render(kustomize: Path, copy: Path, overlay: str) -> Documents:
    """``kustomize build overlays/<overlay>`` as a list of objects."""
    text = kustomize_binary.build(kustomize, copy / "overlays" / overlay)
    return [doc for doc in yaml.safe_load_all(text) if doc]
