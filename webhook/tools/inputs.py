"""Reading the tools' inputs: files, directories, ``-`` for stdin, gzip by content, YAML or JSON
documents and ``List`` kinds.

Every failure becomes ``InputError`` (a ``command.Failed`` with exit code 2) with a message that
starts with the file name, so the command line prints it as is instead of showing a traceback.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import yaml

from webhook.tools import command

STDIN = "-"
GZIP_MAGIC = b"\x1f\x8b"


class InputError(command.Failed):
    """Unusable input; ``str()`` names the file (and line or document) and the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(message, command.EXIT_BAD_INPUT)


def expand(paths: Iterable[str], suffixes: tuple[str, ...]) -> list[str]:
    """Files as given; directories walked recursively (sorted, hidden entries skipped) for ``suffixes``."""
    found: list[str] = []
    for raw in paths:
        if raw == STDIN:
            found.append(raw)
            continue
        path = Path(raw)
        if path.is_dir():
            matches = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.name.endswith(suffixes)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not matches:
                raise InputError(f"{raw}: no {'/'.join(suffixes)} files in this directory")
            found.extend(str(p) for p in matches)
        elif path.exists():  # a file, or a device or pipe: /dev/null, <(zcat audit.log.gz)
            found.append(raw)
        else:
            raise InputError(f"{raw}: no such file or directory")
    return found


def read_bytes(name: str) -> bytes:
    """The whole input, decompressed when it is gzip (detected by its magic bytes, not its name)."""
    try:
        data = sys.stdin.buffer.read() if name == STDIN else Path(name).read_bytes()
        if data[:2] == GZIP_MAGIC:
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{display(name)}: cannot read: {exc}") from exc
    return data


def read_text(name: str) -> str:
    try:
        return read_bytes(name).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{display(name)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def lines(name: str) -> Iterator[str]:
    """Lines of a possibly huge (possibly gzip) text file, streamed."""
    try:
        if name == STDIN:
            yield from io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
            return
        with Path(name).open("rb") as handle:
            magic = handle.read(2)
            handle.seek(0)
            stream: IO[bytes] = handle
            if magic == GZIP_MAGIC:
                stream = cast(IO[bytes], gzip.GzipFile(fileobj=handle))
            yield from io.TextIOWrapper(stream, encoding="utf-8")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{display(name)}: cannot read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{display(name)}: not UTF-8 text ({exc.reason})") from exc


def display(name: str) -> str:
    return "<stdin>" if name == STDIN else name


def documents(name: str) -> list[Any]:
    """The YAML documents (or the one JSON document) of a file; empty documents dropped."""
    text = read_text(name)
    shown = display(name)
    if name.endswith(".json") or (name == STDIN and text.lstrip()[:1] in ("{", "[")):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{shown}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"
            ) from exc
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{shown}: {where}invalid YAML: {problem}") from exc


def flatten(docs: list[Any], shown: str) -> Iterator[tuple[str, Any]]:
    """``(source, document)``, expanding ``kind: List`` (what ``kubectl get -o yaml`` prints)."""
    for index, doc in enumerate(docs, start=1):
        source = f"{shown}#{index}" if len(docs) > 1 else shown
        kind = str(doc.get("kind", "")) if isinstance(doc, dict) else ""
        if isinstance(doc, dict) and isinstance(doc.get("items"), list) and kind.endswith("List"):
            # An API list (``kubectl get --raw``, ``ClusterRoleList``) leaves kind out of its items.
            item_kind = kind.removesuffix("List")
            for position, raw in enumerate(doc["items"]):
                item = raw
                if isinstance(raw, dict) and "kind" not in raw and item_kind:
                    item = {"apiVersion": doc.get("apiVersion", ""), "kind": item_kind, **raw}
                yield f"{source}.items[{position}]", item
        else:
            yield source, doc


def objects(paths: Iterable[str], suffixes: tuple[str, ...]) -> tuple[list[tuple[str, Any]], list[str]]:
    """Every document of every file (``List`` kinds expanded) as ``(source, document)``, and one
    problem per file that could not be read or held no document (the caller reports them together).
    A path that does not exist raises at once."""
    found: list[tuple[str, Any]] = []
    problems: list[str] = []
    for name in expand(paths, suffixes):
        try:
            docs = documents(name)
        except InputError as exc:
            problems.append(str(exc))
            continue
        if not docs:
            problems.append(f"{display(name)}: no documents")
        found.extend(flatten(docs, display(name)))
    return found, problems
