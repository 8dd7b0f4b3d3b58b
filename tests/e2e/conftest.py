"""Session fixtures for the end-to-end suite: one cluster, one guard (both endpoints), three identities.

The binaries are built (or found in the cache) right after collection, when at least one selected
test is marked ``e2e``: a first build takes minutes and must not count against a single test's
timeout. Without Go, or when the build fails, the suite is skipped locally and fails under ``CI``.
When a test fails, the last lines of the apiserver, etcd and guard logs are attached to its report.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.e2e import attacks, cluster, incluster, kube, stack
from tests.e2e.controlplane import binaries, host, images, node
from webhook import guards

# The real-node scenarios need the real node (make e2e-node): not collected in any other mode.
collect_ignore = [] if cluster.mode() == "node" else ["node"]

BINARIES = pytest.StashKey[dict[str, Path]]()
BUILD_PROBLEM = pytest.StashKey[str]()
DIAGNOSTICS = pytest.StashKey[Callable[[], str]]()
LOCAL_ONLY = pytest.StashKey[list[tuple[str, str]]]()  # deselected local_only scenarios: (id, reason)


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def unavailable(reason: str) -> NoReturn:
    """Fail under CI; skip locally, saying how to get the suite to run."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(f"{reason} [skipped locally; with CI set this is a failure]")


def require_guard(guard_id: str, e2e: stack.Stack) -> None:
    """A scenario for a guard family that is not in this build (yet) cannot pass: skip it, or fail in CI."""
    if guard_id not in guards.by_id():
        unavailable(
            f"guard {guard_id!r} is not registered in webhook.guards (known: {', '.join(guards.by_id())})"
        )
    if e2e.policy.mode_of(guard_id) == "off":
        pytest.skip(f"guard {guard_id!r} is off in the shipped policy")


def require_authorizer(e2e: stack.Stack) -> None:
    """A scenario of the guard's ``/authorize``: the suite can wire the apiserver's authorizer only into
    the control plane it starts itself, so on an existing cluster (kind) it is skipped, saying why."""
    if not e2e.authorizer:
        pytest.skip(
            "existing-cluster mode: the apiserver does not call the guard's /authorize (its flags were "
            "fixed when the cluster was created, and tests/e2e/kind-config.yaml does not pass "
            "--authorization-config); the authorizer scenarios run on the local control plane"
        )


def local_only_reason(item: pytest.Item) -> str:
    """Why a ``local_only`` scenario cannot run on an existing cluster (its marker's ``reason``)."""
    marker = item.get_closest_marker("local_only")
    return str(marker.kwargs.get("reason", "")) if marker is not None else ""


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Remember the e2e scenarios ``-m "e2e and not local_only"`` (make e2e-kind) left out, to list
    them with their reasons: a deselection is visible, never silent."""
    for item in items:
        if item.get_closest_marker("e2e") and item.get_closest_marker("local_only"):
            item.config.stash.setdefault(LOCAL_ONLY, []).append((item.nodeid, local_only_reason(item)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    deselected = config.stash.get(LOCAL_ONLY, [])
    if not deselected:
        return
    terminalreporter.section(
        "deselected here: local_only (these run in make test, on the suite's own control plane)"
    )
    for nodeid, reason in deselected:
        terminalreporter.write_line(f"{nodeid}: {reason}")


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if config.option.collectonly or not cluster.needs_binaries():
        return
    if not any(item.get_closest_marker("e2e") for item in session.items):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def progress(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"e2e: {message}")

    try:
        config.stash[BINARIES] = binaries.ensure_all(progress, cluster.components())
    except binaries.BuildError as exc:
        config.stash[BUILD_PROBLEM] = str(exc)
        return
    if cluster.mode() == "node":  # the images too (minutes on the first run), before any test's timeout
        try:
            node.prepare(config._tmp_path_factory.mktemp("node-prepare"), progress)  # type: ignore[attr-defined]
        except (host.HostUnavailable, images.ImageError, binaries.BuildError) as exc:
            config.stash[BUILD_PROBLEM] = f"{cluster.NODE_ENV}: {exc}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    diagnostics = item.config.stash.get(DIAGNOSTICS, None)
    if report.failed and diagnostics is not None:
        report.sections.append(("e2e: control plane and guard logs", diagnostics()))
    return report


@pytest.fixture(scope="session")
def e2e(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Stack]:
    """The cluster authorizing through the guard, with the enforcing guard registered for admission too.

    Everything is stopped at the end of the session."""
    config = request.config
    problem = config.stash.get(BUILD_PROBLEM, None)
    if problem is not None:
        unavailable(problem)
    found = config.stash.get(BINARIES, {})
    if cluster.needs_binaries() and not found:
        try:
            found = binaries.ensure_all(components=cluster.components())
        except binaries.BuildError as exc:
            unavailable(str(exc))
    workdir = tmp_path_factory.mktemp("e2e")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def progress(message: str) -> None:  # during a test's setup: past the output capture
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"e2e: {message}")

    try:
        with (
            stack.prepared(workdir) as plan,
            cluster.provide(
                workdir, found, plan.authorization_config, plan.admission_config, progress
            ) as target,
        ):
            config.stash[DIAGNOSTICS] = target.diagnostics
            # On an existing cluster (make e2e-kind) the guard is the deployed one and the apiserver's
            # authorizers are the cluster's own: ``plan`` is not used there (see incluster).
            provided = incluster.up(target, workdir) if target.guard_in_cluster else stack.up(target, plan)
            with provided as up:
                config.stash[DIAGNOSTICS] = up.diagnostics
                yield up
            config.stash[DIAGNOSTICS] = target.diagnostics  # the guard is gone; its cluster's logs stay
    except cluster.Unavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def enforcing(e2e: stack.Stack) -> stack.Stack:
    """The stack with the enforcing guard answering both endpoints.

    Scenario fixtures put the stack into the state they need and leave it there (see ``stack``):
    a test that needs the enforcing guard asks for this fixture, not for ``e2e``.
    """
    e2e.enforcing()
    return e2e


SceneFactory = Callable[[str], attacks.Scene]


@pytest.fixture
def new_scene(e2e: stack.Stack) -> SceneFactory:
    """Fresh namespaces for a test (there is no namespace controller: they are never reclaimed)."""

    def make(label: str) -> attacks.Scene:
        suffix = secrets.token_hex(3)
        namespace = f"e2e-{label}"[:55].rstrip("-") + f"-{suffix}"
        kube.ensure_namespace(e2e.admin, namespace)
        return attacks.Scene(e2e.admin, namespace, suffix, e2e.policy.guard_namespace, e2e.wait_for_rbac_view)

    return make
