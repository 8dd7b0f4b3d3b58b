"""The existing-cluster mode (``make e2e-kind``), as far as it can be proven without a kind cluster.

``make e2e-kind`` cannot run here (no Docker engine), but two of its steps can, against this
session's real apiserver:

- a kubeconfig in kind's shape (inline CA, the identity's credential) is loaded by
  ``kubeconfig.load``, and the client built from it (``kube.admin``) acts as exactly that identity:
  the apiserver confirms it (SelfSubjectReview) and the guard treats it accordingly;
- ``incluster.check_registration``, which refuses to run the scenarios against a deployed guard
  whose webhook selects other agents than ``rules/``, accepts this session's registration and
  refuses it for a policy with other agents.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import reviews
from tests.e2e import incluster, kube, kubeconfig, stack
from webhook import manifests, policy

pytestmark = pytest.mark.e2e

SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def kind_shaped(target_server: str, ca: Path, user: str, token: str, path: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": f"kind-{user}",
        "clusters": [
            {
                "name": "kind-e2e",
                "cluster": {
                    "server": target_server,
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": f"kind-{user}", "context": {"cluster": "kind-e2e", "user": user}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def whoami(client: kube.Client) -> dict[str, Any]:
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    info: dict[str, Any] = client.ok(kube.Request("POST", SELF_SUBJECT_REVIEWS, review)).body["status"][
        "userInfo"
    ]
    return info


def test_kubeconfig_target_acts_as_its_identity(enforcing: stack.Stack, tmp_path: Path) -> None:
    """A kind-shaped kubeconfig's client is exactly its identity (and the agent's is judged as the agent)."""
    if isinstance(enforcing.target, kubeconfig.Kubeconfig):
        admin_config = enforcing.target.path  # this session's own (make e2e-kind: kind's), read again
    else:
        admin_config = kind_shaped(
            enforcing.target.server,
            enforcing.target.ca_file,
            "admin",
            enforcing.target.admin_token,
            tmp_path / "a",
        )
    target = kubeconfig.load(admin_config, tmp_path / "work")
    assert target.ca_file.read_bytes() == enforcing.target.ca_file.read_bytes()
    admin = kube.admin(target)
    assert whoami(admin) == whoami(enforcing.admin)
    # the suite's own admin, or kubeadm's admin.conf (kind's kubeconfig): kubeadm:cluster-admins
    assert {"system:masters", "kubeadm:cluster-admins"} & set(whoami(admin)["groups"])

    agent_config = kind_shaped(
        enforcing.target.server, enforcing.target.ca_file, "agent", enforcing.agent.token, tmp_path / "b"
    )
    agent = kube.admin(kubeconfig.load(agent_config, tmp_path / "work"))
    assert whoami(agent)["username"] == enforcing.agent.name
    assert incluster.enforcing_answer(incluster.probe(agent)), incluster.probe(agent)
    assert not incluster.enforcing_answer(incluster.probe(admin))


def test_deployed_registration_is_checked_against_the_policy(e2e: stack.Stack, tmp_path: Path) -> None:
    found = incluster.check_registration(e2e.admin, e2e.policy)
    assert found["metadata"]["name"] == manifests.CONFIGURATION_NAME

    document = yaml.safe_load((reviews.RULES / "policy.yaml").read_text())
    document["agents"]["serviceAccounts"] = ["someone-else/*"]
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(document))
    other = policy.load(tmp_path / "policy.yaml")
    with pytest.raises(stack.StackError, match="selects other agents than"):
        incluster.check_registration(e2e.admin, other)
