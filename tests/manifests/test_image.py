"""Static checks of the Dockerfile (no Docker engine here to build it; `make image` does)."""

from __future__ import annotations

import json
import re
import shlex

from tests import reviews
from tests.manifests.conftest import MANIFESTS

DOCKERFILE = reviews.ROOT / "Dockerfile"
BUILD_TOOLS = ("gcc", "build-essential", "make", "g++", "clang", "cargo", "rustc", "apt-get install")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        found.append((keyword.upper(), rest.strip()))
    return found


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_multi_stage_with_a_slim_python_final_stage() -> None:
    stages = _stages()
    assert len(stages) >= 2
    base = stages[-1][0][1]
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim", base), base
    arg = next(
        rest for keyword, rest in _instructions() if keyword == "ARG" and rest.startswith("PYTHON_VERSION")
    )
    assert tuple(int(p) for p in arg.split("=")[1].split(".")) >= (3, 11)


def test_final_stage_has_no_build_tools_and_copies_only_the_virtualenv() -> None:
    final = _stages()[-1]
    for keyword, rest in final:
        if keyword == "RUN":
            for tool in BUILD_TOOLS:
                assert tool not in rest, rest
    copies = [rest for keyword, rest in final if keyword == "COPY"]
    assert any(c.startswith("--from=build /opt/agent-guard") for c in copies)
    assert not any(c.split()[0] in (".", "./") for c in copies), "the source tree must not be copied whole"


def test_runs_as_a_numeric_non_root_user_matching_the_deployment() -> None:
    [user] = [rest for keyword, rest in _stages()[-1] if keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    deployment = (MANIFESTS / "base" / "deployment.yaml").read_text()
    assert f"runAsUser: {uid}" in deployment and f"runAsGroup: {gid}" in deployment


def test_entrypoint_is_agent_guard_serve() -> None:
    [entrypoint] = [rest for keyword, rest in _stages()[-1] if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["agent-guard", "serve"]
    [cmd] = [rest for keyword, rest in _stages()[-1] if keyword == "CMD"]
    assert "--cert-dir" in json.loads(cmd) and "--rules" in json.loads(cmd)


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = [
        line.strip()
        for line in (reviews.ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "deny by default: certs/, .venv/, .git/ and manifests/ never reach the context"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "webhook", "rules"}
    copied = {
        source
        for keyword, rest in _instructions()
        if keyword == "COPY" and not rest.startswith("--from")
        for source in shlex.split(rest)[:-1]
    }
    assert {c.rstrip("/") for c in copied} <= allowed
