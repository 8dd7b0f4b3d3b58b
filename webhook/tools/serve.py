"""``agent-guard serve``: the TLS webhook server (``webhook.server``) from command-line options."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from webhook import app, certs, decisionlog, rbaccache, reload, server
from webhook.tools import command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=command.port, default=8443, help="port (default 8443)")
    parser.add_argument(
        "--cert-dir", default="certs", help="tls.crt/tls.key (dev pair created here if absent)"
    )
    command.add_rules(parser)
    parser.add_argument("--mode", choices=["enforce", "dry-run"], help="override the policy's global mode")
    parser.add_argument(
        "--max-body",
        type=command.positive,
        default=app.DEFAULT_MAX_BODY,
        help="largest request body in bytes",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--workers",
        type=command.positive,
        default=1,
        help="processes sharing the port (default 1; one per core)",
    )
    parser.add_argument(
        "--reload-interval",
        type=command.seconds,
        default=reload.DEFAULT_INTERVAL_SECONDS,
        help="seconds between checks for new policy files and certificates (0: no hot reload; default 2)",
    )
    parser.add_argument(
        "--shutdown-delay",
        type=command.seconds,
        default=0.0,
        help="after SIGTERM, keep serving this many seconds with /readyz red before closing (default 0)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=command.positive,
        default=20,
        help="then give requests in flight this many seconds to finish (default 20)",
    )
    parser.add_argument(
        "--read-timeout",
        type=command.timeout,
        default=server.READ_TIMEOUT_SECONDS,
        help="seconds a client has for its TLS handshake, and for each request head and body "
        f"(default {server.READ_TIMEOUT_SECONDS:g}: twice the webhook's timeoutSeconds; docs/hardening.md)",
    )
    parser.add_argument(
        "--max-connections",
        type=command.positive,
        default=server.MAX_CONNECTIONS,
        help=f"open connections per worker; more are closed at once (default {server.MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--client-ca",
        help="accept reviews only from clients (the kube-apiserver) with a certificate signed by this CA",
    )
    parser.add_argument(
        "--client-name",
        action="append",
        default=[],
        help="with --client-ca: the client certificate's common name must be this (repeatable)",
    )
    parser.add_argument(
        "--approvals",
        action="store_true",
        help="watch Approval objects in the guard's namespace so humans can approve approvable denials",
    )
    parser.add_argument("--kubeconfig", help="for --approvals (default: the pod's ServiceAccount)")
    parser.add_argument(
        "--rbac-source",
        type=_rbac_source,
        default=rbaccache.NO_SOURCE,
        metavar="none|in-cluster|kubeconfig:PATH",
        help="where the guard reads Roles, ClusterRoles and bindings to judge by effective permissions "
        "(watched, read-only); none (default): judge RBAC objects and pod specs by names only "
        "(docs/rbac.md)",
    )


def _rbac_source(text: str) -> rbaccache.Source:
    try:
        return rbaccache.Source.parse(text)
    except rbaccache.SourceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    if args.client_name and not args.client_ca:
        raise command.Failed("--client-name needs --client-ca (the CA that signs those names)")
    if args.kubeconfig and not args.approvals:
        raise command.Failed("--kubeconfig is only used with --approvals")
    decisionlog.configure_diagnostics(getattr(logging, args.log_level.upper()))
    settings = server.Settings(
        host=args.host,
        port=args.port,
        cert_dir=Path(args.cert_dir),
        rules=Path(args.rules),
        mode=args.mode,
        max_body=args.max_body,
        log_level=args.log_level,
        reload_interval=args.reload_interval,
        shutdown_delay=args.shutdown_delay,
        shutdown_timeout=args.shutdown_timeout,
        workers=args.workers,
        read_timeout=args.read_timeout,
        max_connections=args.max_connections,
        client_ca=Path(args.client_ca) if args.client_ca else None,
        client_names=tuple(args.client_name),
        approvals=args.approvals,
        kubeconfig=args.kubeconfig,
        rbac_source=args.rbac_source,
    )
    try:
        return server.serve(settings)
    except (server.ServeError, certs.CertError) as exc:
        raise command.Failed(str(exc)) from None
