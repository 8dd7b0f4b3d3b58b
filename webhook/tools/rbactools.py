"""``agent-guard rbac audit|suggest``: show and shrink what RBAC grants the agents.

``audit`` (``webhook.tools.rbacaudit``) reports what each agent identity is granted that the guard
takes away from agents, and which installed part stops it; ``suggest``
(``webhook.tools.rbacsuggest``) writes the least-privilege roles that cover what the agents did.
Exit codes: 0 nothing to report, 1 an agent holds a power nothing installed stops (audit) or nothing
to suggest, 2 bad input (files, cluster, flags, policy): ``command.Failed``, which ``cli.main`` prints
once as ``agent-guard rbac audit: ...``; warnings go to stderr and the command goes on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from webhook import engine
from webhook.tools import audit, command, inputs, rbacaudit, rbacsuggest, verdicts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest=command.SUBCOMMAND, required=True, metavar="SUBCOMMAND")
    check = sub.add_parser(
        "audit",
        help="what each agent identity is granted that the guard denies agents, and what stops it "
        "(exit 1: something nothing stops)",
        description="Report, for every agent identity of the policy, the RBAC grants that give a power "
        "the guard denies to agents, with the binding and role they come from, classed as stopped by "
        "admission, stopped only by the authorizer, or not stopped.",
    )
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-f",
        "--filename",
        action="append",
        metavar="PATH",
        help="RBAC objects (and ServiceAccounts): files or folders, YAML or JSON, List kinds "
        "(kubectl get -o yaml); repeatable; - for stdin",
    )
    source.add_argument(
        "--kubeconfig", metavar="FILE", help="read the live cluster of this kubeconfig (lists only)"
    )
    check.add_argument("--context", help="the kubeconfig context (default: its current context)")
    check.add_argument(
        "--authorizer",
        choices=["present", "absent"],
        default="absent",
        help="whether the apiserver calls the guard's /authorize (default absent: EKS, GKE, AKS)",
    )
    check.add_argument("--rules", default="rules", help="policy file or directory (default rules/)")
    check.add_argument(
        "--output",
        "-o",
        choices=["text", "json", "markdown", "prometheus"],
        default="text",
        help="text (default), json, markdown, or prometheus (metrics in the text format)",
    )

    suggest = sub.add_parser(
        "suggest",
        help="least-privilege Roles/ClusterRoles and bindings from what agents did (audit logs)",
        description="Write Roles, ClusterRoles and bindings covering the successful requests of each "
        "agent identity in Kubernetes audit logs, minus what the guard forbids.",
    )
    suggest.add_argument(
        "logs",
        nargs="+",
        metavar="AUDIT_LOG",
        help="audit log files (JSON lines or EventList; .gz ok; - for stdin)",
    )
    suggest.add_argument("--rules", default="rules", help="policy file or directory (default rules/)")
    suggest.add_argument("--out", metavar="FILE", help="write the YAML here instead of stdout")


def _audit(args: argparse.Namespace) -> int:
    loaded = command.load_policy(args, code=verdicts.EXIT_BAD_INPUT)
    if args.kubeconfig is not None:
        cluster, warnings = rbacaudit.load_live(args.kubeconfig, args.context)
    else:
        if args.context:
            raise inputs.InputError("--context needs --kubeconfig")
        cluster, warnings = rbacaudit.load_files(args.filename), []
    for warning in warnings:
        print(f"agent-guard rbac audit: warning: {warning}", file=sys.stderr)
    authorizer = args.authorizer == "present"
    findings = rbacaudit.audit(loaded, cluster, authorizer)
    print(rbacaudit.render(findings, authorizer, cluster, args.output))
    return verdicts.EXIT_WOULD_DENY if rbacaudit.unstopped(findings) else verdicts.EXIT_CLEAN


def _suggest(args: argparse.Namespace) -> int:
    loaded = command.load_policy(args, code=verdicts.EXIT_BAD_INPUT)
    events, stats = audit.Stats(), rbacsuggest.Stats()
    names = inputs.expand(args.logs, ("",))
    agents = rbacsuggest.collect(engine.Engine(loaded), names, events, stats)
    for problem in events.problems:
        print(f"agent-guard rbac suggest: warning: {problem}", file=sys.stderr)
    if events.events == 0:
        raise inputs.InputError(f"no audit events found in {', '.join(args.logs)}")
    if not agents:
        raise command.Failed(
            f"no successful request by an agent identity in {events.events} event(s) "
            f"({stats.agent_requests} agent request(s), none successful): nothing to suggest",
            verdicts.EXIT_WOULD_DENY,
        )
    text = rbacsuggest.render(agents, [inputs.display(n) for n in names], stats)
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise command.Failed(f"cannot write {args.out}: {exc}", verdicts.EXIT_BAD_INPUT) from None
    else:
        print(text, end="")
    left_out = sum(len(a.left_out) for a in agents.values())
    print(
        f"agent-guard rbac suggest: {rbacsuggest.object_count(agents)} object(s) for {len(agents)} agent "
        f"identit{'y' if len(agents) == 1 else 'ies'} from {stats.agent_requests} agent request(s); "
        f"{left_out} kind(s) of request left out (listed in the comment block)",
        file=sys.stderr,
    )
    return verdicts.EXIT_CLEAN


def run(args: argparse.Namespace) -> int:
    if args.subcommand == "audit":
        return _audit(args)
    return _suggest(args)
