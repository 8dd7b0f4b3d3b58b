"""The ``agent-guard`` subcommands, one module each: ``serve``, ``certs``, ``manifests``, ``policy``,
and the operator tools that run without a cluster, ``check``, ``replay`` and ``report``.

Each module has ``add_arguments(parser)`` and ``run(args) -> int`` and raises ``command.Failed`` for
anything it cannot do (``webhook.tools.command``), so that ``webhook.cli`` only wires them up. The
offline tools share their exit codes: 0 nothing would be denied, 1 something would be denied
(dry-run findings included), 2 bad input (the message names the file).
"""
