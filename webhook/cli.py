"""``agent-guard``: serve the webhook and the tools around it.

Every subcommand is a module in ``webhook.tools`` with ``add_arguments(parser)`` and
``run(args) -> int`` (``webhook.tools.command``); this module only lists them, and is the one
place that prints a command's ``Failed`` error and turns it into the exit code.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence

from webhook import guards
from webhook.tools import (
    apiserver_client,
    approve,
    certs,
    check,
    command,
    manifests,
    policy,
    rbactools,
    replay,
    report,
    serve,
)

# (name, module, one-line summary), in the order `agent-guard --help` lists them.
COMMANDS: tuple[tuple[str, command.Command, str], ...] = (
    (
        "serve",
        serve,
        "run the TLS webhook server",
    ),
    ("certs", certs, "create a CA and a serving certificate; prints the caBundle"),
    ("manifests", manifests, "render Kubernetes objects from the policy"),
    ("policy", policy, "validate the policy and print each guard's effective mode"),
    ("check", check, "judge manifests or AdmissionReviews offline, as an agent (exit 1: would deny)"),
    ("replay", replay, "replay a Kubernetes audit log through the policy: what would have been denied"),
    ("report", report, "summarize decision logs: denials by guard, agent, namespace, message"),
    ("rbac", rbactools, "audit what RBAC grants agents (exit 1: unstopped), or suggest least privilege"),
    ("approve", approve, "approve one exact agent request a guard denied, once (writes an Approval)"),
    ("apiserver-client", apiserver_client, "the certificate the kube-apiserver presents to the guard"),
)


def version() -> str:
    """The installed distribution's version: pyproject.toml is the one place it is written."""
    try:
        return importlib.metadata.version("kube-agent-guard")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="agent-guard",
        description="Server-side guard that keeps LLM agents (MCP servers) from harming a cluster.",
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, summary in COMMANDS:
        parsed = sub.add_parser(name, help=summary, description=summary)
        parsed.set_defaults(func=module.run)
        module.add_arguments(parsed)
    return root


def _prog(args: argparse.Namespace) -> str:
    """``agent-guard check``, ``agent-guard manifests authz``, ``agent-guard rbac audit``: who is
    speaking in an error line."""
    sub = getattr(args, command.SUBCOMMAND, None)
    return " ".join(["agent-guard", args.command, *([sub] if sub else [])])


def main(argv: Sequence[str] | None = None, families: guards.Registry | None = None) -> int:
    """Run one command; ``families`` replaces the shipped guard families (tests, embedding)."""
    args = parser().parse_args(argv)
    args.families = families
    try:
        code: int = args.func(args)
    except command.Failed as exc:
        print(f"{_prog(args)}: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `agent-guard report log | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
