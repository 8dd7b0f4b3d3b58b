"""The state behind destructive budgets: which agent made how many destructive requests, and when.

Guards are pure functions of a request; a budget is not, so its memory lives here, in one ``Ledger``
object that the server creates once and hands to every ``Engine`` it builds: a policy reload swaps
the engine but keeps the ledger, so reloading the policy never refills anyone's budget. Time is
passed in (the engine's ``clock``), never read here, so tests are deterministic.

Semantics (a sliding window, exact, per ledger = per guard process): a key (agent identity, and a
namespace when budgets are per namespace) may have at most ``limit`` requests *charged* in any
interval of length ``window``. Only requests the guard admitted are charged (the engine settles a
verdict after it is decided), so refused attempts never spend budget. A retried review with the
same ``uid`` (the apiserver re-sending one admission call) is charged once.

Memory: a key keeps at most ``limit`` timestamps, and only while its newest one is younger than its
window; ``sweep`` (run every ``SWEEP_SECONDS`` of charges) drops keys that have expired. So the
ledger holds at most min(keys x limit, destructive requests admitted in the last window) entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SWEEP_SECONDS = 30.0

_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def parse_duration(value: object) -> float:
    """``"10m"``, ``"1h30m"``, ``"45s"`` or a number of seconds -> seconds (> 0); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10m, 1h or 90s")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value and (match := _DURATION.match(value.strip())):
        parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        if not parts:
            raise ValueError(f"{value!r} is not a duration such as 10m, 1h or 90s")
        seconds = float(parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0))
    else:
        raise ValueError(f"{value!r} is not a duration such as 10m, 1h or 90s")
    if seconds <= 0:
        raise ValueError("a duration must be longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The short form people write: ``10m``, ``1h30m``, ``45s`` (whole seconds, rounded up)."""
    total = max(0, int(-(-seconds // 1)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
    return text or "0s"


Key = tuple[str, str]  # (username, namespace or "" when the budget spans all namespaces)


@dataclass(frozen=True, slots=True)
class Spent:
    """What a key has spent within its window at one moment."""

    count: int  # charged requests younger than the window (never more than the limit was)
    oldest: float | None  # when the oldest of them was made: one more fits at oldest + window
    newest: float | None  # the budget is whole again at newest + window
    charged: bool  # this very request (by uid) was already charged: a retry, never refused


class _Entry:
    """One key's recent charges, oldest first, and the window they were charged against.

    Plain lists (a bucket holds at most ``limit`` items, so ``pop(0)`` is cheap) and the hash of each
    uid instead of the string: the measured cost is in docs/budgets.md.
    """

    __slots__ = ("cap", "times", "uids", "window")

    def __init__(self, window: float, limit: int) -> None:
        self.window = window
        self.cap = max(limit, 1)
        self.times: list[float] = []
        self.uids: list[int] = []

    def expire(self, now: float) -> None:
        lapsed = 0
        while lapsed < len(self.times) and self.times[lapsed] <= now - self.window:
            lapsed += 1
        if lapsed:
            del self.times[:lapsed], self.uids[:lapsed]

    def add(self, at: float, uid: int) -> None:
        self.times.append(at)
        self.uids.append(uid)
        if len(self.times) > self.cap:  # dry-run mode admits past the limit: keep the newest ``limit``
            del self.times[0], self.uids[0]


class Ledger:
    """Charges per key in a sliding window. Not thread-safe: the server judges on its event loop."""

    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}
        self._swept = float("-inf")
        self.charged_total = 0

    def spent(self, key: Key, uid: str, window: float, now: float) -> Spent:
        entry = self._entries.get(key)
        if entry is None:
            return Spent(0, None, None, False)
        entry.window = window
        entry.expire(now)
        if not entry.times:
            return Spent(0, None, None, False)
        retry = bool(uid) and hash(uid) in entry.uids
        return Spent(len(entry.times), entry.times[0], entry.times[-1], retry)

    def charge(self, key: Key, uid: str, limit: int, window: float, now: float) -> None:
        """Record one admitted destructive request (once per uid) and expire what has lapsed."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(window, limit)
        entry.window, entry.cap = window, max(limit, 1)  # a reload may have changed them
        entry.expire(now)
        while len(entry.times) > entry.cap:
            del entry.times[0], entry.uids[0]
        digest = hash(uid)
        if not (uid and digest in entry.uids):
            entry.add(now, digest)
            self.charged_total += 1
        if now - self._swept >= SWEEP_SECONDS:
            self.sweep(now)

    def sweep(self, now: float) -> None:
        """Forget every key whose newest charge is older than its window."""
        self._swept = now
        for key in [k for k, e in self._entries.items() if not e.times or e.times[-1] <= now - e.window]:
            del self._entries[key]

    @property
    def keys(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> int:
        return sum(len(e.times) for e in self._entries.values())
