"""Issue #12: real MCP servers, driven by a real MCP client, against the real apiserver and the guard.

For every server and flag set (``servers.SERVERS``), the server is started over stdio with the agent's
kubeconfig (``mcp-system/mcp-k8s-go``, bound to cluster-admin) and every row of ``matrix.ROWS`` is
asked of it through its own tool. Each row then asserts, as the admin, what really happened, and that
the outcome is the one ``matrix.expected`` derives (the table in docs/mcp.md): the server's flag stopped
it, or the guard did and its ``[guard-id]`` reason is in the text the model received, or (ordinary work)
it succeeded.

One server process serves all rows of its cell (as it would serve one conversation); the cell runs once,
when its first row is asked for, and the rows then report one by one.

On kind (``make e2e-kind``) the same matrix runs against the deployed guard: the agent's kubeconfig
names the kind apiserver and a token of the agent's ServiceAccount there, the reads are checked in the
audit log the kind apiserver writes for the suite, the dry-run measurement switches the Deployment to
``--mode=dry-run`` and reads the decision lines from its pods' logs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e import incluster, kube, stack
from tests.e2e.conftest import unavailable
from tests.e2e.mcp import matrix, servers
from tests.e2e.mcp.conftest import OUTCOMES

pytestmark = [pytest.mark.e2e, pytest.mark.mcp]


@dataclass(frozen=True)
class Observation:
    row: matrix.Row
    listed: bool  # the server offered the tool under these flags
    answer: servers.Answer | None  # what the model read (None: no tool for it)
    happened: bool  # the admin's verdict afterwards
    outcome: str


@dataclass
class Cell:
    tools: frozenset[str]  # what tools/list offered
    observations: dict[str, Observation]
    log: Path  # the server's stderr
    namespaces: dict[str, str] = field(default_factory=dict)  # row id -> the namespace it ran in


@dataclass
class Runner:
    """Runs a cell (one server process, every row) the first time one of its rows asks for it."""

    up: stack.Stack
    kubectl: Path
    root: Path  # the npm install of the servers
    tmp: pytest.TempPathFactory
    config: pytest.Config
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)  # a cell that could not run, and why

    def cell(self, server_name: str, flags_label: str) -> Cell:
        key = (server_name, flags_label)
        if key in self.failed:  # its other rows fail with the same reason instead of retrying it
            pytest.fail(f"{server_name} [{flags_label}] could not run: {self.failed[key]}", pytrace=False)
        if key not in self.cells:
            server = servers.server_named(server_name)
            flags = next(flags for flags in server.flag_sets if flags.label == flags_label)
            self.up.enforcing()
            try:
                cell = self.run(server, flags, matrix.ROWS)
            except Exception as exc:
                self.failed[key] = f"{type(exc).__name__}: {exc}"
                raise
            self._restore_webhook(cell)
            self.cells[key] = cell
            self.config.stash.setdefault(OUTCOMES, {})[key] = {
                row_id: (seen.row.kind, seen.outcome) for row_id, seen in cell.observations.items()
            }
        return self.cells[key]

    def run(self, server: servers.Server, flags: servers.FlagSet, rows: Sequence[matrix.Row]) -> Cell:
        """Start ``server`` with ``flags`` and ask it every row, each in a fresh namespace."""
        return asyncio.run(self._run(server, flags, rows, self.tmp.mktemp(f"mcp-{server.name}")))

    async def _run(
        self, server: servers.Server, flags: servers.FlagSet, rows: Sequence[matrix.Row], workdir: Path
    ) -> Cell:
        up = self.up
        kubeconfig = kube.kubeconfig(up.target, "agent", up.agent.token, workdir / "agent.kubeconfig")
        log = workdir / "server.log"
        assert up.target.audit_log is not None
        observations, namespaces = {}, {}
        with log.open("w") as errlog:
            parameters = server.parameters(self.root, kubeconfig, self.kubectl, flags)
            async with servers.connect(parameters, errlog) as connection:
                for row in rows:
                    suffix = secrets.token_hex(3)
                    namespace = f"mcp-{row.id}"[:50].rstrip("-") + f"-{suffix}"
                    kube.ensure_namespace(up.admin, namespace)
                    namespaces[row.id] = namespace
                    spot = matrix.Spot(
                        up.admin,
                        namespace,
                        suffix,
                        up.target.audit_log,
                        controllers=up.target.guard_in_cluster,
                    )
                    row.prepare(spot)
                    tool = row.calls[server.name]
                    if tool is None:
                        observations[row.id] = Observation(row, False, None, False, matrix.NO_TOOL)
                        continue
                    name, arguments = tool
                    answer = await connection.call(name, arguments(spot))
                    happened = row.happened(spot, answer)
                    listed = name in connection.tools
                    outcome = matrix.observed(row, listed, answer, happened)
                    observations[row.id] = Observation(row, listed, answer, happened, outcome)
                tools = connection.tools
        (workdir / "observations.json").write_text(json.dumps(_record(observations), indent=2))
        return Cell(tools, observations, log, namespaces)

    def _restore_webhook(self, cell: Cell) -> None:
        """Put the guard's registration back if an attack changed it, so later scenarios are unaffected."""
        tampered = ("delete-guard-webhook", "patch-guard-webhook")
        if any(cell.observations[row].happened for row in tampered if row in cell.observations):
            self.up.reinstall_webhook()


