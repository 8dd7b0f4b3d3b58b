"""``agent-guard certs``: a CA and a serving certificate (``webhook.certs``); prints the caBundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from webhook import certs
from webhook.tools import command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="certs", help="directory to write ca.crt, tls.crt, tls.key")
    parser.add_argument("--service", default=certs.DEFAULT_SERVICE, help="Service name (default agent-guard)")
    parser.add_argument(
        "--namespace", default=certs.DEFAULT_NAMESPACE, help="namespace (default agent-guard-system)"
    )
    parser.add_argument(
        "--days", type=command.positive, default=certs.DEFAULT_DAYS, help="validity in days (default 365)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing pair (and its CA)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise command.Failed(f"--out {out}: not a directory (it names the directory to write)")
    try:
        paths, created = certs.ensure(out, args.service, args.namespace, args.days, args.force)
    except certs.CertError as exc:
        raise command.Failed(str(exc), command.EXIT_FAILED) from None
    except OSError as exc:
        raise command.Failed(f"cannot write {out}: {exc}", command.EXIT_FAILED) from None
    verb = "wrote" if created else "kept valid"
    print(
        f"{verb} {paths.ca}, {paths.cert}, {paths.key} for {args.service}.{args.namespace}.svc",
        file=sys.stderr,
    )
    print(certs.ca_bundle(out))
    return command.EXIT_OK
