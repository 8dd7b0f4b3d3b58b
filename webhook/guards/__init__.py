"""Guard registry: every module in this package that defines ``FAMILY`` is a guard family.

Adding a family is one new module here plus a fixture folder under ``tests/fixtures/<guard-id>/``;
nothing else has to learn its name.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from typing import Any

from webhook.guards import base

_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@functools.cache
def families() -> tuple[base.Family[Any], ...]:
    """All guard families, ordered by id (stable output, stable logs)."""
    found: dict[str, base.Family[Any]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if family is None:
            continue
        if not isinstance(family, base.Family):
            raise TypeError(f"{module.__name__}.FAMILY is not a guards.base.Family")
        if not _ID.match(family.id):
            raise ValueError(f"{module.__name__}: guard id {family.id!r} is not lowercase-with-dashes")
        if family.id in found:
            raise ValueError(f"guard id {family.id!r} is defined twice")
        found[family.id] = family
    return tuple(found[key] for key in sorted(found))


def by_id() -> dict[str, base.Family[Any]]:
    return {family.id: family for family in families()}
