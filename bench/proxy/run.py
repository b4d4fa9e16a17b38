"""Keep-alive HTTPS proxy throughput: Aegis vs nginx vs Caddy, to the same upstream.

``python bench/proxy/run.py [--duration 10] [--connections 50] [--rounds 3] [--together]``

One upstream (nginx, 1 worker, serving a 1 KB file over plain HTTP) and three TLS reverse
proxies on free loopback ports, each one process: Aegis (``run_proxy.py``: the real engine
behind the HTTPS listener's transport, TLS on the socket), nginx (1 worker, upstream
keepalive pool) and Caddy (GOMAXPROCS=1). The proxy under test is pinned to CPU 0; ``wrk``
(1 thread) and the upstream share CPU 1. Each round measures every proxy once (interleaved);
the script prints the median req/s, p50/p99 latency and Aegis's ratio to each peer as a
Markdown table.

``--together`` loads the three proxies at the same time instead (three ``wrk``, all proxies
still on CPU 0, which the kernel shares between them). On a shared VM whose speed drifts by a
third from one second to the next, back-to-back runs catch the proxies at different speeds;
loaded together they meet the same moments, and the ratio of their rates is the ratio of
requests served per CPU second.

Needs: nginx (nginx-light), caddy, wrk, taskset. About ``rounds x 3 x duration`` seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cputime import cpu_seconds  # bench/cputime.py

from aegis.testing.ports import free_port, wait_for_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent




NGINX_BASE = """
worker_processes 1;
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    keepalive_requests 1000000;
    {body}
}}
"""

UPSTREAM = """
    server {{ listen 127.0.0.1:{port}; root {tmp}/www; }}
"""

NGINX_PROXY = """
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""

CADDYFILE = """
{{
    admin off
    auto_https off
    skip_install_trust
    storage file_system {tmp}/caddy
}}
https://127.0.0.1:{port} {{
    tls {cert} {key}
    reverse_proxy 127.0.0.1:{upstream}
}}
"""


