"""Memory of the delete-budget ledger: bytes per bucket (identity x window) and per charged request.

``tracemalloc`` around filling a ledger: ``buckets`` identities with one charge each, then the same
identities with ``limit`` charges each (a bucket never holds more than its limit), then after the
window has passed and one sweep (everything expired must be gone).
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

from webhook import budget

T0 = 1_800_000_000.0


def _measure(buckets: int, charges: int, limit: int, window: float = 600.0) -> tuple[int, budget.Ledger]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ledger = budget.Ledger()
    for i in range(buckets):
        key = (f"system:serviceaccount:mcp-system:agent-{i:06d}", "*")
        for j in range(charges):
            ledger.charge(key, f"00000000-0000-0000-0000-{i:06d}{j:06d}", limit, window, T0 + j * 0.001)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used, ledger


def run(buckets: int = 10_000, limit: int = 20) -> dict[str, Any]:
    one, _ = _measure(buckets, 1, limit)
    full, ledger = _measure(buckets, limit, limit)
    # usernames and uids are the caller's strings (shared with the request in the server); the
    # numbers here include them, so they are an upper bound.
    per_entry = (full - one) / (buckets * (limit - 1))
    ledger.charge(("late", "*"), "x", limit, 600.0, T0 + 601)  # the next charge after the window sweeps
    return {
        "buckets": buckets,
        "limit": limit,
        "bytes_per_bucket_with_1_charge": round(one / buckets),
        "bytes_per_additional_charge": round(per_entry),
        "bytes_per_full_bucket": round(full / buckets),
        "keys_after_window_and_sweep": ledger.keys,
        "entries_after_window_and_sweep": ledger.entries,
    }


def main() -> int:
    print(json.dumps(run(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
