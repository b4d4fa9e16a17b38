"""Handshake benchmark: new TLS connections per second, Aegis vs nginx vs Caddy.

``python bench/handshake/run.py [--duration 5] [--clients 32]`` builds the Go client
(``client.go``, standard library only), mints one ECDSA P-256 and one RSA-2048 certificate,
and for each key type starts Aegis (``aegis_server.py``: the real SNI/policy TLS layer), nginx
(1 worker) and Caddy (GOMAXPROCS=1) on free loopback ports with that certificate. Servers are
pinned to CPU 0 and the load client to CPU 1 (``taskset``), one server at a time. Each server
is measured with TLS 1.2 and TLS 1.3; the script prints a Markdown table of handshakes/s and
Aegis's rate as a ratio of each peer (medians of ``--rounds`` interleaved rounds), then the
per-round ratios and their medians. ``--floor`` also measures ``floor_server.py`` (a bare epoll
loop driving the same OpenSSL and policy context: what Python cannot go below) and prints
Aegis / floor and floor / nginx. nginx / Caddy is printed too: it shows where a target set
against Caddy sits against nginx on this machine. ``--together`` loads all servers at once
(still all on CPU 0, one client each) and reports handshakes per CPU second each server used:
on a shared VM whose speed drifts between seconds, the servers then meet the same moments.

Needs: golang-go, nginx (nginx-light), caddy, taskset (util-linux). About 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from aegis.testing.ports import free_port, wait_for_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cputime import cpu_seconds  # bench/cputime.py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NAME = "bench.example.com"
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")




def mint(directory: Path, kind: str) -> tuple[Path, Path]:
    """A CA-signed leaf for NAME; returns (chain PEM, key PEM)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Aegis bench CA")])
    key = (ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa"
           else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{kind}.pem", directory / f"{kind}.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def start_aegis(work: Path, port: int, cert: Path, key: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, str(HERE / "aegis_server.py"), str(port),
         str(cert), str(key), NAME], env=env, stdout=subprocess.DEVNULL)


def start_floor(work: Path, port: int, cert: Path, key: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, str(HERE / "floor_server.py"), str(port),
         str(cert), str(key)], env=env, stdout=subprocess.DEVNULL)


