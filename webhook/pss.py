"""The Kubernetes Pod Security Standards (as of v1.34) as pure checks on one pod spec.

Written from the published standard and the controls of ``k8s.io/pod-security-admission`` v1.34,
with one difference in shape: every violation is its own plain-language finding that names the
field (and the container), because the reader is usually an LLM that has to fix the manifest.

Where upstream is feature-gated or version-dependent we take the v1.34 default: no relaxation for
user-namespaced pods (``hostUsers: false``), ``procMount`` must be ``Default`` at every level, and
probe or lifecycle ``host`` fields are forbidden (new baseline control in v1.34). Values that the
apiserver's own validation would reject anyway are treated as violations, never as "allowed".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from webhook import podspec, safe

Level = Literal["baseline", "restricted"]

# Baseline: the container runtime's default capability set; anything else must not be added.
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
# Restricted: drop ALL, add back at most this.
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})

# Namespaced sysctls that cannot affect other pods on the node (PSA sysctls check, v1.32+ list).
SAFE_SYSCTLS = (
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_wmem",
)

SELINUX_TYPES = ("container_t", "container_init_t", "container_kvm_t", "container_engine_t")

# seccompProfile.type and appArmorProfile.type values that keep the container confined.
CONFINED_PROFILES = ("RuntimeDefault", "Localhost")

APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"

# Restricted: the only inline volume sources (everything else is node- or network-storage access).
RESTRICTED_VOLUMES = (
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
)

PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
LIFECYCLE_HOOKS = ("postStart", "preStop")
HOST_HANDLERS = ("httpGet", "tcpSocket")


@dataclass(frozen=True, slots=True)
class Standard:
    """Which level to enforce, plus the capabilities an operator allows on top of it."""

    level: Level = "baseline"
    extra_capabilities: frozenset[str] = frozenset()

    @property
    def restricted(self) -> bool:
        return self.level == "restricted"

    @property
    def allowed_capabilities(self) -> frozenset[str]:
        own = RESTRICTED_CAPABILITIES if self.restricted else BASELINE_CAPABILITIES
        return own | self.extra_capabilities


# Wrong JSON types raise safe.Malformed (a finding), oversized lists safe.TooLarge.
_map = safe.mapping
_list = safe.items


def _on(value: Any) -> bool:
    """A field that must be false/unset is violated by anything else (validation allows only bools)."""
    return value is not None and value is not False


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _names(labels: Iterable[str]) -> str:
    return ", ".join(labels)


def _sets(who: str, field: str, value: Any, rest: str) -> str:
    """The one sentence shape of a finding: who sets which field to what, why it matters, what to do."""
    return f"{who} sets {field}={_show(value)}, {rest}"


def check(
    pod: podspec.PodSpec, metadata: Mapping[str, Any], metadata_path: str, std: Standard
) -> Iterator[str]:
    """Every violation of ``std`` in one pod spec, one message each, in a stable order."""
    windows = _map(pod.spec.get("os")).get("name") == "windows"
    who = "the pod" if pod.path == "spec" else "the pod template"
    yield from _pod_baseline(pod, who)
    yield from _volumes(pod, std)
    yield from _apparmor_annotations(who, metadata, metadata_path)
    containers = list(podspec.containers(pod))
    for container in containers:
        yield from _container_baseline(container, std)
        if std.restricted:
            yield from _container_restricted(container, windows)
    if std.restricted:
        yield from _pod_restricted(pod, who, containers, windows)


# --- baseline: pod level ---------------------------------------------------------------------

_HOST_NAMESPACES = (
    (
        "hostNetwork",
        "the node's network stack (node-local services, other pods' traffic); remove it and expose "
        "the pod through a Service",
    ),
    (
        "hostPID",
        "the node's process table (every process on the node can be read and signalled); remove it",
    ),
    ("hostIPC", "the node's IPC namespace (shared memory of node processes); remove it"),
)


def _pod_baseline(pod: podspec.PodSpec, who: str) -> Iterator[str]:
    for field, what in _HOST_NAMESPACES:
        value = pod.spec.get(field)
        if _on(value):
            yield _sets(who, f"{pod.path}.{field}", value, f"which shares {what}")
    where = f"{pod.path}.securityContext"
    context = _map(pod.spec.get("securityContext"))
    yield from _security_options(who, where, context)
    for index, sysctl in enumerate(_list(context.get("sysctls"))):
        name = _map(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            yield _sets(
                who,
                f"{where}.sysctls[{index}].name",
                name,
                "which is not a safe namespaced sysctl and can change the kernel for the whole node; "
                f"remove it (safe: {', '.join(SAFE_SYSCTLS)})",
            )


def _security_options(who: str, where: str, context: Mapping[str, Any]) -> Iterator[str]:
    """Baseline controls that exist on both the pod's and each container's securityContext."""
    host_process = _map(context.get("windowsOptions")).get("hostProcess")
    if _on(host_process):
        yield _sets(
            who,
            f"{where}.windowsOptions.hostProcess",
            host_process,
            "which runs the containers as processes on the Windows node itself; remove it",
        )
    seccomp = context.get("seccompProfile")
    if seccomp is not None and _map(seccomp).get("type") not in CONFINED_PROFILES:
        yield _sets(
            who,
            f"{where}.seccompProfile.type",
            _map(seccomp).get("type"),
            "which turns off system-call filtering; use RuntimeDefault (or Localhost with a profile "
            "installed on the node)",
        )
    apparmor = context.get("appArmorProfile")
    if apparmor is not None and _map(apparmor).get("type") not in CONFINED_PROFILES:
        yield _sets(
            who,
            f"{where}.appArmorProfile.type",
            _map(apparmor).get("type"),
            "which turns off AppArmor confinement; use RuntimeDefault (or Localhost with a profile "
            "loaded on the node)",
        )
    selinux = _map(context.get("seLinuxOptions"))
    if selinux.get("type") not in (None, "", *SELINUX_TYPES):
        yield _sets(
            who,
            f"{where}.seLinuxOptions.type",
            selinux.get("type"),
            f"which is not a confined container type; remove it or use one of {', '.join(SELINUX_TYPES)}",
        )
    for field in ("user", "role"):
        if selinux.get(field) not in (None, ""):
            yield _sets(
                who,
                f"{where}.seLinuxOptions.{field}",
                selinux.get(field),
                f"which is a custom SELinux {field}; remove it (only type and level may be set)",
            )


def _volumes(pod: podspec.PodSpec, std: Standard) -> Iterator[str]:
    for index, item in enumerate(_list(pod.spec.get("volumes"))):
        volume = _map(item)
        who = f'volume "{volume.get("name", f"#{index}")}"'
        field = f"{pod.path}.volumes[{index}]"
        if "hostPath" in volume:
            yield _sets(
                who,
                f"{field}.hostPath.path",
                _map(volume["hostPath"]).get("path"),
                "which mounts the node's filesystem into the pod; use an emptyDir, configMap or "
                "persistentVolumeClaim volume instead",
            )
        elif std.restricted:
            sources = [key for key in volume if key != "name"]
            if not any(source in RESTRICTED_VOLUMES for source in sources):
                used = f"{field}.{sources[0]}" if sources else f"{field} (no known volume source)"
                yield (
                    f"{who} uses {used}, which the restricted level does not allow; use one of "
                    f"{', '.join(RESTRICTED_VOLUMES)} (e.g. a persistentVolumeClaim)"
                )


def _apparmor_annotations(who: str, metadata: Mapping[str, Any], metadata_path: str) -> Iterator[str]:
    for key, value in sorted(_map(metadata.get("annotations")).items()):
        if not str(key).startswith(APPARMOR_ANNOTATION):
            continue
        if value in ("", "runtime/default") or (isinstance(value, str) and value.startswith("localhost/")):
            continue
        container = str(key)[len(APPARMOR_ANNOTATION) :]
        effect = "turns off AppArmor" if value == "unconfined" else "sets a disallowed AppArmor profile"
        yield _sets(
            who,
            f'{metadata_path}.annotations["{key}"]',
            value,
            f'which {effect} for container "{container}"; remove the annotation or use runtime/default '
            "(or localhost/<profile>)",
        )


# --- baseline: per container -----------------------------------------------------------------


def _container_baseline(container: podspec.Container, std: Standard) -> Iterator[str]:
    who, spec = container.label, container.spec
    context = _map(spec.get("securityContext"))
    if _on(context.get("privileged")):
        yield _sets(
            who,
            "securityContext.privileged",
            context.get("privileged"),
            "which gives it every capability and the node's devices (a node escape); remove it and "
            "add only the capabilities it needs",
        )
    added = safe.strings(_map(context.get("capabilities")).get("add"))
    forbidden = [cap for cap in added if cap not in std.allowed_capabilities]
    if forbidden:
        yield _sets(
            who,
            "securityContext.capabilities.add",
            forbidden,
            f"which the {std.level} level does not allow; remove {'it' if len(forbidden) == 1 else 'them'} "
            "(allowed: "
            f"{', '.join(sorted(std.allowed_capabilities))})",
        )
    for index, port in enumerate(_list(spec.get("ports"))):
        host_port = _map(port).get("hostPort")
        if host_port not in (None, 0):
            yield _sets(
                who,
                f"ports[{index}].hostPort",
                host_port,
                "which opens the port on the node itself; remove hostPort and expose it through a Service",
            )
    proc_mount = context.get("procMount")
    if proc_mount not in (None, "Default"):
        yield _sets(
            who,
            "securityContext.procMount",
            proc_mount,
            "which unmasks /proc paths of the node's kernel; remove it (or set Default)",
        )
    yield from _security_options(who, "securityContext", context)
    yield from _probe_hosts(container)


def _probe_hosts(container: podspec.Container) -> Iterator[str]:
    """Probes and lifecycle hooks run from the kubelet, so a ``host`` aims them at the node's network."""
    handlers = [(probe, _map(container.spec.get(probe))) for probe in PROBES]
    lifecycle = _map(container.spec.get("lifecycle"))
    handlers += [(f"lifecycle.{hook}", _map(lifecycle.get(hook))) for hook in LIFECYCLE_HOOKS]
    for field, handler in handlers:
        if not handler:  # most containers have no probes or hooks: skip the handler kinds
            continue
        for kind in HOST_HANDLERS:
            host = _map(handler.get(kind)).get("host")
            if host not in (None, ""):
                yield _sets(
                    container.label,
                    f"{field}.{kind}.host",
                    host,
                    "which the kubelet contacts from the node, reaching node-local services; remove "
                    "host so it targets the pod's own IP",
                )


