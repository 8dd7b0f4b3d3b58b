"""``agent-guard manifests webhook|authz|policy|chart``: Kubernetes objects rendered from the policy
(``webhook.manifests``; the Helm chart: ``webhook.chart``), so configuration cannot drift from what
is enforced."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from webhook import certs, chart, manifests, policy
from webhook.tools import command


def _ca_from(cert_dir: str, hint: str) -> str:
    try:
        return certs.check_ca_bundle(certs.ca_bundle(Path(cert_dir)))
    except OSError as exc:
        raise command.Failed(f"cannot read the CA: {exc} ({hint})", command.EXIT_FAILED) from None
    except certs.CertError as exc:
        raise command.Failed(f"{Path(cert_dir) / certs.CA_FILE}: {exc}", command.EXIT_FAILED) from None


def render_webhook(args: argparse.Namespace) -> int:
    loaded = command.load_policy(args, code=command.EXIT_FAILED)
    bundle = None
    if not args.without_ca_bundle:
        bundle = args.ca_bundle or _ca_from(args.cert_dir, "run agent-guard certs first")
    service = None if args.url else (args.service, args.namespace)
    try:
        rendered = manifests.validating_webhook_configuration(loaded, bundle, url=args.url, service=service)
    except ValueError as exc:
        raise command.Failed(str(exc)) from None
    text = manifests.to_yaml(rendered)
    if args.out:
        Path(args.out).write_text(manifests.GENERATED + text, encoding="utf-8")
    else:
        print(text, end="")
    return command.EXIT_OK


def render_authz(args: argparse.Namespace) -> int:
    if bool(args.client_cert) != bool(args.client_key):
        raise command.Failed("give both --client-cert and --client-key")
    loaded = command.load_policy(args, code=command.EXIT_FAILED)
    bundle = None
    if not args.ca_file:
        hint = "run agent-guard certs first, or pass --ca-bundle or --ca-file"
        bundle = args.ca_bundle or _ca_from(args.cert_dir, hint)
    try:
        files = manifests.authorization_files(
            loaded,
            url=args.url,
            ca_bundle=bundle,
            ca_file=args.ca_file,
            kubeconfig_path=args.kubeconfig_path,
            client_cert=(args.client_cert, args.client_key) if args.client_cert else None,
            tls_server_name=args.tls_server_name,
            kubernetes=args.kubernetes_version,
        )
    except ValueError as exc:
        raise command.Failed(str(exc)) from None
    if args.out is None:
        print("---\n".join(files.values()), end="")
        return command.EXIT_OK
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise command.Failed(f"cannot write {out}: {exc}", command.EXIT_FAILED) from None
    config = (out / manifests.CONFIG_FILE).resolve()
    print(
        f"wrote {config} and {(out / manifests.KUBECONFIG_FILE).resolve()}; start the kube-apiserver with "
        f"--authorization-config={config} and the kubeconfig at {args.kubeconfig_path}",
        file=sys.stderr,
    )
    return command.EXIT_OK


def render_policy(args: argparse.Namespace) -> int:
    try:
        rendered = manifests.policy_kustomization(Path(args.rules), families=command.families(args))
    except policy.PolicyError as exc:
        raise command.Failed(f"invalid policy, nothing written:\n{exc}", command.EXIT_FAILED) from None
    out = Path(args.out)
    try:
        stale = manifests.stale_policy_files(out, rendered)
        out.mkdir(parents=True, exist_ok=True)
        for name in stale:
            (out / name).unlink(missing_ok=True)
        for name, text in rendered.items():
            (out / name).write_text(text, encoding="utf-8")
    except manifests.NotOurs as exc:
        raise command.Failed(f"{exc}; nothing written") from None
    except OSError as exc:
        raise command.Failed(f"cannot write {out}: {exc}", command.EXIT_FAILED) from None
    removed = f"; removed {', '.join(stale)}" if stale else ""
    print(f"wrote {', '.join(sorted(rendered))} to {out}{removed}", file=sys.stderr)
    return command.EXIT_OK


def render_chart(args: argparse.Namespace) -> int:
    """Write the chart's generated files; the hand-written ones there (helpers, NOTES) stay."""
    try:
        rendered = chart.render(Path(args.manifests), Path(args.rules))
    except policy.PolicyError as exc:
        raise command.Failed(f"invalid policy, nothing written:\n{exc}", command.EXIT_FAILED) from None
    except (chart.ChartError, OSError, KeyError, TypeError) as exc:
        raise command.Failed(f"{exc}; nothing written", command.EXIT_FAILED) from None
    out = Path(args.out)
    try:
        for name, text in rendered.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise command.Failed(f"cannot write {out}: {exc}", command.EXIT_FAILED) from None
    print(f"wrote {len(rendered)} files to {out}", file=sys.stderr)
    return command.EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest=command.SUBCOMMAND, required=True, metavar="KIND")
    _add_webhook(kinds)
    _add_authz(kinds)
    _add_policy(kinds)
    _add_chart(kinds)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the KIND's function (argparse requires a KIND, so there always is one)."""
    render = {
        "webhook": render_webhook,
        "authz": render_authz,
        "policy": render_policy,
        "chart": render_chart,
    }[args.subcommand]
    code: int = render(args)
    return code


