"""helm, built from the Go module proxy once and cached (``tests.gotools``), like kustomize.

helm is pinned by the tiny Go module next to this file (``helm/go.mod``, a ``tool`` directive) and
cached as ``${XDG_CACHE_HOME:-~/.cache}/kube-agent-guard/tools/helm-<version>``. The chart tests run
``helm lint`` and ``helm template`` with it; no cluster is involved, so no kubeconfig is read.

helm keeps a cache, a config and a data directory of its own; every call here points them (and
``KUBECONFIG``) into a directory the caller owns, so a test never reads or writes the user's helm
repositories or plugins.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests import gotools

MODULE = Path(__file__).resolve().parent / "helm"
REQUIREMENT = "helm.sh/helm/v4"
PACKAGE = f"{REQUIREMENT}/cmd/helm"

BuildError = gotools.BuildError
GoMissing = gotools.GoMissing

PINNED = gotools.Pinned(
    module_dir=MODULE,
    requirement=REQUIREMENT,
    package=PACKAGE,
    purpose="the chart tests build helm from the Go module proxy",
    # Without it `helm version` says v4.x-unreleased; charts' kubeVersion checks read it too.
    ldflags=f"-s -w -X {REQUIREMENT}/internal/version.version={{version}}"
    f" -X {REQUIREMENT}/internal/version.metadata=",
)
version, cached_path, tool, ensure = PINNED.version, PINNED.cached_path, PINNED.tool, PINNED.ensure


def environment(home: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    """helm's own directories under ``home``; ``kubeconfig`` or none at all (never the user's)."""
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(kubeconfig or home / "no-kubeconfig"),
    )
    return env


def run(
    helm: Path, home: Path, args: Sequence[str], *, kubeconfig: Path | None = None, timeout: float = 300
) -> str:
    """``helm args...``; stdout on success, BuildError with helm's own message otherwise."""
    result = subprocess.run(
        [str(helm), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=environment(home, kubeconfig),
    )
    if result.returncode != 0:
        raise BuildError(
            f"helm {' '.join(args)} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout
