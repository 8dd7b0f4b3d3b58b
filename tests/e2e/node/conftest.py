"""Fixtures of the real-node scenarios (``make e2e-node``): the in-cluster stack, running workloads,
a steady load of agent and admin requests, and the numbers the scenarios report.

These tests are collected only with ``AGENT_GUARD_E2E_NODE=1`` (``tests/e2e/conftest.py``); the
session's ``e2e`` fixture is then an ``incluster.InClusterStack`` over ``controlplane.node``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e import attacks, incluster, kube, stack
from tests.e2e.conftest import SceneFactory
from tests.e2e.controlplane import images, node

REPORT = pytest.StashKey[list[str]]()
RUNNING_TIMEOUT_SECONDS = 120.0
# A benign workload that logs and has a Python for exec: the guard's own image (loaded into the
# node, never pulled) running a one-line program instead of the guard.
APP_IMAGE = "agent-guard:0.1.0"
APP_PROGRAM = "import sys, time; print('hello from the e2e app', flush=True); time.sleep(3600)"


@pytest.fixture
def cluster(e2e: stack.Stack) -> incluster.InClusterStack:
    """The enforcing in-cluster guard on the real node."""
    assert isinstance(e2e, incluster.InClusterStack), type(e2e)
    assert isinstance(e2e.target, node.NodeCluster), type(e2e.target)
    e2e.enforcing()
    return e2e


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measured number; all of them are printed at the end of the session."""
    lines = request.config.stash.setdefault(REPORT, [])

    def add(line: str) -> None:
        lines.append(f"{request.node.name}: {line}")

    return add


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(REPORT, [])
    if lines:
        terminalreporter.section("e2e-node: measured")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The chart scenario last: it replaces the kustomize-installed guard for its duration."""
    items.sort(key=lambda item: item.path.name == "test_chart_release.py")


def pause_deployment(name: str, replicas: int = 2, **spec: Any) -> dict[str, Any]:
    """A Deployment of the sandbox image (present on the node): restricted unless ``spec`` says else."""
    body = attacks.deployment(name, **spec)
    body["spec"]["replicas"] = replicas
    for container in body["spec"]["template"]["spec"]["containers"]:
        container["image"] = images.PAUSE_IMAGE
        container["imagePullPolicy"] = "Never"
    return body


def app_pod(name: str) -> dict[str, Any]:
    body = attacks.pod(name)
    container = body["spec"]["containers"][0]
    container.update(image=APP_IMAGE, imagePullPolicy="Never", command=["python3", "-c", APP_PROGRAM])
    return body


def pods_of(client: kube.Client, namespace: str, selector: str) -> list[dict[str, Any]]:
    reply = client.ok(
        kube.Request("GET", f"/api/v1/namespaces/{namespace}/pods", query=(("labelSelector", selector),))
    )
    items: list[dict[str, Any]] = reply.body.get("items", [])
    return items


def running(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    ready = [c.get("ready", False) for c in status.get("containerStatuses", [])]
    return status.get("phase") == "Running" and bool(ready) and all(ready)


def wait_running(client: kube.Client, namespace: str, selector: str, count: int) -> list[dict[str, Any]]:
    """Until ``count`` pods matching ``selector`` run with every container ready."""
    deadline = time.monotonic() + RUNNING_TIMEOUT_SECONDS
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = pods_of(client, namespace, selector)
        if len([p for p in found if running(p)]) >= count:
            return found
        time.sleep(0.5)
    states = [(p["metadata"]["name"], p.get("status", {})) for p in found]
    raise AssertionError(f"{count} pod(s) {selector} in {namespace} not running: {states}")


@pytest.fixture
def app(cluster: incluster.InClusterStack, new_scene: SceneFactory) -> tuple[attacks.Scene, str]:
    """A running pod of the app in a fresh namespace, made by the admin: (scene, pod name)."""
    scene = new_scene("app")
    cluster.admin.ok(kube.Request("POST", f"/api/v1/namespaces/{scene.namespace}/pods", app_pod("app")))
    deadline = time.monotonic() + RUNNING_TIMEOUT_SECONDS
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = cluster.admin.ok(kube.Request("GET", f"/api/v1/namespaces/{scene.namespace}/pods/app")).body
        if running(pod):
            return scene, "app"
        time.sleep(0.5)
    raise AssertionError(f"the app pod did not run: {pod.get('status')}")
