"""``agent-guard``: serve the webhook and the tools around it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from webhook import app, certs, decisionlog, engine, manifests, policy, reload, server
from webhook.tools import apiserver_client, approve, check, rbactools, replay, report


def _serve(args: argparse.Namespace) -> int:
    if args.client_name and not args.client_ca:
        print(
            "agent-guard serve: --client-name needs --client-ca (the CA that signs those names)",
            file=sys.stderr,
        )
        return 2
    if args.kubeconfig and not args.approvals:
        print("agent-guard serve: --kubeconfig is only used with --approvals", file=sys.stderr)
        return 2
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
    )
    try:
        return server.serve(settings)
    except (server.ServeError, certs.CertError) as exc:
        print(f"agent-guard serve: {exc}", file=sys.stderr)
        return 2


def _certs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        paths, created = certs.ensure(out, args.service, args.namespace, args.days, args.force)
    except certs.CertError as exc:
        print(f"agent-guard certs: {exc}", file=sys.stderr)
        return 1
    verb = "wrote" if created else "kept valid"
    print(
        f"{verb} {paths.ca}, {paths.cert}, {paths.key} for {args.service}.{args.namespace}.svc",
        file=sys.stderr,
    )
    print(certs.ca_bundle(out))
    return 0


def _check_policy(args: argparse.Namespace) -> int:
    try:
        loaded = policy.load(Path(args.rules))
    except policy.PolicyError as exc:
        print(f"invalid policy:\n{exc}", file=sys.stderr)
        return 1
    for guard_id in loaded.guards:
        print(f"{guard_id}: {loaded.mode_of(guard_id)}")
    status = engine.Engine(loaded).exemption_status()
    if status:
        print("exemptions:")
    for level, line in status:
        print(f"  {'WARNING ' if level == 'warning' else ''}{line}")
    return 0


def _manifests_webhook(args: argparse.Namespace) -> int:
    try:
        loaded = policy.load(Path(args.rules))
        bundle = None if args.without_ca_bundle else args.ca_bundle or certs.ca_bundle(Path(args.cert_dir))
    except policy.PolicyError as exc:
        print(f"invalid policy:\n{exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"agent-guard manifests: cannot read the CA: {exc} (run agent-guard certs first)", file=sys.stderr
        )
        return 1
    service = None if args.url else (args.service, args.namespace)
    rendered = manifests.validating_webhook_configuration(loaded, bundle, url=args.url, service=service)
    text = manifests.to_yaml(rendered)
    if args.out:
        Path(args.out).write_text(manifests.GENERATED + text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


def _manifests_authz(args: argparse.Namespace) -> int:
    if bool(args.client_cert) != bool(args.client_key):
        print("agent-guard manifests authz: give both --client-cert and --client-key", file=sys.stderr)
        return 2
    try:
        loaded = policy.load(Path(args.rules))
        bundle = None if args.ca_file else args.ca_bundle or certs.ca_bundle(Path(args.cert_dir))
        files = manifests.authorization_files(
            loaded,
            url=args.url,
            ca_bundle=bundle,
            ca_file=args.ca_file,
            kubeconfig_path=args.kubeconfig_path,
            client_cert=(args.client_cert, args.client_key) if args.client_cert else None,
        )
    except policy.PolicyError as exc:
        print(f"invalid policy:\n{exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"agent-guard manifests authz: cannot read the CA: {exc} (run agent-guard certs first, "
            "or pass --ca-bundle or --ca-file)",
            file=sys.stderr,
        )
        return 1
    except ValueError as exc:
        print(f"agent-guard manifests authz: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        print("---\n".join(files.values()), end="")
        return 0
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"agent-guard manifests authz: cannot write {out}: {exc}", file=sys.stderr)
        return 1
    config = (out / manifests.CONFIG_FILE).resolve()
    print(
        f"wrote {config} and {(out / manifests.KUBECONFIG_FILE).resolve()}; start the kube-apiserver with "
        f"--authorization-config={config} and the kubeconfig at {args.kubeconfig_path}",
        file=sys.stderr,
    )
    return 0


def _manifests_policy(args: argparse.Namespace) -> int:
    try:
        rendered = manifests.policy_kustomization(Path(args.rules))
    except policy.PolicyError as exc:
        print(f"invalid policy, nothing written:\n{exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if stale.is_file() and stale.name not in rendered:
            stale.unlink()
    for name, text in rendered.items():
        (out / name).write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(sorted(rendered))} to {out}", file=sys.stderr)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text}") from None
    if not 0 <= value < 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, got {text}")
    return value


def _timeout(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the TLS webhook server")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8443, help="port (default 8443)")
    serve.add_argument(
        "--cert-dir", default="certs", help="tls.crt/tls.key (dev pair created here if absent)"
    )
    serve.add_argument("--rules", default="rules", help="policy file or directory (default rules/)")
    serve.add_argument("--mode", choices=["enforce", "dry-run"], help="override the policy's global mode")
    serve.add_argument(
        "--max-body", type=_positive, default=app.DEFAULT_MAX_BODY, help="largest request body in bytes"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--workers", type=_positive, default=1, help="processes sharing the port (default 1; one per core)"
    )
    serve.add_argument(
        "--reload-interval",
        type=_seconds,
        default=reload.DEFAULT_INTERVAL_SECONDS,
        help="seconds between checks for new policy files and certificates (0: no hot reload; default 2)",
    )
    serve.add_argument(
        "--shutdown-delay",
        type=_seconds,
        default=0.0,
        help="after SIGTERM, keep serving this many seconds with /readyz red before closing (default 0)",
    )
    serve.add_argument(
        "--shutdown-timeout",
        type=_positive,
        default=20,
        help="then give requests in flight this many seconds to finish (default 20)",
    )
    serve.add_argument(
        "--read-timeout",
        type=_timeout,
        default=server.READ_TIMEOUT_SECONDS,
        help="seconds a client has for its TLS handshake, and for each request head and body "
        f"(default {server.READ_TIMEOUT_SECONDS:g}: twice the webhook's timeoutSeconds)",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive,
        default=server.MAX_CONNECTIONS,
        help=f"open connections per worker; more are closed at once (default {server.MAX_CONNECTIONS})",
    )
    serve.add_argument(
        "--client-ca",
        help="accept reviews only from clients (the kube-apiserver) with a certificate signed by this CA",
    )
    serve.add_argument(
        "--client-name",
        action="append",
        default=[],
        help="with --client-ca: the client certificate's common name must be this (repeatable)",
    )
    serve.add_argument(
        "--approvals",
        action="store_true",
        help="watch Approval objects in the guard's namespace so humans can approve approvable denials",
    )
    serve.add_argument("--kubeconfig", help="for --approvals (default: the pod's ServiceAccount)")
    serve.set_defaults(func=_serve)


def _add_certs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cert = sub.add_parser("certs", help="create a CA and a serving certificate; prints the caBundle")
    cert.add_argument("--out", default="certs", help="directory to write ca.crt, tls.crt, tls.key")
    cert.add_argument("--service", default=certs.DEFAULT_SERVICE, help="Service name (default agent-guard)")
    cert.add_argument(
        "--namespace", default=certs.DEFAULT_NAMESPACE, help="namespace (default agent-guard-system)"
    )
    cert.add_argument(
        "--days", type=_positive, default=certs.DEFAULT_DAYS, help="validity in days (default 365)"
    )
    cert.add_argument("--force", action="store_true", help="replace an existing pair")
    cert.set_defaults(func=_certs)


def _add_manifests(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    render = sub.add_parser("manifests", help="render Kubernetes objects from the policy")
    kinds = render.add_subparsers(dest="kind", required=True, metavar="KIND")
    webhook_config = kinds.add_parser("webhook", help="the ValidatingWebhookConfiguration (YAML on stdout)")
    webhook_config.add_argument("--rules", default="rules", help="policy file or directory (default rules/)")
    webhook_config.add_argument("--cert-dir", default="certs", help="where ca.crt is (for the caBundle)")
    bundle = webhook_config.add_mutually_exclusive_group()
    bundle.add_argument("--ca-bundle", help="base64 caBundle (instead of --cert-dir)")
    bundle.add_argument(
        "--without-ca-bundle",
        action="store_true",
        help="leave caBundle out (a kustomize base: injected from the TLS Secret or by cert-manager)",
    )
    webhook_config.add_argument(
        "--url", help="reach the guard by URL (out of cluster), e.g. https://10.0.0.5:8443"
    )
    webhook_config.add_argument("--service", default=certs.DEFAULT_SERVICE, help="Service name (in cluster)")
    webhook_config.add_argument("--namespace", default=certs.DEFAULT_NAMESPACE, help="Service namespace")
    webhook_config.add_argument(
        "--out", help="write to this file (with a 'generated' header) instead of stdout"
    )
    webhook_config.set_defaults(func=_manifests_webhook)

    authz = kinds.add_parser(
        "authz",
        help="the kube-apiserver AuthorizationConfiguration and the kubeconfig that reaches /authorize",
    )
    authz.add_argument("--rules", default="rules", help="policy file or directory (default rules/)")
    authz.add_argument("--cert-dir", default="certs", help="where ca.crt is (embedded into the kubeconfig)")
    ca = authz.add_mutually_exclusive_group()
    ca.add_argument("--ca-bundle", help="base64 CA to embed (instead of --cert-dir)")
    ca.add_argument(
        "--ca-file", help="path of the CA file as the kube-apiserver sees it (referenced, not embedded)"
    )
    authz.add_argument(
        "--url",
        default=manifests.DEFAULT_AUTHZ_URL,
        help=f"where the kube-apiserver reaches the guard; /authorize is appended (default "
        f"{manifests.DEFAULT_AUTHZ_URL})",
    )
    authz.add_argument(
        "--kubeconfig-path",
        default=manifests.DEFAULT_KUBECONFIG_PATH,
        help=f"absolute path where the kube-apiserver will find the kubeconfig (default "
        f"{manifests.DEFAULT_KUBECONFIG_PATH})",
    )
    authz.add_argument(
        "--out",
        help=f"write {manifests.CONFIG_FILE} and {manifests.KUBECONFIG_FILE} into this directory "
        "(default: both documents on stdout)",
    )
    authz.add_argument(
        "--client-cert",
        help="client certificate the kube-apiserver presents (its path there; for serve --client-ca)",
    )
    authz.add_argument("--client-key", help="its key (with --client-cert)")
    authz.set_defaults(func=_manifests_authz)
    policy_config = kinds.add_parser(
        "policy", help="a kustomization generating the policy ConfigMap (copies the policy files next to it)"
    )
    policy_config.add_argument("--rules", default="rules", help="policy file or directory (default rules/)")
    policy_config.add_argument(
        "--out", required=True, help="directory to write (stale *.yaml there are removed)"
    )
    policy_config.set_defaults(func=_manifests_policy)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="agent-guard",
        description="Server-side guard that keeps LLM agents (MCP servers) from harming a cluster.",
    )
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_certs(sub)
    _add_manifests(sub)

    lint = sub.add_parser("policy", help="validate the policy and print each guard's effective mode")
    lint.add_argument("--rules", default="rules", help="policy file or directory (default rules/)")
    lint.set_defaults(func=_check_policy)

    tools = [
        (check, "check", "judge manifests or AdmissionReviews offline, as an agent (exit 1: would deny)"),
        (replay, "replay", "replay a Kubernetes audit log through the policy: what would have been denied"),
        (report, "report", "summarize decision logs: denials by guard, agent, namespace, message"),
        (rbactools, "rbac", "audit what RBAC grants agents (exit 1: unstopped), or suggest least privilege"),
        (approve, "approve", "approve one exact agent request a guard denied, once (writes an Approval)"),
        (apiserver_client, "apiserver-client", "the certificate the kube-apiserver presents to the guard"),
    ]
    for module, name, summary in tools:
        command = sub.add_parser(name, help=summary, description=summary)
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # `agent-guard report log | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
