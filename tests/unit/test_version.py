"""One version number everywhere: pyproject.toml, ``agent-guard --version``, the image tag the
manifests deploy, the Helm chart's version and appVersion, the docs' image references and the
newest CHANGELOG entry."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml

from tests import reviews
from webhook import chart

ROOT = reviews.ROOT
IMAGE_TAG = re.compile(r"\bagent-guard:(\d+\.\d+\.\d+(?:-[0-9A-Za-z.]*[0-9A-Za-z])?)")


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def test_installed_package_is_the_project_version() -> None:
    """An editable install made before a version bump would report the old one (make install)."""
    assert chart.app_version() == project_version()


def test_cli_prints_the_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "--version"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == f"agent-guard {project_version()}"


def test_chart_version_and_app_version() -> None:
    document = yaml.safe_load((ROOT / "charts" / "kube-agent-guard" / "Chart.yaml").read_text())
    assert document["version"] == document["appVersion"] == project_version()


def test_every_image_reference_names_the_version() -> None:
    """The base Deployment's image and every `agent-guard:X.Y.Z` in the manifests and docs."""
    files = [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "manifests").rglob("*.yaml"),
    ]
    found = {(f.relative_to(ROOT).as_posix(), tag) for f in files for tag in IMAGE_TAG.findall(f.read_text())}
    assert ("manifests/base/deployment.yaml", project_version()) in found
    assert {tag for _, tag in found} == {project_version()}, sorted(found)


def test_makefile_image_tag_comes_from_pyproject() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "VERSION := $(shell sed -n 's/^version = \"\\(.*\\)\"/\\1/p' pyproject.toml)" in makefile
    assert "IMAGE ?= agent-guard:$(VERSION)" in makefile


def test_changelog_starts_with_this_release() -> None:
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings and headings[0] == project_version()
