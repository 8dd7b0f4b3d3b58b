"""Reading the tools' inputs: files, directories, ``-`` for stdin, gzip by content.

Every failure becomes ``InputError`` (a ``command.Failed`` with exit code 2) with a message that
starts with the file name, so the command line prints it as is instead of showing a traceback.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, cast

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
