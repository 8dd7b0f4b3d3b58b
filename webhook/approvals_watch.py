"""Keep ``approvals.Store`` in step with the Approval objects in the guard's namespace, off the request path.

Two daemon threads with the kubernetes client: one lists and watches Approvals (re-listing after a
watch ends or expires), one marks approvals consumed (``status.consumedAt``) after a review used
one, so the other replicas stop honouring it when their watch sees the change.

Nothing here is on the path of a review: a review only reads the store. When the CRD is absent, the
Role is missing or the apiserver is unreachable, the watcher logs why, backs off and tries again; the
store keeps what it last knew (each approval still expires on its own), so reviews never wait, and a
missing approval only ever means a denial stays a denial: never fail open.
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, cast

import kubernetes

from webhook import approvals

log = logging.getLogger("agent-guard.approvals")

WATCH_SECONDS = 60  # the apiserver ends each watch after this; then we re-list
REQUEST_TIMEOUT_SECONDS = 10
MAX_BACKOFF_SECONDS = 30.0


def api_client(kubeconfig: str | None) -> kubernetes.client.ApiClient:
    """From ``--kubeconfig``, else the pod's ServiceAccount (in-cluster)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    else:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient(configuration)


class Watcher:
    def __init__(
        self,
        store: approvals.Store,
        namespace: str,
        client: Callable[[], kubernetes.client.ApiClient],
        identity: str = "",
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.client = client
        self.identity = identity or os.environ.get("HOSTNAME", "") or f"pid-{os.getpid()}"
        self._stop = threading.Event()
        self._consumed: queue.Queue[approvals.Approval | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._last_problem = ""
        self._client: kubernetes.client.ApiClient | None = None
        store.on_consumed = self._consumed.put

    def start(self) -> None:
        for name, target in (
            ("approvals-watch", self._watch_loop),
            ("approvals-consume", self._consume_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._consumed.put(None)

    # --- watching ----------------------------------------------------------------------------

    def _api(self) -> kubernetes.client.CustomObjectsApi:
        if self._client is None:  # created on first use, in this thread: a bad config is retried
            self._client = self.client()
        return kubernetes.client.CustomObjectsApi(self._client)

    def _parse(self, obj: dict[str, Any]) -> approvals.Approval | None:
        try:
            return approvals.Approval.from_object(obj)
        except ValueError as exc:
            name = obj.get("metadata", {}).get("name", "?")
            log.warning("ignoring Approval %s/%s: %s", self.namespace, name, exc)
            return None

    def _watch_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._list_and_watch()
                failures = 0
            except Exception as exc:  # never let the thread die: back off and try again
                failures += 1
                self._problem(exc)
            if failures:
                self._stop.wait(min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(failures, 6)))

    def _list_and_watch(self) -> None:
        api = self._api()
        group, version, plural = approvals.GROUP, approvals.VERSION, approvals.PLURAL
        listed = cast(
            dict[str, Any],
            api.list_namespaced_custom_object(
                group, version, self.namespace, plural, _request_timeout=REQUEST_TIMEOUT_SECONDS
            ),
        )
        found = [a for a in (self._parse(item) for item in listed.get("items", [])) if a is not None]
        self.store.replace(found)
        if not self.store.enabled or self._last_problem:
            log.info("watching Approvals in %s (%d known)", self.namespace, len(found))
        self.store.enabled = True
        self._last_problem = ""
        stream = kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
            api.list_namespaced_custom_object,
            group,
            version,
            self.namespace,
            plural,
            resource_version=listed["metadata"]["resourceVersion"],
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + REQUEST_TIMEOUT_SECONDS,
        )
        event: dict[str, Any]
        for event in stream:
            if self._stop.is_set():
                return
            kind, obj = event["type"], event["object"]
            if kind == "DELETED":
                self.store.remove(obj.get("metadata", {}).get("name", ""))
            elif kind in ("ADDED", "MODIFIED"):
                approval = self._parse(obj)
                if approval is not None:
                    self.store.put(approval)
            elif kind == "ERROR":  # e.g. 410 Gone: the resourceVersion is too old; re-list
                return

    def _problem(self, exc: Exception) -> None:
        if isinstance(exc, kubernetes.client.ApiException) and exc.status == 404:
            problem = (
                f"the Approval CRD ({approvals.PLURAL}.{approvals.GROUP}) is not installed: approvals "
                "are unavailable, approvable denials stay denials"
            )
        elif isinstance(exc, kubernetes.client.ApiException) and exc.status == 403:
            problem = f"not allowed to list/watch Approvals in {self.namespace} (RBAC): {exc.reason}"
        else:
            problem = f"cannot watch Approvals ({type(exc).__name__}: {exc}); keeping the last known"
        if problem != self._last_problem:  # once per distinct problem, not every back-off
            log.warning("%s", problem)
            self._last_problem = problem

    # --- consuming ---------------------------------------------------------------------------

    def _consume_loop(self) -> None:
        while True:
            approval = self._consumed.get()
            if approval is None:
                return
            body = {
                "status": {
                    "consumedAt": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "consumedBy": self.identity,
                }
            }
            try:
                self._api().patch_namespaced_custom_object_status(
                    approvals.GROUP,
                    approvals.VERSION,
                    self.namespace,
                    approvals.PLURAL,
                    approval.name,
                    body,
                    _content_type="application/merge-patch+json",
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            except Exception as exc:  # this process still never reuses it; others may until expiry
                log.warning(
                    "could not mark Approval %s/%s consumed (%s); other replicas may honour it until "
                    "it expires",
                    self.namespace,
                    approval.name,
                    exc,
                )
