"""kustomize, built from the Go module proxy once and cached (``tests.gotools``).

kustomize is pinned by the tiny Go module next to this file (``kustomize/go.mod``, a ``tool``
directive) and cached as ``${XDG_CACHE_HOME:-~/.cache}/kube-agent-guard/tools/kustomize-<version>``,
next to the control plane binaries of the end-to-end suite; locking and the temporary file renamed
into place are ``tests.gotools``' business.

``kubectl kustomize`` is not used on purpose: kubectl is not on every machine, and its embedded
kustomize version is whatever that kubectl was built with.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests import gotools

MODULE = Path(__file__).resolve().parent / "kustomize"
PACKAGE = "sigs.k8s.io/kustomize/kustomize/v5"

BuildError = gotools.BuildError
GoMissing = gotools.GoMissing

PINNED = gotools.Pinned(
    module_dir=MODULE,
    requirement=PACKAGE,
    package=PACKAGE,
    purpose="the manifest tests build kustomize from the Go module proxy",
)
version, cached_path, tool, ensure = PINNED.version, PINNED.cached_path, PINNED.tool, PINNED.ensure


def build(kustomize: Path, directory: Path) -> str:
    """``kustomize build directory``; raises BuildError with kustomize's own message."""
    result = subprocess.run(
        [str(kustomize), "build", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"kustomize build {directory} failed:\n{result.stderr}")
    return result.stdout
