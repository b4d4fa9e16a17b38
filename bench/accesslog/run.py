"""What the access log costs: ``aegis run`` with the access log on (its default) and off.

``python bench/accesslog/run.py [--duration 5] [--rounds 5] [--connections 50] [--together]``

Starts the product as a user does: two ``aegis run`` processes (the console script next to
this Python, default settings apart from non-root ports and their own data directories),
each pinned to CPU 0; creates the same proxy host in each through the admin API; then loads
keep-alive HTTPS (``wrk -t1``, 1 KB body from one upstream nginx; wrk and nginx on CPU 1)
in interleaved rounds: on, off, on, off, ... The "on" instance writes its access log to
stdout (the default), which this script sends to a file, as a shell redirect, a container
runtime or journald would take it; ``--on-access-log PATH`` measures a file target instead.

Prints, per instance, the median requests/s, p50/p99 latency and CPU use (user + system
seconds per second of load, ``bench/cputime.py``), and the ratios on / off in requests/s
and in requests per CPU second. ``--together`` loads both at once (they share CPU 0) as the
other benchmarks' option of that name does. Target (issue 16): on within 10% of off.

Run it with the Python of the environment whose Aegis you measure (``.venv/bin/python``
after ``scripts/run`` or ``scripts/test``): the ``aegis`` script next to that Python is
what starts.

Needs: nginx (nginx-light), wrk, taskset. About ``rounds x 2 x duration`` seconds plus start.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proxy"))
from cputime import cpu_seconds  # bench/cputime.py
from run import UPSTREAM, nginx, wrk_result  # bench/proxy/run.py

from aegis.testing.ports import free_port, wait_for_port

HOST = "bench.test"


def aegis_command() -> list[str]:
    """The ``aegis`` console script of this environment (as installed by pip)."""
    script = Path(sys.executable).with_name("aegis")
    return [str(script)] if script.exists() else [sys.executable, "-m", "aegis"]


class Instance:
    """One ``aegis run`` in its own directory on free loopback ports."""

    def __init__(self, tmp: Path, name: str, access_log: str | None) -> None:
        self.name = name
        self.workdir = tmp / name
        self.workdir.mkdir()
        self.token = secrets.token_hex(16)
        self.https, self.admin = free_port(), free_port()
        env = {**os.environ, "AEGIS_HTTP_LISTEN": f"tcp:{free_port()}:interface=127.0.0.1",
               "AEGIS_HTTPS_LISTEN": f"tcp:{self.https}:interface=127.0.0.1",
               "AEGIS_ADMIN_LISTEN": f"tcp:{self.admin}:interface=127.0.0.1",
               "AEGIS_ADMIN_TOKEN": self.token}
        env.pop("AEGIS_ACCESS_LOG", None)
        if access_log is not None:
            env["AEGIS_ACCESS_LOG"] = access_log
        self.output = self.workdir / "stdout.log"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(["taskset", "-c", "0", *aegis_command(), "run"],
                                            cwd=self.workdir, env=env, stdout=out,
                                            stderr=subprocess.STDOUT)

    def wait(self) -> None:
        wait_for_port(self.admin, self.process, timeout=60)
        wait_for_port(self.https, self.process, timeout=60)

    def create_host(self, upstream: int) -> None:
        """POST /api/v1/hosts, trusting the local CA as the docs tell users to."""
        context = ssl.create_default_context(
            cafile=str(self.workdir / ".cache/ssl/aegis-local-ca.crt"))
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.admin}/api/v1/hosts", method="POST",
            data=json.dumps({"domain": HOST, "upstream": f"http://127.0.0.1:{upstream}"}).encode(),
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            assert response.status == 201, response.status

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def wrk_start(port: int, duration: int, connections: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
         "-H", f"Host: {HOST}", f"https://127.0.0.1:{port}/1k"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def measure(instances: list[Instance], duration: int, connections: int,
            together: bool) -> dict[str, tuple[float, float, float, float]]:
    """(req/s, p50 ms, p99 ms, CPU seconds per second) of each instance for one round."""
    results = {}
    groups = [instances] if together else [[each] for each in instances]
    for group in groups:
        before = {each.name: cpu_seconds(each.process.pid) for each in group}
        runs = {each.name: wrk_start(each.https, duration, connections) for each in group}
        for each in group:
            rps, p50, p99 = wrk_result(runs[each.name], each.https, duration)
            cpu = (cpu_seconds(each.process.pid) - before[each.name]) / duration
            results[each.name] = (rps, p50, p99, cpu)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--together", action="store_true")
    parser.add_argument("--on-access-log", default=None,
                        help="AEGIS_ACCESS_LOG of the 'on' instance (default: unset, i.e. -)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aegis-accesslog-bench-") as name:
        tmp = Path(name)
        tmp.chmod(0o755)  # nginx workers (nobody) read the upstream's file
        (tmp / "www").mkdir()
        (tmp / "www" / "1k").write_bytes(b"a" * 1024)
        up = free_port()
        upstream = nginx(tmp, "upstream", UPSTREAM.format(port=up, tmp=tmp), "1")
        instances = [Instance(tmp, "on", args.on_access_log), Instance(tmp, "off", "off")]
        try:
            wait_for_port(up, upstream)
            for each in instances:
                each.wait()
                each.create_host(up)
            measure(instances, 2, args.connections, False)  # warm up
            rounds = [measure(instances, args.duration, args.connections, args.together)
                      for _ in range(args.rounds)]
            with open(instances[0].output, "rb") as output:
                logged = sum(1 for _ in output)
        finally:
            for each in instances:
                each.stop()
            upstream.terminate()
            upstream.wait(10)
    report(rounds, args, logged)


def report(rounds: list[dict[str, tuple[float, float, float, float]]],
           args: argparse.Namespace, logged: int) -> None:
    mode = "both loaded at once (sharing CPU 0)" if args.together else "one after the other"
    print(f"aegis run, keep-alive HTTPS, 1 KB body, wrk -t1 -c{args.connections} "
          f"-d{args.duration}s, {args.rounds} interleaved rounds, {mode}; "
          f"the 'on' instance wrote {logged:,} lines to "
          f"{args.on_access_log or 'stdout (a file)'}.\n")
    print("| access log | req/s | p50 ms | p99 ms | CPU s/s | req per CPU second |")
    print("|---|---|---|---|---|---|")
    for name in ("on", "off"):
        rps, p50, p99, cpu = (statistics.median(r[name][i] for r in rounds) for i in range(4))
        per_cpu = statistics.median(r[name][0] / max(r[name][3], 1e-3) for r in rounds)
        print(f"| {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {cpu:.2f} | {per_cpu:,.0f} |")
    ratio = [r["on"][0] / r["off"][0] for r in rounds]
    per_cpu_ratio = [(r["on"][0] / r["on"][3]) / (r["off"][0] / r["off"][3]) for r in rounds]
    print(f"\non / off, req/s, per round: {', '.join(f'{x:.3f}' for x in ratio)} "
          f"(median {statistics.median(ratio):.3f})")
    print(f"on / off, per CPU second, per round: {', '.join(f'{x:.3f}' for x in per_cpu_ratio)}"
          f" (median {statistics.median(per_cpu_ratio):.3f})")


if __name__ == "__main__":
    main()
