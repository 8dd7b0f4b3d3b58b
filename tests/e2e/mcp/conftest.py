"""Fixtures of the MCP scenarios: kubectl and the two servers installed before the first test runs.

Like the control plane's binaries (``tests/e2e/conftest.py``), kubectl is built and the npm packages
installed right after collection, when a selected test is marked ``mcp``: a cold build takes minutes and
must not count against one test's timeout. A failure skips the scenarios locally and fails them under
``CI``. The outcome of every cell is kept for the run's summary (counts per server and flag set).

The matrix runs on the suite's own control plane and on an existing cluster (``make e2e-kind``): the
servers get a kubeconfig for the agent's ServiceAccount on that cluster, and the reads are checked in
the apiserver's audit log, which ``make e2e-kind`` has the kind apiserver write where the suite reads it
(``AGENT_GUARD_E2E_AUDIT_LOG``); without one the runner says so (``test_mcp_matrix.runner``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e import cluster
from tests.e2e.conftest import unavailable
from tests.e2e.controlplane import binaries
from tests.e2e.mcp import servers

TOOLS = pytest.StashKey[tuple[Path, Path]]()  # (kubectl, npm install directory)
PROBLEM = pytest.StashKey[str]()
OUTCOMES = pytest.StashKey[
    dict[tuple[str, str], dict[str, tuple[str, str]]]
]()  # cell -> row -> (kind, outcome)


def prepare_tools(progress: Callable[[str], None]) -> tuple[Path, Path]:
    started = time.monotonic()
    kubectl = binaries.ensure(binaries.KUBECTL, progress)
    installed = servers.ensure_installed(progress)
    progress(f"kubectl and the MCP servers ready in {time.monotonic() - started:.1f}s")
    return kubectl, installed


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if config.option.collectonly or not any(item.get_closest_marker("mcp") for item in session.items):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def progress(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"e2e-mcp: {message}")

    try:
        config.stash[TOOLS] = prepare_tools(progress)
    except (binaries.BuildError, servers.InstallError) as exc:
        config.stash[PROBLEM] = str(exc)


@pytest.fixture(scope="session")
def mcp_tools(request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """(the kubectl binary, the directory of the installed MCP servers)."""
    config = request.config
    problem = config.stash.get(PROBLEM, None)
    if problem is not None:
        unavailable(problem)
    found = config.stash.get(TOOLS, None)
    if found is None:
        try:
            found = prepare_tools(print)
        except (binaries.BuildError, servers.InstallError) as exc:
            unavailable(str(exc))
    if cluster.mode() == "node":
        pytest.skip(
            "the MCP matrix runs on the suite's own control plane (make test) and on kind (make e2e-kind), "
            "not on the real node"
        )
    return found


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    outcomes = config.stash.get(OUTCOMES, {})
    if not outcomes:
        return
    terminalreporter.section("MCP matrix (observed)")
    for (server, flags), rows in outcomes.items():
        attacks = [outcome for kind, outcome in rows.values() if kind == "attack"]
        benign = [outcome for kind, outcome in rows.values() if kind == "benign"]
        tried = [outcome for outcome in attacks if outcome != "no tool"]
        blocked = [outcome for outcome in tried if outcome in ("guard", "flag")]
        terminalreporter.write_line(
            f"{server} [{flags}]: attacks blocked {len(blocked)}/{len(tried)} "
            f"(guard {attacks.count('guard')}, server flag {attacks.count('flag')}), "
            f"guard reasons that reached the model {attacks.count('guard')}, "
            f"benign succeeded {benign.count('done')}/{len(benign)} "
            f"(server flag {benign.count('flag')})"
        )
