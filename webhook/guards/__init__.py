"""Guard families: every module in this package is one, and defines ``FAMILY``.

``discover()`` imports them into a ``Registry``; the policy is loaded against a registry (so a guard
section must name a family in it), and the engine and manifest rendering take the families from the
loaded policy. A test or an embedding program passes its own ``Registry`` instead of patching
globals. A module here without ``FAMILY`` is an error, not silently skipped: helpers shared by
families live outside this package (``webhook.podspec``, ``webhook.pss``), so that adding a family
stays one new module plus a fixture folder under ``tests/fixtures/<guard-id>/``.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from webhook.guards import base

_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
CONTRACT = "base"  # the one module here that is not a family: the contract families implement


class Registry:
    """An ordered, validated set of guard families (kopf's registry-as-object).

    Ordered by id, so output and logs are stable; ids are lowercase-with-dashes and unique.
    """

    def __init__(self, families: Iterable[base.Family[Any]]) -> None:
        found: dict[str, base.Family[Any]] = {}
        for family in families:
            if not isinstance(family, base.Family):
                raise TypeError(f"{family!r} is not a guards.base.Family")
            if not _ID.match(family.id):
                raise ValueError(f"guard id {family.id!r} is not lowercase-with-dashes")
            if family.id in found:
                raise ValueError(f"guard id {family.id!r} is defined twice")
            found[family.id] = family
        self.families: tuple[base.Family[Any], ...] = tuple(found[key] for key in sorted(found))
        self.by_id: Mapping[str, base.Family[Any]] = {family.id: family for family in self.families}

    def __iter__(self) -> Iterator[base.Family[Any]]:
        return iter(self.families)

    def __len__(self) -> int:
        return len(self.families)

    def __repr__(self) -> str:
        return f"Registry({', '.join(self.by_id)})"

    def with_families(self, *extra: base.Family[Any]) -> Registry:
        """This registry plus ``extra`` (e.g. a test-only family next to the shipped ones)."""
        return Registry((*self.families, *extra))

    def replacing(self, *families: base.Family[Any]) -> Registry:
        """This registry with the families of the same ids swapped for ``families``."""
        swapped = {family.id: family for family in families}
        return Registry(swapped.get(family.id, family) for family in self.families)


@functools.cache
def discover(package: str = __name__) -> Registry:
    """Import every module of ``package`` and register its ``FAMILY`` (the shipped families by default).

    A module without ``FAMILY`` raises: it would otherwise look like a guard and guard nothing.
    """
    path = importlib.import_module(package).__path__
    found: list[base.Family[Any]] = []
    for info in pkgutil.iter_modules(path):
        if info.name == CONTRACT:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if family is None:
            raise ImportError(
                f"{module.__name__} defines no FAMILY: every module in {package} is a guard family "
                "(put helpers shared by families outside the package)"
            )
        try:
            Registry((*found, family))
        except (TypeError, ValueError) as exc:
            raise ImportError(f"{module.__name__}.FAMILY: {exc}") from exc
        found.append(family)
    return Registry(found)


def families() -> tuple[base.Family[Any], ...]:
    """The shipped families, ordered by id (``discover().families``)."""
    return discover().families


def by_id() -> Mapping[str, base.Family[Any]]:
    """The shipped families by id (``discover().by_id``)."""
    return discover().by_id
