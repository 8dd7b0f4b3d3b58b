"""Reading a Kubernetes object the way guards must: a wrong type is an answer, never "absent".

The apiserver decodes typed objects before admission, so a list where the API has an object (a
``securityContext: [{"privileged": true}]``, containers under an object) only reaches the guard from
a broken or hostile client on the network path. Reading such a value as empty would hide what is
inside it; so every reader here returns the value when it has the expected JSON type, an empty value
when it is absent (missing or ``null``, as in the API), and otherwise raises ``Malformed``. The
engine turns that into a finding of the guard that read it (``[guard-id] malformed object: ...``),
in the guard's mode: only agents' requests are judged at all.

Lists are also where the work of a review grows: a Pod with tens of thousands of containers is
legal JSON. ``MAX_ITEMS`` bounds every list a guard walks; beyond it the reader raises ``TooLarge``,
which is a finding the same way. Guards read through these functions (directly, or through their
family's ``_text``/``_items``-style helpers and ``podspec``), so the rule lives in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Items per list a guard walks (containers, volumes, env, rules, subjects, ...). Real objects
# stay far below: Kubernetes validation caps a pod's containers only through its object size, and
# a pod with even a hundred containers is exotic. The bound keeps one review well under a
# hundred milliseconds of guard work (measured in docs/hardening.md).
MAX_ITEMS = 1000


class Unreadable(Exception):
    """The object cannot be judged as it is; ``finding`` is the message (the engine adds the id)."""

    def __init__(self, field: str, value: Any) -> None:
        super().__init__(field)
        self.field = field
        self.value = value

    def finding(self, *roots: Any) -> str:
        """The message, naming the field: the reader's, or else found in ``roots`` (the objects)."""
        where = self.field
        if not where:
            where = next((path for root in roots if (path := locate(root, self.value))), "")
        return self.describe(where or "a field this guard reads")

    def describe(self, where: str) -> str:
        raise NotImplementedError


class Malformed(Unreadable):
    def __init__(self, field: str, expected: str, value: Any) -> None:
        super().__init__(field, value)
        self.expected = expected

    def describe(self, where: str) -> str:
        return (
            f"malformed object: {where} is {kind(self.value)} where the Kubernetes API has "
            f"{self.expected}; the apiserver never sends this, so the request is refused: send the "
            "object as the API defines it"
        )


class TooLarge(Unreadable):
    def describe(self, where: str) -> str:
        return (
            f"{where} has {len(self.value)} items, more than the {MAX_ITEMS} the guard reviews per "
            "list; agents may not write objects this large: split the work into smaller objects"
        )


def locate(root: Any, target: Any, budget: int = 100_000) -> str:
    """The field path (``spec.containers[0].securityContext``) of the value that *is* ``target``.

    Readers called without a field name do not know where their value came from; the object does.
    Only run for a finding, and bounded by ``budget`` values visited. "" if not found, and for
    booleans, numbers and null, which are shared objects and could be found in the wrong place.
    """
    if not isinstance(target, Mapping | list | str):
        return ""
    stack: list[tuple[str, Any]] = [("", root)]
    while stack and budget > 0:
        path, value = stack.pop()
        budget -= 1
        if value is target and path:
            return path
        if isinstance(value, Mapping):
            stack.extend((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return ""


def kind(value: Any) -> str:
    """The JSON type of a value, as a message names it."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


def mapping(value: Any, field: str = "") -> Mapping[str, Any]:
    """An object field: the mapping, ``{}`` when absent, Malformed otherwise."""
    if isinstance(value, Mapping):
        return value
    if value is None:
        return {}
    raise Malformed(field, "an object", value)


def items(value: Any, field: str = "") -> list[Any]:
    """A list field: the list (at most MAX_ITEMS long), ``[]`` when absent, Malformed otherwise."""
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise TooLarge(field, value)
        return value
    if value is None:
        return []
    raise Malformed(field, "a list", value)


def mappings(value: Any, field: str = "") -> Iterator[tuple[int, Mapping[str, Any]]]:
    """``(index, item)`` of a list of objects; any item that is not an object (even null) is Malformed."""
    for index, item in enumerate(items(value, field)):
        if not isinstance(item, Mapping):
            raise Malformed(f"{field}[{index}]" if field else "", "an object", item)
        yield index, item


def text(value: Any, field: str = "") -> str:
    """A string field: the string, ``""`` when absent, Malformed otherwise."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    raise Malformed(field, "a string", value)


def string_map(value: Any, field: str = "") -> Mapping[str, str]:
    """An object of strings (labels, annotations); any value that is not a string is Malformed."""
    found = mapping(value, field)
    for key, item in found.items():
        if not isinstance(item, str):
            raise Malformed(f'{field}["{key}"]' if field else "", "a string", item)
    return found


def strings(value: Any, field: str = "") -> list[str]:
    """A list of strings; any item that is not a string is Malformed."""
    found = items(value, field)
    for index, item in enumerate(found):
        if not isinstance(item, str):
            raise Malformed(f"{field}[{index}]" if field else "", "a string", item)
    return found
