"""docs/mcp.md carries the MCP matrix exactly as ``tests.e2e.mcp.matrix`` derives it (the e2e suite
proves every cell), and the matrix's bookkeeping is consistent."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.mcp import matrix, servers

DOC = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"


def test_docs_carry_the_generated_table() -> None:
    text = DOC.read_text()
    assert matrix.render_block() in text, (
        "docs/mcp.md is out of date: replace its generated block with the output of "
        "`python -m tests.e2e.mcp.matrix`"
    )


def test_every_row_names_a_tool_or_none_for_every_server() -> None:
    for row in matrix.ROWS:
        assert set(row.calls) == {server.name for server in servers.SERVERS}, row.id
        assert (row.kind == matrix.ATTACK) == bool(row.guard), row.id


def test_hidden_tools_are_tools_the_matrix_uses() -> None:
    for (server, _flags), hidden in matrix.HIDDEN.items():
        assert hidden <= matrix.tools_used(server)
    assert set(matrix.HIDDEN) == set(matrix.cells())


def test_observed_outcome_prefers_what_happened_then_the_guard_reason() -> None:
    row = next(row for row in matrix.ROWS if row.id == "delete-namespace")
    denied = servers.Answer("... [namespace-delete] deleting namespace ...", True, "result")
    other = servers.Answer("tool not found", True, "json-rpc error")
    assert matrix.observed(row, True, denied, happened=True) == matrix.DONE
    assert matrix.observed(row, True, denied, happened=False) == matrix.GUARD
    assert matrix.observed(row, False, denied, happened=False) == matrix.GUARD  # the hidden tool still ran
    assert matrix.observed(row, False, other, happened=False) == matrix.FLAG
    assert matrix.observed(row, True, other, happened=False) == matrix.REFUSED
    assert matrix.observed(row, False, None, happened=False) == matrix.NO_TOOL


def test_the_install_directory_follows_the_lock_file() -> None:
    assert servers.install_dir().parent.name == "mcp-servers"
    assert servers.pinned_version("kubernetes-mcp-server").count(".") == 2
