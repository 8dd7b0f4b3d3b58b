"""Pick up new policy files and rotated certificates while serving, without a restart.

Kubernetes updates a mounted ConfigMap or Secret by writing a new timestamped directory and swapping
the ``..data`` symlink; every file name then resolves to a new inode. cert-manager renewing a
certificate does the same through the Secret. inotify on such trees is fiddly (the watched inode
disappears), so this polls instead: ``os.stat`` of each file, through the symlinks, every couple of
seconds — a handful of syscalls, nothing read unless something changed.

A change is acted on once it has settled by content (``Watch``: the same bytes at two consecutive
polls), so a writer that replaces files one at a time (``agent-guard certs --force``: key first,
then certificate) or writes a file in pieces is not caught half-way, and what is loaded is checked
to be what settled. A writer that pauses mid-file for longer than the reload interval can still be
caught; the ConfigMap mount (the kubelet swaps a ``..data`` symlink to a complete new directory) and
any write-then-rename are atomic and never are. See docs/hardening.md. Then:

- policy: load and compile off the event loop; on success swap ``State.engine`` (one reference
  assignment, so a review in flight finishes with the engine it started with); on failure log the
  error naming file and field, count it, and keep the last good policy in force.
- certificate: build a whole new serving context from the pair (``webhook.tls``; a mismatched pair
  fails there and changes nothing) and switch new handshakes to it, whatever the key type of the
  old and the new pair. Existing connections keep their session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from webhook import app, certs, engine, manifests, policy, tls

log = logging.getLogger("agent-guard.reload")

DEFAULT_INTERVAL_SECONDS = 2.0

Snapshot = tuple[tuple[str, int, int, int, int] | tuple[str], ...]


def snapshot(files: Sequence[Path]) -> Snapshot:
    """Identity of each file's current content: device, inode, mtime and size, through symlinks."""
    found: list[tuple[str, int, int, int, int] | tuple[str]] = []
    for file in files:
        try:
            st = os.stat(file)
        except OSError:
            found.append((str(file),))
            continue
        found.append((str(file), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(found)


Content = tuple[tuple[str, bytes | None], ...]


def contents(files: Sequence[Path]) -> Content:
    """Each file's bytes (None if it cannot be read), through symlinks."""
    found: list[tuple[str, bytes | None]] = []
    for file in files:
        try:
            found.append((str(file), file.read_bytes()))
        except OSError:
            found.append((str(file), None))
    return tuple(found)


class Watch:
    """Polls a set of files; ``changed()`` is true once per settled change of their content.

    Settled means: read at two consecutive polls (one reload interval apart, 2 s by default), the
    files hold the same bytes, and those differ from the content last acted on. A writer still at
    work changes the bytes between the two reads and is looked at again at the next poll; an
    in-place rewrite with the same bytes is no change. ``stat`` alone decides whether to read at all.
    """

    def __init__(self, files: Callable[[], list[Path]]) -> None:
        self._files = files
        self._seen = snapshot(files())
        self._pending: Content | None = None
        self.content = contents(files())  # what the caller last acted on

    async def changed(self) -> bool:
        files = self._files()
        current = snapshot(files)
        if current == self._seen and self._pending is None:
            return False
        self._seen = current
        now = contents(files)
        if now == self.content:
            self._pending = None
            return False
        if now != self._pending:
            self._pending = now  # first sight, or still being written: read again at the next poll
            return False
        self._pending = None
        self.content = now
        return True

    def unsettle(self) -> None:
        """What was acted on is not what the files hold: settle them anew from the next poll."""
        self._seen, self.content = (), ()


def _routing(loaded: policy.Policy) -> tuple[object, ...]:
    return (manifests.admission_rules(loaded), manifests.match_conditions(loaded))


class PolicyReloader:
    def __init__(self, rules: Path, mode: policy.GlobalMode | None, state: app.State) -> None:
        self.rules = rules
        self.mode = mode
        self.state = state
        self.watch = Watch(lambda: policy.policy_files(rules))

    async def poll(self) -> None:
        if await self.watch.changed():
            await self.reload()

    async def reload(self) -> bool:
        state = self.state
        before = contents(policy.policy_files(self.rules))
        try:
            judge = await asyncio.to_thread(engine.compile_policy, self.rules, self.mode, state.engine)
        except policy.PolicyError as exc:
            if self._moved(before):  # refused a half-written file: judge the finished one instead
                return False
            state.policy_error = str(exc)
            state.metrics.policy_reload(ok=False)
            log.error(
                "policy reload refused, the last good policy stays in force (%s):\n%s",
                ", ".join(state.engine.policy.sources),
                exc,
            )
            return False
        if self._moved(before):
            return False
        old = state.engine
        state.engine = judge
        state.policy_error = None
        state.metrics.policy_reload(ok=True)
        log.info("policy reloaded from %s (mode %s)", ", ".join(judge.policy.sources), judge.policy.mode)
        if _routing(old.policy) != _routing(judge.policy):
            log.warning(
                "the new policy changes which requests the apiserver must send (agent identities or "
                "active guards): re-render and apply the ValidatingWebhookConfiguration "
                "(agent-guard manifests webhook, or make manifests deploy)"
            )
        return True

    def _moved(self, before: Content) -> bool:
        """The files changed while they were being loaded: what was loaded may be a mix."""
        if contents(policy.policy_files(self.rules)) == before:
            return False
        log.info("the policy files changed while being loaded; waiting for them to settle")
        self.watch.unsettle()
        return True


class CertificateReloader:
    def __init__(self, paths: certs.Paths, switch: tls.Switch, state: app.State) -> None:
        self.paths = paths
        self.switch = switch
        self.state = state
        self.watch = Watch(lambda: [paths.cert, paths.key])

    async def poll(self) -> None:
        if await self.watch.changed():
            self.reload()

    def reload(self) -> bool:
        # Resolve the ..data symlinks once so certificate and key come from the same generation.
        cert, key = Path(os.path.realpath(self.paths.cert)), Path(os.path.realpath(self.paths.key))
        try:
            not_after = certs.not_after(cert)
            self.switch.replace(cert, key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.state.metrics.certificate_reload(ok=False)
            log.error(
                "certificate reload refused, still serving the previous certificate: %s / %s: %s",
                self.paths.cert,
                self.paths.key,
                exc,
            )
            return False
        self.state.metrics.certificate_reload(ok=True)
        self.state.metrics.certificate_in_use(not_after)
        log.info("serving certificate reloaded from %s (valid until %s)", self.paths.cert, not_after)
        return True


class Reloader:
    """The background task: poll every ``interval`` seconds until cancelled; never dies on an error."""

    def __init__(self, interval: float, *watchers: PolicyReloader | CertificateReloader) -> None:
        self.interval = interval
        self.watchers = watchers

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for watcher in self.watchers:
                try:
                    await watcher.poll()
                except Exception:  # a bug here must not stop reloading or take the server down
                    log.exception("reload check failed in %s", type(watcher).__name__)