def _record(observations: dict[str, Observation]) -> list[dict[str, object]]:
    """What each row's call got, for a human reading the run (``observations.json`` next to the log)."""
    return [
        {
            "row": row_id,
            "outcome": seen.outcome,
            "listed": seen.listed,
            "happened": seen.happened,
            "via": seen.answer.via if seen.answer else None,
            "is_error": seen.answer.is_error if seen.answer else None,
            "text": seen.answer.text if seen.answer else None,
        }
        for row_id, seen in observations.items()
    ]


@pytest.fixture(scope="session")
def runner(
    e2e: stack.Stack,
    mcp_tools: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Runner:
    kubectl, root = mcp_tools
    if e2e.target.audit_log is None:
        unavailable(
            "the MCP matrix checks the agent's reads in the apiserver's audit log, and this cluster's is "
            "not readable here: set AGENT_GUARD_E2E_AUDIT_LOG (make e2e-kind does)"
        )
    return Runner(e2e, kubectl, root, tmp_path_factory, request.config)


CASES = [
    pytest.param(server, flags, row, id=f"{server}-{flags}-{row.id}")
    for server, flags in matrix.cells()
    for row in matrix.ROWS
]


@pytest.mark.parametrize(("server", "flags", "row"), CASES)
def test_row(server: str, flags: str, row: matrix.Row, runner: Runner) -> None:
    cell = runner.cell(server, flags)
    seen = cell.observations[row.id]
    want = matrix.expected(server, flags, row)
    answer = seen.answer
    read = f"{answer.via}: {answer.text[:1500]}" if answer is not None else "(no call)"
    assert seen.outcome == want, (
        f"{server} [{flags}] {row.id}: expected {want!r}, observed {seen.outcome!r} "
        f"(tool listed: {seen.listed}, happened: {seen.happened}); the model read {read}; "
        f"server log: {cell.log}"
    )


@pytest.mark.parametrize(("server", "flags"), matrix.cells(), ids=[f"{s}-{f}" for s, f in matrix.cells()])
def test_flags_hide_what_the_matrix_says(server: str, flags: str, runner: Runner) -> None:
    """``matrix.HIDDEN`` (which the table derives from) is what the server's tools/list really offers."""
    cell = runner.cell(server, flags)
    used = matrix.tools_used(server)
    hidden = used - cell.tools
    assert hidden == matrix.HIDDEN[(server, flags)], sorted(cell.tools)


@pytest.fixture(scope="module")
def dry_run_log(runner: Runner) -> Iterator[Callable[[], str]]:
    """The guard in dry-run for the module's last scenarios: the local guard restarted with
    ``--mode dry-run`` (the next module's fixture restarts it enforcing), or (kind) the deployed one
    switched to ``--mode=dry-run`` and back at the end of the module; returns what reads its output."""
    up = runner.up
    if isinstance(up, incluster.InClusterStack):
        with up.in_mode("dry-run"):
            yield up.guard_logs
        return
    yield up.guard_mode("--mode", "dry-run").output


@pytest.mark.parametrize("server", [server.name for server in servers.SERVERS])
def test_dry_run_warnings_do_not_reach_the_model(
    server: str, runner: Runner, dry_run_log: Callable[[], str]
) -> None:
    """A measurement, kept so the docs cannot drift: with the guard in dry-run, a request it would deny
    is admitted with a ``Warning: [guard-id] would deny`` header, and neither server passes it on to the
    model (the decision log and the audit annotations are where dry-run findings go; docs/mcp.md)."""
    row = next(row for row in matrix.ROWS if row.id == "privileged-pod")
    chosen = servers.server_named(server)
    cell = runner.run(chosen, chosen.flag_sets[0], [row])
    seen = cell.observations[row.id]
    assert seen.happened and seen.answer is not None, f"dry-run should admit it; the model read {seen.answer}"
    namespace = next(iter(cell.namespaces.values()))
    would_deny = [
        d
        for d in stack.decisions(dry_run_log)
        if d["decision"] == "would-deny" and d["namespace"] == namespace and row.guard in d["guards"]
    ]
    assert would_deny, f"the guard logged no would-deny for {namespace}"
    assert "would deny" not in seen.answer.text, seen.answer.text
    assert f"[{row.guard}]" not in seen.answer.text, seen.answer.text
    if server == servers.MCP_SERVER_KUBERNETES.name:
        # The header did arrive: kubectl printed it to its stderr, which the server passes to its own
        # stderr (the MCP host's server log), not to the model.
        assert f"Warning: [{row.guard}] would deny" in cell.log.read_text(), cell.log.read_text()
