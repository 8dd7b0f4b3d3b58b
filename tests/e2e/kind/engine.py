"""The Docker engine of `make e2e-kind`: the caller's when one answers, else one of its own.

``python -m tests.e2e.kind.engine start DIR`` prints the ``DOCKER_HOST`` to use. If ``docker info``
already answers (``DOCKER_HOST`` or the default socket) it starts nothing and prints that; otherwise
it starts Debian's ``dockerd`` (``tests.e2e.controlplane.images.DockerEngine``: data root, exec root,
socket and cgroup parent under ``DIR``; no default bridge and no iptables, so the host's firewall is
never touched: kind's own network is a plain bridge and ``kind`` publishes the apiserver port through
docker-proxy) with ``runc-bounded`` (next to this file) as its default runtime, and records that it
did in ``DIR/started``. ``stop DIR`` stops only an engine it started (and removes the networks it
left), so a caller's engine is never touched.

Why the runtime: Docker 20.10 grants ``--privileged`` containers every capability the kernel knows,
not the bounding set's (moby#42906, fixed in Docker 23+), and this machine's bounding set lacks
CAP_SYS_RESOURCE, so every kind node fails with ``unable to apply caps``. Debian bookworm has no newer
engine; crun (the other runtime it packages) refuses this host's hybrid cgroup layout. ``runc-bounded``
drops the capabilities the host cannot grant, exactly what Docker 23+ does, and runs runc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.controlplane import host, images

HERE = Path(__file__).resolve().parent
RUNTIME = HERE / "runc-bounded"
CGROUP_PARENT = "kag-kind-e2e"  # the nodes' cgroups: apart from the guard image build's (kag-node-e2e-build)


def answers(docker_host: str | None) -> bool:
    env = {**os.environ, **({"DOCKER_HOST": docker_host} if docker_host else {})}
    return subprocess.run([images.DOCKER, "info"], capture_output=True, env=env, check=False).returncode == 0


def engine(directory: Path) -> images.DockerEngine:
    return images.DockerEngine(
        directory,
        options=(f"--add-runtime=bounded={RUNTIME}", "--default-runtime=bounded"),
        cgroup_parent=CGROUP_PARENT,
    )


SYSCTLS_FILE = "sysctls.json"  # the host's values before the cluster: kind's kubelets change some


def start(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    saved = directory / SYSCTLS_FILE
    if not saved.exists():  # a second start (KEEP=1 earlier) keeps the first, true values
        saved.write_text(json.dumps(host.read_sysctls()))
    if answers(os.environ.get("DOCKER_HOST")):
        return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    host.ensure_packages(lambda message: print(message, file=sys.stderr), ("docker.io", "runc"))
    own = engine(directory)
    started = time.monotonic()
    own.start()  # the Popen is a new session: it outlives this process until `stop`
    assert own.process is not None
    (directory / "started").write_text(f"{own.process.pid}\n")
    took = time.monotonic() - started
    print(f"e2e-kind: started dockerd {own.process.pid} in {took:.1f}s", file=sys.stderr)
    return f"unix://{own.socket}"


def stop(directory: Path) -> None:
    saved = directory / SYSCTLS_FILE
    if saved.exists():
        for note in host.restore_sysctls(json.loads(saved.read_text())):
            print(f"e2e-kind: {note}", file=sys.stderr)
        saved.unlink()
    marker = directory / "started"
    if not marker.exists():
        return
    own = engine(directory)
    env = {**os.environ, "DOCKER_HOST": f"unix://{own.socket}"}
    # Whatever containers are left (KEEP=1 earlier, a failed create), then kind's network, which kind
    # leaves behind on purpose: its bridge is a host link that would outlive the engine.
    listed = subprocess.run(
        [images.DOCKER, "ps", "-aq"], capture_output=True, text=True, env=env, check=False
    ).stdout.split()
    if listed:
        subprocess.run([images.DOCKER, "rm", "-f", "-v", *listed], capture_output=True, env=env, check=False)
    subprocess.run([images.DOCKER, "network", "prune", "-f"], capture_output=True, env=env, check=False)
    pid = int(marker.read_text())
    try:
        os.kill(pid, 15)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.3)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, 9)
    except ProcessLookupError:
        pass
    host.kill_processes_mentioning(str(directory))  # its containerd and shims, if any are left
    host.remove_cgroups(CGROUP_PARENT)
    # dockerd bind-mounts its data root (and, killed, may leave overlay and netns mounts under it).
    host.unmount(point for point in host.mountpoints() if point.startswith(f"{directory}/"))
    for state in ("data", "exec"):  # images and containers of this run: the caches live elsewhere
        shutil.rmtree(directory / state, ignore_errors=True)
    marker.unlink()


def main(arguments: list[str]) -> int:
    if len(arguments) != 2 or arguments[0] not in ("start", "stop"):
        print("usage: python -m tests.e2e.kind.engine start|stop DIR", file=sys.stderr)
        return 2
    directory = Path(arguments[1]).resolve()
    if arguments[0] == "start":
        try:
            print(start(directory))
        except (images.ImageError, host.HostUnavailable) as error:
            print(f"e2e-kind: {error}", file=sys.stderr)
            return 1
        return 0
    stop(directory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