def start(command: list[str], cpu: str, env: dict[str, str] | None = None,
          log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(["taskset", "-c", cpu, *command], stdout=out, stderr=out,
                            env={**os.environ, **(env or {})})


def nginx(tmp: Path, name: str, body: str, cpu: str) -> subprocess.Popen[bytes]:
    conf = tmp / f"{name}.conf"
    conf.write_text(NGINX_BASE.format(tmp=tmp, name=name, body=body))
    return start(["nginx", "-c", str(conf), "-p", str(tmp)], cpu)


WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def wrk_start(port: int, duration: int, connections: int) -> subprocess.Popen[str]:
    """Start one wrk run against https://127.0.0.1:port/1k (on CPU 1)."""
    return subprocess.Popen(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
         f"https://127.0.0.1:{port}/1k"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def wrk_result(run: subprocess.Popen[str], port: int,
               duration: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of a run started by :func:`wrk_start`."""
    stdout, stderr = run.communicate(timeout=duration + 30)
    match = WRK_RPS.search(stdout)
    if match is None or "Non-2xx" in stdout or "Socket errors" in stdout:
        raise RuntimeError(f"wrk failed on port {port} (body: {fetch(port)!r}):\n"
                           f"{stdout}{stderr}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = {p: float(v) * scale[u] for p, v, u in WRK_LAT.findall(stdout)}
    return float(match.group(1)), latency["50"], latency["99"]


def wrk(port: int, duration: int, connections: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of one wrk run against https://127.0.0.1:port/1k."""
    return wrk_result(wrk_start(port, duration, connections), port, duration)


def wrk_together(ports: dict[str, int], pids: dict[str, int], duration: int,
                 connections: int) -> dict[str, tuple[float, float, float, float]]:
    """One wrk per proxy, all at once: the proxies share CPU 0 at the same moments, so a
    change in the machine's speed reaches all of them alike (see ``--together``). Adds
    requests per CPU second to each result."""
    before = {server: cpu_seconds(pids[server]) for server in ports}
    runs = {server: wrk_start(port, duration, connections) for server, port in ports.items()}
    results = {server: wrk_result(run, ports[server], duration) for server, run in runs.items()}
    return {server: (*result, result[0] * duration
                     / max(cpu_seconds(pids[server]) - before[server], 1e-3))
            for server, result in results.items()}


def fetch(port: int) -> bytes:
    """One response, for the error message when a proxy answers badly."""
    done = subprocess.run(["curl", "-sk", "-i", f"https://127.0.0.1:{port}/1k"],
                          capture_output=True, timeout=10)
    return done.stdout[:300]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--together", action="store_true",
                        help="load all proxies at once (they share CPU 0): ratios of work "
                             "done per share of one CPU, immune to the machine's drift")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aegis-proxy-bench-") as name:
        tmp = Path(name)
        tmp.chmod(0o755)  # nginx workers (nobody) read the upstream's file
        (tmp / "www").mkdir()
        (tmp / "www" / "1k").write_bytes(b"a" * 1024)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        up = free_port()
        ports = {"aegis": free_port(), "nginx": free_port(), "caddy": free_port()}
        (tmp / "Caddyfile").write_text(CADDYFILE.format(
            tmp=tmp, port=ports["caddy"], cert=cert, key=key, upstream=up))
        procs = {
            "upstream": nginx(tmp, "upstream", UPSTREAM.format(port=up, tmp=tmp), "1"),
            "aegis": start([sys.executable, str(HERE / "run_proxy.py"), "--upstream",
                            f"127.0.0.1:{up}", "--port", str(ports["aegis"]),
                            "--cert", str(cert), "--key", str(key)], "0",
                           env={"PYTHONPATH": str(ROOT)}, log=tmp / "aegis.log"),
            "nginx": nginx(tmp, "proxy", NGINX_PROXY.format(
                upstream=up, port=ports["nginx"], cert=cert, key=key), "0"),
            "caddy": start(["caddy", "run", "--config", str(tmp / "Caddyfile"),
                            "--adapter", "caddyfile"], "0",
                           env={"GOMAXPROCS": "1", "HOME": str(tmp),
                                "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}),
        }
        try:
            wait_for_port(up, procs["upstream"])
            for server, port in ports.items():
                wait_for_port(port, procs[server])
                wrk(port, 2, args.connections)  # warm up: pools, JIT-less caches, TLS
            results: dict[str, list[tuple[float, float, float]]] = {s: [] for s in ports}
            per_cpu: dict[str, list[float]] = {s: [] for s in ports}
            pids = {server: procs[server].pid for server in ports}
            for _ in range(args.rounds):
                if args.together:
                    for server, result in wrk_together(ports, pids, args.duration,
                                                       args.connections).items():
                        results[server].append(result[:3])
                        per_cpu[server].append(result[3])
                    continue
                for server, port in ports.items():
                    results[server].append(wrk(port, args.duration, args.connections))
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                proc.wait(10)
    report(results, per_cpu, args)


def report(results: dict[str, list[tuple[float, float, float]]],
           per_cpu: dict[str, list[float]], args: argparse.Namespace) -> None:
    med = {s: tuple(statistics.median(r[i] for r in runs) for i in range(3))
           for s, runs in results.items()}
    aegis_rps = med["aegis"][0]
    together = (" All three proxies loaded at once, sharing CPU 0: req/s and latencies are "
                "per share of the CPU; the ratios compare work per CPU second."
                if args.together else "")
    print(f"Keep-alive HTTPS, 1 KB body, wrk -t1 -c{args.connections} -d{args.duration}s, "
          f"median of {args.rounds} rounds; proxy on CPU 0, wrk + upstream nginx on CPU 1."
          f"{together}\n")
    print("| proxy | req/s | p50 ms | p99 ms | Aegis ratio |")
    print("|---|---|---|---|---|")
    for server, (rps, p50, p99) in med.items():
        ratio = "-" if server == "aegis" else f"{aegis_rps / rps:.2f}x"
        print(f"| {server} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {ratio} |")
    # On a shared VM the machine's speed drifts between rounds; the ratio within each round
    # (all proxies measured back to back) is steadier than the ratio of the medians.
    print()
    for server, runs in results.items():
        if server == "aegis":
            continue
        per_round = [a[0] / b[0] for a, b in zip(results["aegis"], runs, strict=True)]
        print(f"Aegis/{server} per round: " + ", ".join(f"{r:.2f}x" for r in per_round)
              + f" (median {statistics.median(per_round):.2f}x)")
    if not per_cpu["aegis"]:
        return
    print()
    for server, rates in per_cpu.items():
        print(f"{server} requests per CPU second: {statistics.median(rates):,.0f} (median)")
        if server != "aegis":
            per_round = [a / b for a, b in zip(per_cpu["aegis"], rates, strict=True)]
            print(f"Aegis/{server} per CPU second, per round: "
                  + ", ".join(f"{r:.2f}x" for r in per_round)
                  + f" (median {statistics.median(per_round):.2f}x)")


if __name__ == "__main__":
    main()