def start_nginx(work: Path, port: int, cert: Path, key: Path) -> subprocess.Popen[bytes]:
    prefix = work / f"nginx-{port}"
    (prefix / "tmp").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port} ssl backlog=1024;
        server_name {NAME};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {CIPHERS};
        ssl_session_tickets off;
        return 200 "ok";
    }}
}}
""")
    return subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", str(prefix), "-c", str(conf),
                             "-g", "daemon off; user root;"], stderr=subprocess.DEVNULL)


def start_caddy(work: Path, port: int, cert: Path, key: Path) -> subprocess.Popen[bytes]:
    home = work / f"caddy-{port}"
    home.mkdir()
    caddyfile = home / "Caddyfile"
    caddyfile.write_text(f"""{{
    admin off
    auto_https off
    storage file_system {home}/data
    log {{
        output discard
    }}
}}
https://{NAME}:{port} {{
    bind 127.0.0.1
    tls {cert} {key}
    respond "ok"
}}
""")
    env = dict(os.environ, GOMAXPROCS="1", HOME=str(home), XDG_DATA_HOME=str(home),
               XDG_CONFIG_HOME=str(home))
    return subprocess.Popen(["taskset", "-c", "0", "caddy", "run", "--config", str(caddyfile),
                             "--adapter", "caddyfile"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(client: Path, port: int, version: str, duration: float, clients: int) -> float:
    command = ["taskset", "-c", "1", str(client), "-addr", f"127.0.0.1:{port}", "-sni", NAME,
               "-tls", version, "-c", str(clients)]
    subprocess.run([*command, "-d", "1s"], capture_output=True, check=True)  # warm-up
    done = subprocess.run([*command, "-d", f"{duration}s"], capture_output=True, check=True)
    result = json.loads(done.stdout)
    if result.get("failed"):
        print(f"  note: {result['failed']} failed, e.g. {result.get('first_error')}",
              file=sys.stderr)
    return float(result["rate"])


def measure_together(client: Path, ports: dict[str, int], pids: dict[str, int], version: str,
                     duration: float, clients: int) -> dict[str, tuple[float, float]]:
    """Every server loaded at once (one client each): {server: (handshakes/s, handshakes per
    CPU second)}. The servers share CPU 0 at the same moments, so the machine's drift reaches
    all of them alike; dividing by the CPU time each really used also removes unequal
    shares."""
    def command(port: int, seconds: str) -> list[str]:
        return ["taskset", "-c", "1", str(client), "-addr", f"127.0.0.1:{port}", "-sni", NAME,
                "-tls", version, "-c", str(clients), "-d", seconds]

    warm = [subprocess.Popen(command(port, "1s"), stdout=subprocess.DEVNULL)
            for port in ports.values()]
    for process in warm:
        process.wait()
    before = {server: cpu_seconds(pid) for server, pid in pids.items()}
    runs = {server: subprocess.Popen(command(port, f"{duration}s"), stdout=subprocess.PIPE)
            for server, port in ports.items()}
    results = {}
    for server, process in runs.items():
        out, _ = process.communicate()
        result = json.loads(out)
        used = max(cpu_seconds(pids[server]) - before[server], 1e-3)
        results[server] = (float(result["rate"]), result["handshakes"] / used)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--floor", action="store_true",
                        help="also measure floor_server.py (see the module's docstring)")
    parser.add_argument("--together", action="store_true",
                        help="load all servers at once (they share CPU 0) and compare "
                             "handshakes per CPU second, immune to the machine's drift")
    args = parser.parse_args()
    for tool in ("go", "nginx", "caddy", "taskset"):
        if shutil.which(tool) is None:
            print(f"missing {tool}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="aegis-hsbench-") as temp:
        work = Path(temp)
        client = work / "client"
        env = dict(os.environ, GOCACHE=str(work / "gocache"), GOFLAGS="", GO111MODULE="off")
        subprocess.run(["go", "build", "-o", str(client), str(HERE / "client.go")],
                       check=True, env=env)
        samples: dict[tuple[str, str, str], list[float]] = {}
        cpu_samples: dict[tuple[str, str, str], list[float]] = {}
        servers = {"aegis": start_aegis, "nginx": start_nginx, "caddy": start_caddy}
        if args.floor:
            servers["floor"] = start_floor
        for kind in ("ecdsa", "rsa"):
            cert, key = mint(work, kind)
            running = []
            try:
                ports = {}
                for server, start in servers.items():
                    port = free_port()
                    process = start(work, port, cert, key)
                    running.append(process)
                    wait_for_port(port, process)
                    ports[server] = port
                pids = {server: process.pid for server, process in zip(ports, running, strict=True)}
                # Interleaved rounds: a busy neighbour slows every server alike.
                for _ in range(args.rounds):
                    for version in ("1.2", "1.3"):
                        if args.together:
                            together = measure_together(client, ports, pids, version,
                                                        args.duration, args.clients)
                            for server, (rate, per_cpu) in together.items():
                                samples.setdefault((server, kind, version), []).append(rate)
                                cpu_samples.setdefault((server, kind, version),
                                                       []).append(per_cpu)
                                print(f"{server:6} {kind:5} TLS {version}: {rate:8.0f} "
                                      f"handshakes/s, {per_cpu:8.0f} per CPU second",
                                      file=sys.stderr, flush=True)
                            continue
                        for server, port in ports.items():
                            rate = measure(client, port, version, args.duration, args.clients)
                            samples.setdefault((server, kind, version), []).append(rate)
                            print(f"{server:6} {kind:5} TLS {version}: {rate:8.0f} handshakes/s",
                                  file=sys.stderr, flush=True)
            finally:
                for process in running:
                    process.terminate()
                    process.wait(timeout=10)
    if args.together:
        print("All servers loaded at once, sharing CPU 0; figures are per CPU second "
              "(handshakes / CPU time each server used).\n")
        samples = cpu_samples
    rates = {key: statistics.median(values) for key, values in samples.items()}
    print("| key | TLS | Aegis/s | nginx/s | Caddy/s | Aegis / nginx | Aegis / Caddy |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("ecdsa", "rsa"):
        for version in ("1.2", "1.3"):
            a, n, c = (rates[(s, kind, version)] for s in ("aegis", "nginx", "caddy"))
            print(f"| {kind.upper()} | {version} | {a:.0f} | {n:.0f} | {c:.0f} | "
                  f"{a / n:.2f} | {a / c:.2f} |")
    # Ratios within each round pair measurements taken seconds apart: on a shared machine
    # whose speed drifts, their median is steadier than the ratio of the medians.
    print()
    for kind in ("ecdsa", "rsa"):
        for version in ("1.2", "1.3"):
            # nginx / Caddy: where the targets sit against the fastest C server in this run
            pairs = [("aegis", "nginx"), ("aegis", "caddy"), ("nginx", "caddy")]
            if args.floor:
                pairs += [("aegis", "floor"), ("floor", "nginx")]
            for server, peer in pairs:
                ratios = [a / p for a, p in zip(samples[(server, kind, version)],
                                                samples[(peer, kind, version)], strict=True)]
                listed = ", ".join(f"{r:.2f}x" for r in ratios)
                print(f"{kind.upper()} TLS {version} {server.capitalize()}/{peer} per round: "
                      f"{listed} (median {statistics.median(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