# --- restricted ------------------------------------------------------------------------------


def _container_restricted(container: podspec.Container, windows: bool) -> Iterator[str]:
    who = container.label
    context = _map(container.spec.get("securityContext"))
    if not windows:  # Linux-only fields; upstream exempts pods with spec.os.name=windows
        escalation = context.get("allowPrivilegeEscalation")
        if escalation is None:
            yield (
                f"{who} leaves securityContext.allowPrivilegeEscalation unset; set it to false so "
                "setuid binaries cannot gain privileges"
            )
        elif escalation is not False:
            yield _sets(
                who,
                "securityContext.allowPrivilegeEscalation",
                escalation,
                "which the restricted level does not allow; set it to false",
            )
        if "ALL" not in safe.strings(_map(context.get("capabilities")).get("drop")):
            yield (
                f'{who} does not set securityContext.capabilities.drop=["ALL"]; drop ALL and add back '
                "only NET_BIND_SERVICE if it binds a low port"
            )
    if context.get("runAsNonRoot") is False:
        yield _sets(who, "securityContext.runAsNonRoot", False, "which lets it run as root; set it to true")
    if context.get("runAsUser") == 0:
        yield _sets(who, "securityContext.runAsUser", 0, "which runs it as root; use a non-zero UID")


def _pod_restricted(
    pod: podspec.PodSpec, who: str, containers: list[podspec.Container], windows: bool
) -> Iterator[str]:
    where = f"{pod.path}.securityContext"
    context = _map(pod.spec.get("securityContext"))
    if context.get("runAsNonRoot") is False:
        yield _sets(who, f"{where}.runAsNonRoot", False, "which lets containers run as root; set it to true")
    if context.get("runAsUser") == 0:
        yield _sets(who, f"{where}.runAsUser", 0, "which runs the containers as root; use a non-zero UID")

    def unset(field: str) -> list[str]:
        return [c.label for c in containers if _map(c.spec.get("securityContext")).get(field) is None]

    if context.get("runAsNonRoot") is None and (uncovered := unset("runAsNonRoot")):
        yield (
            f"{who} sets neither {where}.runAsNonRoot nor securityContext.runAsNonRoot on "
            f"{_names(uncovered)}; set {where}.runAsNonRoot: true (and a non-zero runAsUser or image USER)"
        )
    if not windows and context.get("seccompProfile") is None and (uncovered := unset("seccompProfile")):
        yield (
            f"{who} sets neither {where}.seccompProfile nor securityContext.seccompProfile on "
            f"{_names(uncovered)}; set {where}.seccompProfile.type: RuntimeDefault"
        )
