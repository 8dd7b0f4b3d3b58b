"""Operator tools that run without a cluster: ``check``, ``replay`` and ``report``.

Each tool is one module with ``add_arguments(parser)`` and ``run(args) -> int`` so that
``webhook.cli`` only wires them up. Exit codes are shared: 0 nothing would be denied, 1 something
would be denied (dry-run findings included), 2 bad input (the message names the file).
"""
