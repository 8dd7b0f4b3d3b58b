"""The guard's live view of the cluster's RBAC: list + watch of the four RBAC kinds, off the request path.

The guards judge an agent's binding or workload by what the roles involved *grant* (``webhook.rbac``),
so they need the cluster's Roles, ClusterRoles, RoleBindings and ClusterRoleBindings. Reading them
per review would put an apiserver round trip (and its failure modes) into every admission call; so a
background thread per kind lists the kind and then watches it (the informer pattern, with the
official ``kubernetes`` client), keeps the objects in a store, and after every change builds a new
immutable ``rbac.Snapshot`` and swaps it in with one reference assignment (a builder thread
coalesces a burst of changes, a ``helm install`` of fifty roles, into one or two builds). A review reads
``RbacCache.snapshot()`` once and judges against that: never a half-applied update, never a lock
on the hot path.

Until every kind has been listed once, ``snapshot()`` is None: the guards then refuse the agent
requests that need it, with a reason that says to retry (fail closed for agents, never for anyone
else). After that the last good snapshot stays in force while a watch reconnects or re-lists
(a ``410 Gone`` means the resourceVersion is too old: list again). Errors are logged and retried
with a capped back-off; the thread never dies. With ``workers > 1`` each forked worker starts its
own cache (threads do not survive ``fork``).

Sources (``agent-guard serve --rbac-source``): ``in-cluster`` (the Pod's projected ServiceAccount
token, refreshed by the client as the kubelet rotates it), ``kubeconfig:PATH``, or ``none`` (no
cache: the guards keep judging by names alone).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from webhook import rbac

log = logging.getLogger("agent-guard.rbac")

NONE, IN_CLUSTER, KUBECONFIG = "none", "in-cluster", "kubeconfig"
WATCH_SECONDS = 300  # the apiserver ends a watch after this; we resume from the last resourceVersion
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
COALESCE_SECONDS = 0.05  # after a change, wait this long for more before building a snapshot
GONE = 410

# kind -> (list method of RbacAuthorizationV1Api, cluster-wide for namespaced kinds)
LISTS = {
    rbac.ROLE: "list_role_for_all_namespaces",
    rbac.CLUSTER_ROLE: "list_cluster_role",
    rbac.ROLE_BINDING: "list_role_binding_for_all_namespaces",
    rbac.CLUSTER_ROLE_BINDING: "list_cluster_role_binding",
}


def _kubernetes() -> Any:
    """The ``kubernetes`` package (untyped): imported only by a guard that has a source."""
    import kubernetes  # noqa: PLC0415

    return kubernetes


class SourceError(ValueError):
    """``--rbac-source`` is malformed or cannot be used; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where the guard reads RBAC from: ``kind`` is none | in-cluster | kubeconfig (with ``path``)."""

    kind: str = NONE
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        if text in (NONE, IN_CLUSTER):
            return cls(text)
        prefix = f"{KUBECONFIG}:"
        if text.startswith(prefix) and text[len(prefix) :]:
            return cls(KUBECONFIG, Path(text[len(prefix) :]))
        raise SourceError(f"{text!r}: use {NONE}, {IN_CLUSTER} or {KUBECONFIG}:PATH")

    def __str__(self) -> str:
        return f"{KUBECONFIG}:{self.path}" if self.kind == KUBECONFIG else self.kind

    def api_client(self) -> Any:
        """A ``kubernetes`` ApiClient for this source (SourceError when it cannot be configured)."""
        k8s = _kubernetes()
        try:
            if self.kind == IN_CLUSTER:
                configuration = k8s.client.Configuration()
                k8s.config.load_incluster_config(client_configuration=configuration)
                return k8s.client.ApiClient(configuration)
            if self.kind == KUBECONFIG and self.path is not None:
                if not self.path.is_file():
                    raise SourceError(f"{self}: no such file")
                return k8s.config.new_client_from_config(config_file=str(self.path))
        except k8s.config.ConfigException as exc:
            raise SourceError(f"{self}: {exc}") from exc
        except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
            if isinstance(exc, SourceError):
                raise
            raise SourceError(f"{self}: cannot read it ({type(exc).__name__}: {exc})") from exc
        raise SourceError(f"{self}: no API client for this source")


NO_SOURCE = Source()


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return "", ""
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def build_snapshot(stores: Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]]) -> rbac.Snapshot:
    """A Snapshot from the four stores; an object RBAC would not accept is skipped (and logged)."""
    roles: list[rbac.Role] = []
    bindings: list[rbac.Binding] = []
    for kind, store in stores.items():
        for obj in store.values():
            try:
                if kind in (rbac.ROLE, rbac.CLUSTER_ROLE):
                    roles.append(rbac.role_from_dict(obj, kind))
                else:
                    bindings.append(rbac.binding_from_dict(obj, kind))
            except rbac.RbacObjectError as exc:
                log.warning("ignoring %s %s/%s: %s", kind, *_key(obj), exc)
    return rbac.Snapshot(roles, bindings)


class RbacCache:
    """The watched RBAC objects and the current Snapshot (``webhook.guards.base.RbacView``)."""

    def __init__(self, source: Source, client_factory: Callable[[], Any] | None = None) -> None:
        self.source = source
        self._client_factory = client_factory or source.api_client
        self._stores: dict[str, dict[tuple[str, str], Mapping[str, Any]]] = {kind: {} for kind in LISTS}
        self._listed: set[str] = set()
        self._versions: dict[str, str] = {}  # kind -> last resourceVersion read (list, event, bookmark)
        self._snapshot_versions: dict[str, str] = {}  # the same, as of the snapshot in force
        self._lock = threading.Lock()
        self._snapshot: rbac.Snapshot | None = None
        self._stop = threading.Event()
        self._dirty = threading.Event()
        self._threads: list[threading.Thread] = []
        self.error: str | None = None  # the last error of any watch (None once it recovers)

    # --- what the guards read ------------------------------------------------------------------

    def snapshot(self) -> rbac.Snapshot | None:
        """The current Snapshot, or None until every kind has been listed once."""
        return self._snapshot

    @property
    def synced(self) -> bool:
        return self._snapshot is not None

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: synced or not, object counts, the last error."""
        answer: dict[str, Any] = {"source": str(self.source), "synced": self.synced}
        current = self._snapshot
        if current is not None:
            answer["roles"] = len(current.roles)
            answer["bindings"] = len(current.bindings)
            # What the snapshot has seen, per kind: a change with a resourceVersion at or below this is in
            # it (tests and operators can tell whether the guard already knows of a binding).
            answer["resourceVersions"] = dict(self._snapshot_versions)
        if self.error is not None:
            answer["error"] = self.error
        return answer

    # --- running ---------------------------------------------------------------------------------

    def start(self) -> None:
        """A daemon thread per kind (list, then watch) and one that builds snapshots; returns at once
        (``snapshot()`` stays None until every kind has been listed)."""
        if self._threads:
            return
        api = self._client_factory()
        self._threads.append(threading.Thread(target=self._build_loop, name="rbac-snapshot", daemon=True))
        for kind in LISTS:
            thread = threading.Thread(
                target=self._run, args=(api, kind), name=f"rbac-watch-{kind}", daemon=True
            )
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Ask the threads to end (they are daemons: a watch blocked on the network does not hold
        the process; an open watch ends at the apiserver's timeout)."""
        self._stop.set()
        self._dirty.set()  # wake the builder so it sees the stop

    def _run(self, api_client: Any, kind: str) -> None:
        k8s = _kubernetes()
        api = k8s.client.RbacAuthorizationV1Api(api_client)
        list_method = getattr(api, LISTS[kind])
        failures = 0
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list(kind, list_method)
                version = self._watch(kind, list_method, version)
                failures = 0
            except k8s.client.ApiException as exc:
                if exc.status == GONE:
                    version = ""  # too old: list again (the snapshot in force stays meanwhile)
                    continue
                failures += 1
                self._failed(kind, f"HTTP {exc.status} {exc.reason}", failures)
            except Exception as exc:  # network errors, a broken stream: retry, never die
                failures += 1
                self._failed(kind, f"{type(exc).__name__}: {exc}", failures)

    def _failed(self, kind: str, reason: str, failures: int) -> None:
        self.error = f"{kind}: {reason}"
        delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS)) - 1]
        log.warning("watching %ss failed (%s); retrying in %.1fs", kind, reason, delay)
        self._stop.wait(delay)

    def _list(self, kind: str, list_method: Callable[..., Any]) -> str:
        response = list_method(_preload_content=False, _request_timeout=60)
        body = json.loads(response.data)
        items = {_key(obj): obj for obj in body.get("items") or () if isinstance(obj, Mapping)}
        version = str(body.get("metadata", {}).get("resourceVersion", ""))
        with self._lock:
            self._stores[kind] = items
            self._listed.add(kind)
            self._versions[kind] = version
        self._recovered(kind)
        self._dirty.set()
        log.info("listed %d %ss (resourceVersion %s)", len(items), kind, version)
        return version

    def _watch(self, kind: str, list_method: Callable[..., Any], version: str) -> str:
        k8s = _kubernetes()
        watcher = k8s.watch.Watch()
        stream: Iterator[dict[str, Any]] = watcher.stream(
            list_method,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
            allow_watch_bookmarks=True,
            _request_timeout=WATCH_SECONDS + 30,
        )
        for event in stream:
            if self._stop.is_set():
                watcher.stop()
                break
            # The client raises ApiException for ERROR events (410 Gone included); ``raw_object`` is the
            # object as the apiserver sent it (camelCase), which is what ``webhook.rbac`` reads.
            kind_of_event, obj = event.get("type"), event.get("raw_object")
            if not isinstance(obj, Mapping):
                continue
            new_version = str(obj.get("metadata", {}).get("resourceVersion", "")) or version
            with self._lock:
                if kind_of_event == "DELETED":
                    self._stores[kind].pop(_key(obj), None)
                elif kind_of_event != "BOOKMARK":
                    self._stores[kind][_key(obj)] = obj
                self._versions[kind] = new_version
            self._recovered(kind)
            self._dirty.set()
            version = new_version
        return version

    def _recovered(self, kind: str) -> None:
        if self.error is not None and self.error.startswith(f"{kind}:"):
            self.error = None

    def _build_loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.wait(COALESCE_SECONDS):
                return
            self._dirty.clear()
            try:
                self.rebuild()
            except Exception:  # a bug here must not stop the view from following the cluster
                log.exception("building the RBAC snapshot failed; the previous one stays in force")

    def rebuild(self) -> bool:
        """Build a Snapshot from the stores and swap it in, once every kind has been listed (the
        builder thread calls this after changes; False: not every kind listed yet)."""
        with self._lock:
            if len(self._listed) < len(LISTS):
                return False
            stores = {kind: dict(store) for kind, store in self._stores.items()}
            versions = dict(self._versions)
        built = build_snapshot(stores)
        first = self._snapshot is None
        self._snapshot = built
        self._snapshot_versions = versions
        if first:
            log.info(
                "RBAC view synced from %s: %d roles, %d bindings",
                self.source,
                len(built.roles),
                len(built.bindings),
            )
        return True
