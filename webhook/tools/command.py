"""The contract every ``agent-guard`` subcommand follows, and the one error they raise.

A subcommand is a module with ``add_arguments(parser)`` and ``run(args) -> int``; ``webhook.cli``
only wires them up. A command that cannot do what was asked raises ``Failed`` with a message that
names the file, option or field and what is wrong; ``cli.main`` prints it once, prefixed with the
command (``agent-guard check: rules/x.yaml: ...``), and exits with its code - never a traceback.
A command with sub-commands (``manifests KIND``, ``rbac audit|suggest``) stores the chosen one
as ``args.subcommand`` (``dest=SUBCOMMAND``), so the prefix names it too. Progress lines and
warnings, which do not end the command, go to stderr directly. The argument types below turn bad
option values into argparse's own exit 2 with the same kind of message.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from webhook import certs, guards, policy

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
SUBCOMMAND = "subcommand"  # the ``dest`` of a command's sub-commands, which ``cli.main`` names
N = TypeVar("N", int, float)


class Failed(Exception):
    """The command cannot go on; ``str()`` is the whole message, ``code`` the exit status."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


class Command(Protocol):
    """What ``webhook.cli`` needs from a subcommand module."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _number(text: str, kind: Callable[[str], N], what: str, ok: Callable[[N], bool]) -> N:
    """``text`` as ``kind`` if ``ok`` accepts it; otherwise argparse's error: ``must be <what>, got X``."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def seconds(text: str) -> float:
    return _number(text, float, "between 0 and 86400 seconds", lambda v: 0 <= v < 86400)


def timeout(text: str) -> float:
    """A deadline in seconds: more than 0, less than a day."""
    return _number(text, float, "more than 0 and less than 86400 seconds", lambda v: 0 < v < 86400)


def positive(text: str) -> int:
    return _number(text, int, "a positive integer", lambda v: v >= 1)


def port(text: str) -> int:
    """A TCP port the guard can bind: 1-65535 (the OS would silently wrap or refuse anything else)."""
    return _number(text, int, "a port between 1 and 65535", lambda v: 1 <= v <= 65535)


def ca_bundle(text: str) -> str:
    """``--ca-bundle``: base64 of PEM CA certificates, checked here rather than by the apiserver later."""
    try:
        return certs.check_ca_bundle(text)
    except certs.CertError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_rules(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", default="rules", help="policy file or directory (default rules/)")


def load_policy(args: argparse.Namespace, *, code: int, what: str = "invalid policy") -> policy.Policy:
    """The policy at ``args.rules`` (``args.mode`` applied, for the guard families ``cli.main`` was
    given), or Failed listing every ``file: field: problem`` under ``what``."""
    try:
        return policy.load(Path(args.rules), getattr(args, "mode", None), families(args))
    except policy.PolicyError as exc:
        raise Failed(f"{what}:\n{exc}", code) from None


def families(args: argparse.Namespace) -> guards.Registry | None:
    """The guard families ``cli.main`` was called with (None: the shipped ones)."""
    registry: guards.Registry | None = getattr(args, "families", None)
    return registry
