"""Hot reload in the cluster: the kubelet refreshes the mounted ConfigMap and Secret, the guard reloads.

- Editing the policy ConfigMap (``namespace-delete`` to dry-run, then back) changes the decisions of
  every replica without a restart; the time from the edit until both replicas answer the new way is
  reported (it is mostly the kubelet's sync of the volume: ``syncFrequency`` plus its cache, then the
  guard's ``--reload-interval``).
- Replacing the TLS Secret with a new serving certificate from the same CA: both replicas serve it
  after the kubelet's sync, with 0 failed requests under steady load.
"""

from __future__ import annotations

import base64
import datetime
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e import incluster, kube
from tests.e2e.conftest import SceneFactory
from tests.e2e.controlplane import node
from tests.e2e.node import load
from tests.e2e.node.test_availability import assert_no_harm
from webhook import certs, manifests

pytestmark = pytest.mark.e2e

SYNC_TIMEOUT_SECONDS = 180.0


def configmap_path(cluster: incluster.InClusterStack) -> str:
    return f"/api/v1/namespaces/{cluster.policy.guard_namespace}/configmaps/{manifests.POLICY_CONFIGMAP}"


def put_policy(cluster: incluster.InClusterStack, configmap: dict[str, Any], text: str) -> None:
    body = {**configmap, "data": {**configmap["data"], "policy.yaml": text}}
    cluster.admin.ok(kube.Request("PUT", configmap_path(cluster), body))


def test_policy_configmap_edit_changes_decisions(
    cluster: incluster.InClusterStack, report: Callable[[str], None]
) -> None:
    configmap = cluster.admin.ok(kube.Request("GET", configmap_path(cluster))).body
    original = configmap["data"]["policy.yaml"]
    document = yaml.safe_load(original)
    document["guards"]["namespace-delete"] = {"mode": "dry-run"}
    started = time.monotonic()
    put_policy(cluster, configmap, yaml.safe_dump(document))
    try:
        cluster.wait_for(incluster.dry_run_answer, "answer in dry-run after the edit", SYNC_TIMEOUT_SECONDS)
        to_dry_run = time.monotonic() - started
    finally:
        latest = cluster.admin.ok(kube.Request("GET", configmap_path(cluster))).body
        started = time.monotonic()
        put_policy(cluster, latest, original)
        cluster.wait_for(incluster.enforcing_answer, "enforce again after the edit", SYNC_TIMEOUT_SECONDS)
    back = time.monotonic() - started
    report(
        f"policy ConfigMap edit reached both replicas in {to_dry_run:.0f}s (enforce -> dry-run) and "
        f"{back:.0f}s (back); kubelet syncFrequency {node.KUBELET_SYNC_FREQUENCY}, --reload-interval=2"
    )


def new_serving_pair(directory: Path) -> tuple[bytes, bytes]:
    """Another serving certificate from the same CA (so the caBundle stays valid)."""
    paths = certs.Paths(directory)
    ca = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName(n) for n in certs.dns_names(certs.DEFAULT_SERVICE, node.GUARD_NAMESPACE)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node.GUARD_SERVER_NAME)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(pem), private


def served_certificate(pod: dict[str, Any]) -> bytes:
    """What the replica presents on its port, asked from the host over the node's bridge."""
    return ssl.get_server_certificate((pod["status"]["podIP"], 8443), timeout=5).encode()


def same_certificate(a: bytes, b: bytes) -> bool:
    return x509.load_pem_x509_certificate(a) == x509.load_pem_x509_certificate(b)


def test_tls_secret_replaced_without_failed_requests(
    cluster: incluster.InClusterStack, new_scene: SceneFactory, report: Callable[[str], None]
) -> None:
    assert isinstance(cluster.target, node.NodeCluster)
    namespace = new_scene("load-rotate").namespace
    path = f"/api/v1/namespaces/{cluster.policy.guard_namespace}/secrets/agent-guard-tls"
    secret = cluster.admin.ok(kube.Request("GET", path)).body
    cert, key = new_serving_pair(cluster.target.guard_certs)
    assert not any(same_certificate(served_certificate(p), cert) for p in cluster.pods())
    secret["data"] = {
        **secret["data"],
        "tls.crt": base64.b64encode(cert).decode(),
        "tls.key": base64.b64encode(key).decode(),
    }
    with load.steady(cluster, namespace) as tally:
        started = time.monotonic()
        cluster.admin.ok(kube.Request("PUT", path, secret))
        deadline = started + SYNC_TIMEOUT_SECONDS
        while not all(same_certificate(served_certificate(p), cert) for p in cluster.pods()):
            assert time.monotonic() < deadline, "the replicas did not serve the new certificate in time"
            time.sleep(1.0)
        rotated = time.monotonic() - started
    report(
        f"TLS Secret replaced: both replicas served the new certificate after {rotated:.0f}s; "
        + tally.summary()
    )
    assert_no_harm(tally)
    assert tally.counts["agent"]["failed-closed"] == 0, tally.samples
    assert tally.counts["attack"]["failed-closed"] == 0, tally.samples