def _add_webhook(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = kinds.add_parser("webhook", help="the ValidatingWebhookConfiguration (YAML on stdout)")
    command.add_rules(parser)
    parser.add_argument("--cert-dir", default="certs", help="where ca.crt is (for the caBundle)")
    bundle = parser.add_mutually_exclusive_group()
    bundle.add_argument("--ca-bundle", type=command.ca_bundle, help="base64 caBundle (instead of --cert-dir)")
    bundle.add_argument(
        "--without-ca-bundle",
        action="store_true",
        help="leave caBundle out (a kustomize base: injected from the TLS Secret or by cert-manager)",
    )
    parser.add_argument(
        "--url",
        help="reach the guard by URL (out of cluster), e.g. https://10.0.0.5:8443; /validate is appended",
    )
    parser.add_argument("--service", default=certs.DEFAULT_SERVICE, help="Service name (in cluster)")
    parser.add_argument("--namespace", default=certs.DEFAULT_NAMESPACE, help="Service namespace")
    parser.add_argument("--out", help="write to this file (with a 'generated' header) instead of stdout")
    _add_kubernetes_version(parser)  # the same object on every supported release; the version is checked


def _add_authz(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = kinds.add_parser(
        "authz",
        help="the kube-apiserver AuthorizationConfiguration and the kubeconfig that reaches /authorize",
    )
    command.add_rules(parser)
    parser.add_argument("--cert-dir", default="certs", help="where ca.crt is (embedded into the kubeconfig)")
    ca = parser.add_mutually_exclusive_group()
    ca.add_argument("--ca-bundle", type=command.ca_bundle, help="base64 CA to embed (instead of --cert-dir)")
    ca.add_argument(
        "--ca-file", help="path of the CA file as the kube-apiserver sees it (referenced, not embedded)"
    )
    parser.add_argument(
        "--url",
        default=manifests.DEFAULT_AUTHZ_URL,
        help=f"where the kube-apiserver reaches the guard; /authorize is appended (default "
        f"{manifests.DEFAULT_AUTHZ_URL})",
    )
    parser.add_argument(
        "--tls-server-name",
        default="",
        help="the name to verify in the guard's certificate when --url is an address, e.g. a fixed "
        "ClusterIP: agent-guard.agent-guard-system.svc (docs/deploy.md)",
    )
    parser.add_argument(
        "--kubeconfig-path",
        default=manifests.DEFAULT_KUBECONFIG_PATH,
        help=f"absolute path where the kube-apiserver will find the kubeconfig (default "
        f"{manifests.DEFAULT_KUBECONFIG_PATH})",
    )
    parser.add_argument(
        "--out",
        help=f"write {manifests.CONFIG_FILE} and {manifests.KUBECONFIG_FILE} into this directory "
        "(default: both documents on stdout)",
    )
    parser.add_argument(
        "--client-cert",
        help="client certificate the kube-apiserver presents (its path there; for serve --client-ca)",
    )
    parser.add_argument("--client-key", help="its key (with --client-cert)")
    _add_kubernetes_version(parser)


def _add_policy(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = kinds.add_parser(
        "policy", help="a kustomization generating the policy ConfigMap (copies the policy files next to it)"
    )
    command.add_rules(parser)
    parser.add_argument(
        "--out",
        required=True,
        help="directory to write; files an earlier run wrote there (listed in its generated "
        "kustomization.yaml) that the policy no longer has are removed, nothing else is touched",
    )


def _add_chart(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = kinds.add_parser(
        "chart", help="the Helm chart's generated files, from the kustomize base and the policy"
    )
    parser.add_argument("--rules", default="rules", help="policy file or directory (default rules/)")
    parser.add_argument("--manifests", default="manifests", help="the kustomize tree (default manifests/)")
    parser.add_argument(
        "--out", default="charts/kube-agent-guard", help="the chart (default charts/kube-agent-guard)"
    )


def _kubernetes_version(text: str) -> manifests.KubernetesVersion:
    try:
        return manifests.kubernetes_version(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_kubernetes_version(parser: argparse.ArgumentParser) -> None:
    oldest = ".".join(map(str, manifests.OLDEST_KUBERNETES))
    parser.add_argument(
        "--kubernetes-version",
        type=_kubernetes_version,
        help=f"the cluster's Kubernetes release, e.g. 1.30 (default: the newest form; oldest: {oldest})",
    )
