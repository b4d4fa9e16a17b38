"""``aegis status`` (what is well and what is failing) and ``aegis check`` (an exit status).

Both read the same report: the certificates and hosts as the API lists them, and
``GET /api/v1/health`` when the server has it. The health document is read defensively — a
server without it (404) is judged from the certificates alone, and of the document only the
HTTP status (200 healthy, 503 not) and counts named ``expiring``, ``expired`` and ``failing``
are used, wherever they sit, so both older and newer servers are understood.

Levels, worst wins, as monitoring plugins expect (0 OK, 1 WARNING, 2 CRITICAL):

* critical: a certificate expired, or with fewer than ``--critical-days`` (7) left; a
  certificate the server cannot serve (``problem``); health answering 503 or counting expired
  or failing certificates; the server unreachable or refusing the token.
* warning: fewer than ``--warn-days`` (30) left; not yet valid; automatic issuance failing
  for a name (its last attempt has an error); health counting expiring certificates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.python import usage

from aegis.cli import _output as output
from aegis.cli._client import AdminClient, CommandFailed
from aegis.cli._command import ClientCommand

OK, WARNING, CRITICAL = 0, 1, 2
LEVEL_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
HEALTH_COUNTS = ("expiring", "expired", "failing")


@dataclass(frozen=True)
class Finding:
    level: int
    message: str
    certificate_id: int | None = None
    host_id: int | None = None

    def document(self) -> dict[str, Any]:
        return {"level": LEVEL_NAMES[self.level].lower(), "message": self.message,
                "certificate_id": self.certificate_id, "host_id": self.host_id}


@dataclass
class Report:
    health_status: int | None = None  # HTTP status of /api/v1/health; None: not offered
    health: Any = None
    certificates: list[dict[str, Any]] = field(default_factory=list)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def level(self) -> int:
        return max((finding.level for finding in self.findings), default=OK)

    def print_findings(self) -> None:
        for finding in self.findings:
            print(f"  {LEVEL_NAMES[finding.level]}: {finding.message}")

    def document(self) -> dict[str, Any]:
        by_status = Counter(str(cert.get("status")) for cert in self.certificates)
        return {
            "status": LEVEL_NAMES[self.level].lower(), "exit_code": self.level,
            "health": None if self.health_status is None else {
                "http_status": self.health_status, "document": self.health},
            "counts": {"hosts": len(self.hosts), "certificates": len(self.certificates),
                       "certificates_by_status": dict(sorted(by_status.items()))},
            "findings": [finding.document() for finding in self.findings],
        }


def health_counts(document: Any) -> dict[str, int]:
    """``expiring``/``expired``/``failing`` counts found at the top of the health document
    or one or two levels down (``certificates``, ``counts``)."""
    found: dict[str, int] = {}
    places = [document]
    for _ in range(2):
        places += [value for place in places if isinstance(place, Mapping)
                   for key, value in place.items() if key in ("certificates", "counts")
                   and isinstance(value, Mapping)]
    for place in places:
        if not isinstance(place, Mapping):
            continue
        for name in HEALTH_COUNTS:
            value = place.get(name)
            if name not in found and isinstance(value, int) and not isinstance(value, bool):
                found[name] = value
    return found


def _judge_certificate(cert: Mapping[str, Any], warn_days: int,
                       critical_days: int) -> Finding | None:
    ident = cert.get("id")
    names = ", ".join(cert.get("domains") or []) or "?"
    label = f"certificate {ident} ({names})"
    days = cert.get("days_remaining")
    problem = cert.get("problem")
    if cert.get("status") == "expired":
        return Finding(CRITICAL, f"{label} expired at {cert.get('expires_at')}", ident)
    if isinstance(problem, Mapping):
        return Finding(CRITICAL, f"{label} is not served: {problem.get('message')}", ident)
    if isinstance(days, int) and days < critical_days:
        return Finding(CRITICAL, f"{label} expires in {days} day(s), at "
                       f"{cert.get('expires_at')}", ident)
    expiring = days < warn_days if isinstance(days, int) else cert.get("status") == "expiring"
    if expiring:
        return Finding(WARNING, f"{label} expires in {days} day(s), at "
                       f"{cert.get('expires_at')}", ident)
    if cert.get("status") == "not_yet_valid":
        return Finding(WARNING, f"{label} is not valid before {cert.get('not_before')}", ident)
    return None


def _judge_host(host: Mapping[str, Any]) -> list[Finding]:
    return [Finding(WARNING, f"automatic certificate for {state.get('name')} (host "
                    f"{host.get('id')}) failing: {state.get('last_error')}; next attempt "
                    f"{output.text(state.get('next_attempt_at'))}", host_id=host.get("id"))
            for state in host.get("issuance") or []
            if isinstance(state, Mapping) and state.get("last_error")]


def gather(client: AdminClient, warn_days: int = 30, critical_days: int = 7) -> Report:
    report = Report()
    health = client.request("GET", "/api/v1/health", authenticated=False)
    if health.status in (200, 503):
        report.health_status = health.status
        try:
            report.health = health.json()
        except CommandFailed:
            report.health = None
    if report.health_status == 503:
        report.findings.append(Finding(CRITICAL, "the server reports itself unhealthy "
                                       "(GET /api/v1/health answered 503)"))
    counts = health_counts(report.health)
    if counts.get("expired") or counts.get("failing"):
        report.findings.append(Finding(CRITICAL, f"health: {counts.get('expired', 0)} "
                                       f"expired, {counts.get('failing', 0)} failing"))
    elif counts.get("expiring"):
        report.findings.append(Finding(WARNING, f"health: {counts['expiring']} expiring"))
    report.certificates = client.call("GET", "/api/v1/certificates")
    report.hosts = client.call("GET", "/api/v1/hosts")
    for cert in report.certificates:
        finding = _judge_certificate(cert, warn_days, critical_days)
        if finding is not None:
            report.findings.append(finding)
    for host in report.hosts:
        report.findings.extend(_judge_host(host))
    report.findings.sort(key=lambda finding: -finding.level)
    return report


class _Thresholds(ClientCommand):
    optParameters = [
        ["warn-days", None, "30", "Warn when a certificate has fewer days left"],
        ["critical-days", None, "7", "Critical when a certificate has fewer days left"],
    ]

    def postOptions(self) -> None:
        for name in ("warn-days", "critical-days"):
            if not str(self[name]).isdigit():
                raise usage.UsageError(f"--{name} takes a number of days")
            self[name] = int(self[name])
        if not 0 <= self["critical-days"] <= self["warn-days"] <= 3650:
            raise usage.UsageError("need 0 <= --critical-days <= --warn-days <= 3650")

    def report(self, client: AdminClient) -> Report:
        return gather(client, self["warn-days"], self["critical-days"])


class Status(_Thresholds):
    synopsis = "[--json]"
    longdesc = ("Show the server's health: hosts, certificates by status, and everything "
                "failing or about to fail. Exits 0 when the server answered (use `aegis check` "
                "for an exit status by health).")

    def execute(self, client: AdminClient) -> int:
        report = self.report(client)
        if self.as_json:
            output.print_json(report.document())
            return 0
        summary = report.document()["counts"]
        health = ("not offered by this server" if report.health_status is None else
                  "healthy (200)" if report.health_status == 200 else "UNHEALTHY (503)")
        print(f"server:       {client.target.base_url}")
        print(f"health:       {health}")
        print(f"hosts:        {summary['hosts']}")
        statuses = ", ".join(f"{count} {name}" for name, count
                             in summary["certificates_by_status"].items())
        print(f"certificates: {summary['certificates']}" + (f" ({statuses})" if statuses else ""))
        print(f"overall:      {LEVEL_NAMES[report.level]}")
        report.print_findings()
        return 0


class Check(_Thresholds):
    synopsis = "[--warn-days N] [--critical-days N] [--json]"
    longdesc = ("Exit 0 when all is well, 1 on a warning (a certificate expiring within "
                "--warn-days, failing automatic issuance), 2 when critical (expired, within "
                "--critical-days, not served, server unhealthy or unreachable). One line for "
                "monitoring, the findings below it.")

    def execute(self, client: AdminClient) -> int:
        report = self.report(client)
        if self.as_json:
            output.print_json(report.document())
            return report.level
        counts = report.document()["counts"]
        print(f"{LEVEL_NAMES[report.level]}: {counts['certificates']} certificate(s), "
              f"{counts['hosts']} host(s), {len(report.findings)} finding(s)")
        report.print_findings()
        return report.level

    def failed(self, error: CommandFailed) -> int:
        """Not knowing is critical for monitoring: unreachable, token refused, no CA file."""
        if self.as_json:
            output.print_json({"status": "critical", "exit_code": CRITICAL,
                               "findings": [Finding(CRITICAL, str(error)).document()]})
        else:
            print(f"CRITICAL: {error}")
        return CRITICAL
