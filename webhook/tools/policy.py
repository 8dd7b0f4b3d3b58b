"""``agent-guard policy``: validate the policy; print each guard's effective mode and each exemption."""

from __future__ import annotations

import argparse

from webhook import engine
from webhook.tools import command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command.add_rules(parser)


def run(args: argparse.Namespace) -> int:
    loaded = command.load_policy(args, code=command.EXIT_FAILED)
    for guard_id in loaded.guards:
        print(f"{guard_id}: {loaded.mode_of(guard_id)}")
    status = engine.Engine(loaded).exemption_status()
    if status:
        print("exemptions:")
    for level, line in status:
        print(f"  {'WARNING ' if level == 'warning' else ''}{line}")
    return command.EXIT_OK
