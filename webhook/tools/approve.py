"""``agent-guard approve ID …``: a human approves one exact agent request, once, for a short time.

The command is printed in the approvable denial itself (``webhook.approvals.Target.command``); this
tool checks that the id matches the fields (a typo is refused before anything is written), learns
who is approving from the cluster (``SelfSubjectReview``: the identity the apiserver authenticated,
not a name typed here) and creates the ``Approval`` in the guard's namespace. ``--print`` writes the
object as YAML instead, for review or ``kubectl apply``/``create`` (then ``--approver`` is required).

Exit codes: 0 written, 1 the cluster refused (e.g. an agent, whose writes to the guard's namespace
are denied), 2 bad input; each failure is a ``command.Failed``, which ``cli.main`` prints once.
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any, cast

import kubernetes
import urllib3
import yaml

from webhook import approvals, budget, policy
from webhook.tools import command

EXIT_REFUSED, EXIT_BAD_INPUT = command.EXIT_FAILED, command.EXIT_BAD_INPUT
MAX_TTL_SECONDS = 24 * 3600
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the approval id from the denial message")
    parser.add_argument("--user", required=True, help="the agent identity (username) that was denied")
    parser.add_argument("--operation", required=True, type=str.upper, choices=OPERATIONS)
    parser.add_argument(
        "--resource", required=True, help="resource[/subresource][.group], e.g. deployments.apps"
    )
    parser.add_argument("--namespace", default="", help="the object's namespace (none: cluster-scoped)")
    parser.add_argument("--name", default="", help="the object's name")
    parser.add_argument(
        "--ttl", default=approvals.DEFAULT_TTL, help="how long the approval lasts (default 10m)"
    )
    parser.add_argument("--reason", required=True, help="why this is approved (recorded and audited)")
    parser.add_argument(
        "--guard-namespace",
        default=policy.DEFAULT_GUARD_NAMESPACE,
        help=f"where the guard watches Approvals (default {policy.DEFAULT_GUARD_NAMESPACE})",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig of the approving human (default: kubectl's)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--print", action="store_true", help="print the Approval as YAML, write nothing")
    parser.add_argument("--approver", help="with --print: who approves (otherwise the cluster says)")


def _api(args: argparse.Namespace) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=args.kubeconfig, context=args.context, client_configuration=configuration
    )
    return kubernetes.client.ApiClient(configuration)


def _whoami(client: kubernetes.client.ApiClient) -> str:
    review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review(
        kubernetes.client.V1SelfSubjectReview(
            api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"
        )
    )
    user = review.status.user_info if review.status is not None else None
    if user is None or not user.username:
        raise kubernetes.client.ApiException(status=0, reason="the cluster did not say who you are")
    return str(user.username)


def run(args: argparse.Namespace) -> int:
    group, resource = approvals.parse_resource(args.resource)
    target = approvals.Target(args.user, args.operation, group, resource, args.namespace, args.name)
    if args.id.lower() != target.id:
        raise command.Failed(
            f"approval id {args.id!r} does not match --user/--operation/--resource/--namespace/--name "
            f"(they give {target.id}); copy the whole command from the denial"
        )
    try:
        ttl = budget.parse_duration(args.ttl)
    except ValueError as exc:
        raise command.Failed(f"--ttl: {exc}") from None
    if ttl > MAX_TTL_SECONDS:
        raise command.Failed(
            "--ttl: at most 24h; an approval is for one retry soon, not a standing exception"
        )
    if not args.reason.strip():
        raise command.Failed("--reason: say why this request is approved")
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl)
    if args.print:
        if not args.approver:
            raise command.Failed("--print needs --approver (nobody asks the cluster who you are)")
        obj = approvals.manifest(target, args.approver, args.reason.strip(), expires, args.guard_namespace)
        print(yaml.safe_dump(obj, sort_keys=False), end="")
        return 0
    try:
        client = _api(args)
    except (kubernetes.config.ConfigException, OSError, yaml.YAMLError, TypeError, ValueError) as exc:
        # a kubeconfig that is missing, not YAML or not a Config (the client raises all of these)
        raise command.Failed(f"cannot reach the cluster: {exc}", EXIT_REFUSED) from None
    try:
        approver = _whoami(client)
        obj = approvals.manifest(target, approver, args.reason.strip(), expires, args.guard_namespace)
        created = cast(
            dict[str, Any],
            kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
                approvals.GROUP, approvals.VERSION, args.guard_namespace, approvals.PLURAL, obj
            ),
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            raise command.Failed(
                f"the cluster has no {approvals.PLURAL}.{approvals.GROUP} in {args.guard_namespace} "
                "(is the Approval CRD installed?)",
                EXIT_REFUSED,
            ) from None
        raise command.Failed(
            f"the cluster refused: HTTP {exc.status} {_message(exc)}", EXIT_REFUSED
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:  # refused, timed out, TLS
        raise command.Failed(f"cannot reach the cluster: {exc}", EXIT_REFUSED) from None
    name = created["metadata"]["name"]
    print(
        f"approval {args.guard_namespace}/{name} by {approver}: {target.operation} {args.resource} "
        f"{'/'.join(p for p in (target.namespace, target.name) if p)} for {target.username}, once, "
        f"until {obj['spec']['expires']}"
    )
    return 0


def _message(exc: kubernetes.client.ApiException) -> str:
    try:
        body = yaml.safe_load(exc.body or "")
    except yaml.YAMLError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason)
