"""``make demo``: a real kube-apiserver with the guard registered, to poke at by hand.

Starts the same stack as the end-to-end suite (building the binaries on first use), writes kubeconfigs
and tokens for the admin and the agent into a temporary directory, prints commands to try and an MCP
client configuration (the JSON an MCP host such as an IDE or a desktop assistant takes) that starts
kubernetes-mcp-server as the agent, and tears everything down on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tests.e2e import cluster, kube, stack
from tests.e2e.controlplane import binaries, processes
from tests.e2e.mcp import servers
from webhook import manifests

VICTIM = "demo-prod"


def mcp_client_configuration(kubeconfig: Path) -> str:
    """The ``mcpServers`` JSON that starts kubernetes-mcp-server (the pinned one the MCP scenarios install
    into the cache) with the agent's kubeconfig; if it cannot be installed, the same through ``npx``."""
    server = servers.KUBERNETES_MCP_SERVER
    try:
        root = servers.ensure_installed(lambda message: print(message, file=sys.stderr))
    except servers.InstallError as exc:
        print(f"make demo: {exc}; the MCP configuration below uses npx instead", file=sys.stderr)
        command, args = "npx", ["-y", f"{server.name}@{servers.pinned_version(server.name)}"]
    else:
        parameters = server.parameters(root, kubeconfig, Path("/nonexistent/kubectl"), server.flag_sets[0])
        command, args = parameters.command, []
    entry = {"command": command, "args": [*args, "--kubeconfig", str(kubeconfig)]}
    return json.dumps({"mcpServers": {"guarded-kubernetes": entry}}, indent=2)


def _instructions(up: stack.Stack, workdir: Path) -> str:
    admin = kube.kubeconfig(up.target, "admin", up.target.admin_token, workdir / "admin.kubeconfig")
    agent = kube.kubeconfig(up.target, "agent", up.agent.token, workdir / "agent.kubeconfig")
    (workdir / "agent.token").write_text(up.agent.token)
    server, ca = up.target.server, up.target.ca_file
    guard = up.local_guard()
    return f"""
kube-agent-guard demo: kube-apiserver {up.target.server}, guard {guard.url} ({guard.log})
The agent is system:serviceaccount:{stack.AGENT_NAMESPACE}:{stack.AGENT_NAME}, bound to cluster-admin.

  # as the agent: denied by the guard, with the reason (admission, then the authorizer)
  kubectl --kubeconfig {agent} delete namespace {VICTIM}
  kubectl --kubeconfig {agent} delete namespace {VICTIM} --dry-run=server
  kubectl --kubeconfig {agent} -n {VICTIM} get secrets
  kubectl --kubeconfig {agent} delete validatingwebhookconfiguration {manifests.CONFIGURATION_NAME}
  # the agent's delete without kubectl (the kubectl on some PATHs is a wrapper that may not honour
  # --kubeconfig)
  curl --cacert {ca} -H "Authorization: Bearer $(cat {workdir / "agent.token"})" \\
       -X DELETE {server}/api/v1/namespaces/{VICTIM}
  # ordinary work goes through
  kubectl --kubeconfig {agent} -n {VICTIM} create configmap hello --from-literal=greeting=hi

  # last, the admin, who is never sent to the guard (after this, {VICTIM} is terminating: the
  # apiserver answers deletes itself and never asks the guard; with no controller-manager here it
  # stays terminating, hence --wait=false)
  kubectl --kubeconfig {admin} delete namespace {VICTIM} --wait=false

MCP client configuration: kubernetes-mcp-server as the agent (paste into your MCP host's settings;
add "--read-only" or "--disable-destructive" to "args" to compare its own flags with the guard):
{mcp_client_configuration(agent)}

Audit log: {up.target.audit_log}
Press Ctrl-C to stop everything and delete {workdir}.
"""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(mode: str | None) -> int:
    try:
        found = binaries.ensure_all(lambda message: print(message, file=sys.stderr))
    except binaries.BuildError as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="agent-guard-demo-"))
    signal.signal(signal.SIGTERM, _stop)
    try:
        with (
            stack.prepared(workdir) as plan,
            cluster.provide(workdir, found, plan.authorization_config) as target,
            stack.up(target, plan, *(("--mode", mode) if mode else ())) as up,
        ):
            kube.ensure_namespace(up.admin, VICTIM)
            print(_instructions(up, workdir), flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        print("\nstopping kube-apiserver, etcd and the guard", file=sys.stderr)
    except (processes.ControlPlaneError, stack.StackError, cluster.Unavailable) as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.demo", description=__doc__)
    parser.add_argument("--mode", choices=["enforce", "dry-run"], help="start the guard in this mode")
    return run(parser.parse_args(argv).mode)


if __name__ == "__main__":
    sys.exit(main())
