"""``make bench``: the webhook against a floor measured in the same run.

1. Build the Go load generator (cached), create certificates and the request mixes.
2. Start the floor (no-op ASGI app, same uvicorn/TLS settings) and the real ``agent-guard serve``.
3. Max throughput of each (closed loop) in alternating runs (``--rounds``), the median ratio
   webhook/floor and its spread, for /validate and /authorize.
4. Open-loop latency at fixed rates (500 and 1,000 req/s): p50/p99/p99.9.
5. The same with 2 workers, if the server supports ``--workers``.
6. In-process cost of a review by part (``bench.inproc``) and an engine-only micro-benchmark per
   guard family (no HTTP).
7. A memory soak at 1,000 req/s (RSS at start and end; ``--soak 300`` for the 5-minute one).
8. What the apiserver adds, four conditions side by side on one real kube-apiserver: no webhook, the
   floor registered like the guard, the guard, and the in-tree alternative (ValidatingAdmissionPolicy +
   Pod Security Admission); agent Pod/Deployment creations, namespace deletes and a mixed stream
   (``bench.e2e_cost``; needs the e2e control plane, built on first use).

Results print as a table and are written as JSON (``--json``) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import budget_memory, e2e_cost, inproc, micro, mix
from tests import gotools, serving
from webhook import certs

LOADGEN_SRC = Path(__file__).resolve().parent / "loadgen"


def loadgen_tool() -> gotools.Tool:
    """The load generator, cached per source version (``tests.gotools`` builds it under a lock)."""
    return gotools.Tool(
        name="the load generator",
        module_dir=LOADGEN_SRC,
        package=".",
        target=gotools.cache_root() / "tools" / f"loadgen-{gotools.source_digest(LOADGEN_SRC)}",
        purpose="make bench builds its load generator (a small Go program)",
    )


def build_loadgen() -> Path:
    try:
        return gotools.ensure(loadgen_tool(), print)
    except gotools.BuildError as exc:
        raise SystemExit(f"make bench: {exc}") from exc


def _command(
    loadgen: Path, url: str, ca: Path, bodies: Path, mode: str, seconds: float, **opts: Any
) -> list[str]:
    command = [str(loadgen), "-url", url, "-ca", str(ca), "-bodies", str(bodies), "-mode", mode]
    command += ["-duration", f"{seconds}s", "-warmup", f"{opts.pop('warmup', 2)}s"]
    for key, value in opts.items():
        command += [f"-{key}", str(value)]
    return command


def load(
    loadgen: Path, url: str, ca: Path, bodies: Path, mode: str, seconds: float, **opts: Any
) -> dict[str, Any]:
    command = _command(loadgen, url, ca, bodies, mode, seconds, **opts)
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def soak(loadgen: Path, guard: serving.Guard, ca: Path, bodies: Path, seconds: float) -> dict[str, Any]:
    """1,000 req/s for ``seconds`` after a 20 s warm-up, sampling the server's RSS every 30 s.

    The first sample is taken after the warm-up, so what the first requests allocate once (imports,
    caches, connection buffers) is not mistaken for growth; a leak shows as a rising series.
    """
    url = f"{guard.url}/validate"
    load(loadgen, url, ca, bodies, "rate", 20, rate=1000, conns=64, warmup=0)
    command = _command(loadgen, url, ca, bodies, "rate", seconds, rate=1000, conns=64, warmup=0)
    samples = [(0.0, rss_kib(guard.process.pid))]
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as running:
        while running.poll() is None:
            time.sleep(1)
            elapsed = time.monotonic() - started
            if elapsed - samples[-1][0] >= 30:
                samples.append((round(elapsed), rss_kib(guard.process.pid)))
        output = running.stdout.read() if running.stdout else ""
    samples.append((round(time.monotonic() - started), rss_kib(guard.process.pid)))
    result: dict[str, Any] = json.loads(output)
    return {"seconds": seconds, "rss_kib": samples, **result}


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (workers), from /proc."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def supports_workers() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--help"], capture_output=True, text=True, check=False
    )
    return "--workers" in done.stdout


def endpoint_exists(guard: serving.Guard, path: str) -> bool:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(f"{guard.url}{path}", data=b"{}", method="POST")
    try:
        urllib.request.urlopen(request, context=guard.context(), timeout=5)
    except urllib.error.HTTPError as exc:
        return exc.code != 404
    return True


def fmt(result: dict[str, Any]) -> str:
    return (
        f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
        f"p99.9 {result['p999_ms']:6.2f} ms  errors {result['errors'] + result['non200']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per load run")
    parser.add_argument("--soak", type=float, default=60, help="soak seconds at 1,000 req/s (0: skip)")
    parser.add_argument(
        "--e2e-requests",
        type=int,
        default=1000,
        help="requests per condition and workload through a real apiserver (0: skip)",
    )
    parser.add_argument("--conns", type=int, default=32, help="connections for max-throughput runs")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating floor/webhook max-throughput runs (median ratio)"
    )
    parser.add_argument("--json", type=Path, help="write all results here")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    loadgen = build_loadgen()
    with tempfile.TemporaryDirectory(prefix="agent-guard-bench-") as tmp:
        workdir = Path(tmp)
        cert_dir = workdir / "certs"
        certs.generate(cert_dir)
        ca = cert_dir / "ca.crt"
        validate_bodies, access_bodies = workdir / "validate.jsonl", workdir / "authorize.jsonl"
        results["bodies"] = {
            "validate": mix.write(validate_bodies, mix.admission_bodies()),
            "authorize": mix.write(access_bodies, mix.access_bodies()),
        }
        print(f"bodies: {json.dumps(results['bodies'])}", flush=True)

        def rates(label: str, guard: serving.Guard, has_authorize: bool) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for endpoint, bodies in (("validate", validate_bodies), ("authorize", access_bodies)):
                if endpoint == "authorize" and not has_authorize:
                    print(f"[{label}] /authorize: not served by this build, skipped", flush=True)
                    continue
                url = f"{guard.url}/{endpoint}"
                for rate in (500, 1000):
                    fixed = load(loadgen, url, ca, bodies, "rate", args.seconds, rate=rate, conns=64)
                    print(f"[{label}] /{endpoint} @{rate:>5}/s:  {fmt(fixed)}", flush=True)
                    out[f"{endpoint}_rate_{rate}"] = fixed
            return out

        def measure(label: str, *extra: str) -> dict[str, Any]:
            with serving.running(workdir, cert_dir, *extra) as guard:
                out = rates(label, guard, endpoint_exists(guard, "/authorize"))
                url = f"{guard.url}/validate"
                out["validate_max"] = load(
                    loadgen, url, ca, validate_bodies, "max", args.seconds, conns=args.conns
                )
                print(f"[{label}] /validate max:       {fmt(out['validate_max'])}", flush=True)
            return out

        # Max throughput, floor and webhook alternating: one run each is at the mercy of whatever
        # else the two cores do in those seconds (runs of the same server differ by up to 2x here).
        with (
            e2e_cost.floor_process(workdir, cert_dir) as floor_guard,
            serving.running(workdir, cert_dir) as guard,
        ):
            has_authorize = endpoint_exists(guard, "/authorize")
            results["floor"], results["webhook_1_worker"] = {}, {}
            for endpoint, bodies in (("validate", validate_bodies), ("authorize", access_bodies)):
                if endpoint == "authorize" and not has_authorize:
                    continue
                runs: dict[str, list[dict[str, Any]]] = {"floor": [], "webhook": []}
                for index in range(args.rounds):
                    order = (("floor", floor_guard), ("webhook", guard))
                    for label, server in order if index % 2 == 0 else order[::-1]:
                        url = f"{server.url}/{endpoint}"
                        runs[label].append(
                            load(loadgen, url, ca, bodies, "max", args.seconds, conns=args.conns)
                        )
                ratios = sorted(
                    w["rps"] / f["rps"] for f, w in zip(runs["floor"], runs["webhook"], strict=True)
                )
                for label, key in (("floor", "floor"), ("webhook 1 worker", "webhook")):
                    best = sorted(runs[key], key=lambda r: r["rps"])[len(runs[key]) // 2]  # the median run
                    spread = " ".join(f"{r['rps']:.0f}" for r in runs[key])
                    print(f"[{label}] /{endpoint} max (median of {spread}): {fmt(best)}", flush=True)
                    results["floor" if key == "floor" else "webhook_1_worker"][f"{endpoint}_max"] = best
                results[f"ratio_{endpoint}"] = ratio = ratios[len(ratios) // 2]
                results[f"ratios_{endpoint}"] = ratios
                print(
                    f"ratio /{endpoint} webhook/floor (1 worker): {ratio:.2f} (median of "
                    f"{' '.join(f'{r:.2f}' for r in ratios)}; target >= 0.40)",
                    flush=True,
                )
            results["webhook_1_worker"].update(rates("webhook 1 worker", guard, has_authorize))
        if supports_workers():
            results["webhook_2_workers"] = measure("webhook 2 workers", "--workers", "2")
        else:
            print("2 workers: this build of agent-guard serve has no --workers, skipped", flush=True)

        results["in_process"] = inproc.run()
        for label, micros in results["in_process"].items():
            print(f"[in-process] {label:<30} {micros:7.1f} us per review", flush=True)
        results["after_idle"] = inproc.after_idle()
        inproc.print_after_idle(results["after_idle"])
        results["engine"] = micro.run()
        results["budget_memory"] = budget_memory.run()
        print(f"[budget ledger] {json.dumps(results['budget_memory'])}", flush=True)
        for family, rate in results["engine"].items():
            print(f"[engine] {family:<22} {rate:10.0f} reviews/s", flush=True)

        if args.soak > 0:
            with serving.running(workdir, cert_dir) as guard:
                results["soak"] = soaked = soak(loadgen, guard, ca, validate_bodies, args.soak)
            series = " ".join(f"{t}s:{kib // 1024}" for t, kib in soaked["rss_kib"])
            print(f"[soak] {args.soak:.0f}s @1000/s: {fmt(soaked)}  RSS MiB {series}", flush=True)

    if args.e2e_requests > 0:
        results["apiserver"] = e2e_cost.run(args.e2e_requests)  # prints its table per workload

    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
