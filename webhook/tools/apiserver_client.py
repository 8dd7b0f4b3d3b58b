"""``agent-guard apiserver-client``: the certificate the kube-apiserver presents to the guard.

Writes a dedicated client CA (``client-ca.crt``; its key is never stored), the apiserver's client
certificate and key, and the apiserver's ``AdmissionConfiguration`` + webhook kubeconfig that make it
present them when it calls the guard. Then: start the guard with ``serve --client-ca client-ca.crt``
and the kube-apiserver with ``--admission-control-config-file=<dir>/admission-config.yaml``
(see docs/budgets.md, "Only the apiserver's reviews count"). Anything that stops it is a
``command.Failed`` with exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from webhook import certs, clientauth
from webhook.tools import command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory to write the files into")
    parser.add_argument(
        "--host",
        default=f"{certs.DEFAULT_SERVICE}.{certs.DEFAULT_NAMESPACE}.svc",
        help="the webhook's host as the apiserver names it: <svc>.<ns>.svc (Service on port 443), "
        "host:port (URL), or * (every webhook); default %(default)s",
    )
    parser.add_argument(
        "--apiserver-dir",
        help="where the kube-apiserver will find these files (default: --out, absolute)",
    )
    parser.add_argument(
        "--name",
        default=clientauth.DEFAULT_CLIENT_NAME,
        help="common name of the client certificate (for serve --client-name; default %(default)s)",
    )
    parser.add_argument("--days", type=int, default=certs.DEFAULT_DAYS, help="validity in days")
    parser.add_argument("--force", action="store_true", help="replace files written by an earlier run")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    names = (clientauth.CA_FILE, clientauth.CERT_FILE, clientauth.KEY_FILE, *clientauth.CONFIG_FILES)
    present = [name for name in names if (out / name).exists()]
    if present and not args.force:
        raise command.Failed(f"{out}: {', '.join(present)} already exist (use --force to replace)")
    if out.exists() and not out.is_dir():
        raise command.Failed(f"{out}: not a directory")
    there = Path(args.apiserver_dir) if args.apiserver_dir else out.resolve()
    try:
        clientauth.issue(out, args.name, args.days)
        files = clientauth.admission_files(
            args.host,
            str(there / clientauth.CERT_FILE),
            str(there / clientauth.KEY_FILE),
            str(there / clientauth.KUBECONFIG_FILE),
        )
        for name, text in files.items():
            (out / name).write_text(text)
    except (clientauth.ClientAuthError, OSError) as exc:
        raise command.Failed(str(exc)) from None
    print(
        f"wrote {', '.join(names)} to {out}\n"
        f"guard:          agent-guard serve --client-ca {out / clientauth.CA_FILE} "
        f"--client-name {args.name}\n"
        f"kube-apiserver: --admission-control-config-file={there / clientauth.CONFIG_FILE}"
    )
    return 0
