"""SNI selection order, as a pure in-memory table (no TLS): each step, each miss."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aegis.tls.selection import (
    STEP_AUTOCERT,
    STEP_DOMAIN_MATCH,
    STEP_FALLBACK,
    STEP_HOST_BINDING,
    MemoryCertificates,
    SelectionState,
    SelectionTable,
)
from tests.test_tls_support import NOW, PKI, RecordingIssuance, host

pki = PKI()
FALLBACK = pki.leaf("app.example.com", "le.example.com", "fallback.invalid", cert_id=None)
BOUND = pki.leaf("app.example.com")
CUSTOM = pki.leaf("app.example.com", "other.example.com")
WILD = pki.leaf("*.example.com", source="cloudflare_origin")
EXACT_OTHER = pki.leaf("exact.example.com")
LE = pki.leaf("le.example.com", source="letsencrypt")
EXPIRED = pki.leaf(
    "old.example.com", not_before=NOW - timedelta(days=90), not_after=NOW - timedelta(days=1)
)


def table(*hosts, certs=(CUSTOM, BOUND, WILD, EXACT_OTHER, LE, EXPIRED), on_demand=None):
    return SelectionTable(hosts, MemoryCertificates(certs), FALLBACK, on_demand)


def test_no_sni_gets_fallback_never_a_customer_certificate() -> None:
    chosen = table(host("app.example.com", ssl_cert_id=BOUND.id)).select(None, NOW)
    assert chosen.certificate is FALLBACK
    assert chosen.step == STEP_FALLBACK
    assert chosen.host is None


def test_step1_host_binding_wins_over_domain_match() -> None:
    chosen = table(host("app.example.com", ssl_cert_id=BOUND.id)).select("app.example.com", NOW)
    assert (chosen.certificate, chosen.step) == (BOUND, STEP_HOST_BINDING)


def test_binding_applies_to_aliases() -> None:
    h = host("main.example.net", "alias.example.net", ssl_cert_id=BOUND.id)
    assert table(h).select("alias.example.net", NOW).certificate is BOUND


def test_expired_binding_is_never_chosen() -> None:
    h = host("old.example.com", ssl_cert_id=EXPIRED.id)
    chosen = table(h).select("old.example.com", NOW)
    # *.example.com (valid, stored) covers it: step 2 instead of the expired binding.
    assert (chosen.certificate, chosen.step) == (WILD, STEP_DOMAIN_MATCH)


def test_mode_none_ignores_a_stale_binding() -> None:
    h = host("app.example.com", ssl_mode="none", ssl_cert_id=BOUND.id)
    assert table(h).select("app.example.com", NOW).certificate is CUSTOM


def test_step2_domain_match_without_any_host() -> None:
    chosen = table().select("other.example.com", NOW)
    assert (chosen.certificate, chosen.step, chosen.host) == (CUSTOM, STEP_DOMAIN_MATCH, None)


def test_step2_exact_before_wildcard() -> None:
    assert table().select("exact.example.com", NOW).certificate is EXACT_OTHER
    assert table().select("anything.example.com", NOW).certificate is WILD


def test_wildcard_covers_one_label_only() -> None:
    assert table().select("a.b.example.com", NOW).certificate is FALLBACK
    assert table().select("example.com", NOW).certificate is FALLBACK


def test_letsencrypt_certificate_is_not_a_stored_domain_match() -> None:
    # Step 2 looks only at custom/cloudflare_origin; an LE cert serves only LE hosts.
    assert table(certs=[LE]).select("le.example.com", NOW).certificate is FALLBACK


def test_step3_letsencrypt_host_gets_its_certificate() -> None:
    issuance = RecordingIssuance()
    h = host("le.example.com", ssl_mode="letsencrypt")
    chosen = table(h, certs=[LE], on_demand=issuance).select("le.example.com", NOW)
    assert (chosen.certificate, chosen.step) == (LE, STEP_AUTOCERT)
    assert issuance.wanted == []


def test_step3_missing_certificate_asks_for_one_and_falls_back() -> None:
    issuance = RecordingIssuance()
    h = host("le.example.com", ssl_mode="letsencrypt")
    chosen = table(h, certs=[], on_demand=issuance).select("le.example.com", NOW)
    assert (chosen.certificate, chosen.step) == (FALLBACK, STEP_FALLBACK)
    assert issuance.wanted == ["le.example.com"]


def test_looking_without_wanting_asks_for_nothing() -> None:
    """The admin API shows what a name is served (want=False): that must not start an
    order the way a handshake does."""
    issuance = RecordingIssuance()
    h = host("le.example.com", ssl_mode="letsencrypt")
    chosen = table(h, certs=[], on_demand=issuance).select("le.example.com", NOW, want=False)
    assert (chosen.certificate, chosen.step) == (FALLBACK, STEP_FALLBACK)
    assert issuance.wanted == []


def test_wildcard_host_never_triggers_issuance_for_arbitrary_names() -> None:
    issuance = RecordingIssuance()
    h = host("*.dyn.example.org", ssl_mode="letsencrypt")
    t = table(h, certs=[], on_demand=issuance)
    chosen = t.select("random.dyn.example.org", NOW)
    assert chosen.host == h
    assert chosen.certificate is FALLBACK
    assert issuance.wanted == []


def test_on_demand_failure_does_not_break_selection() -> None:
    class Broken:
        def certificate_wanted(self, hostname: str) -> None:
            raise RuntimeError("boom")

    h = host("le.example.com", ssl_mode="letsencrypt")
    chosen = table(h, certs=[], on_demand=Broken()).select("le.example.com", NOW)  # type: ignore[arg-type]
    assert chosen.certificate is FALLBACK


def test_unknown_name_gets_fallback() -> None:
    assert table(host("app.example.com")).select("nope.example.org", NOW).certificate is FALLBACK


def test_min_version_comes_from_the_matched_host() -> None:
    h = host("app.example.com", ssl_cert_id=BOUND.id, tls_min_version="1.3")
    t = table(h)
    assert t.select("app.example.com", NOW).min_version == "1.3"
    assert t.select("other.example.com", NOW).min_version == "1.2"
    assert t.select(None, NOW).min_version == "1.2"


def test_host_for_exact_then_wildcard() -> None:
    exact = host("a.example.org")
    wild = host("*.example.org")
    t = table(exact, wild)
    assert t.host_for("a.example.org") == exact
    assert t.host_for("b.example.org") == wild
    assert t.host_for("example.org") is None
    assert t.host_for(None) is None


def test_state_swaps_tables_and_old_tables_stay_consistent() -> None:
    certs = MemoryCertificates([CUSTOM, BOUND])
    state = SelectionState(certs, FALLBACK)
    before = state.current()
    assert before.select("app.example.com", NOW).certificate is CUSTOM
    state.set_hosts([host("app.example.com", ssl_cert_id=BOUND.id)])
    assert state.current().select("app.example.com", NOW).certificate is BOUND
    # A handshake that started on the old table still sees the old answer.
    assert before.select("app.example.com", NOW).certificate is CUSTOM
    new_fallback = pki.leaf("fallback2.invalid", cert_id=None)
    state.set_fallback(new_fallback)
    assert state.current().select(None, NOW).certificate is new_fallback


def test_certificates_changed_re_resolves_bindings() -> None:
    replacement = pki.leaf("app.example.com", cert_id=BOUND.id)
    holder = [BOUND]

    class Registry:
        def by_id(self, cert_id: int):
            return next((c for c in holder if c.id == cert_id), None)

        def lookup(self, name, now, sources):
            return None

    state = SelectionState(
        Registry(), FALLBACK, hosts=[host("app.example.com", ssl_cert_id=BOUND.id)]
    )
    assert state.current().select("app.example.com", NOW).certificate is BOUND
    holder[:] = [replacement]
    state.certificates_changed()
    assert state.current().select("app.example.com", NOW).certificate is replacement


@pytest.mark.parametrize("moment", [NOW - timedelta(days=400), NOW + timedelta(days=4000)])
def test_certificates_outside_validity_are_skipped(moment) -> None:
    dated = pki.leaf(
        "dated.example.org", not_before=NOW - timedelta(days=30), not_after=NOW + timedelta(days=60)
    )
    h = host("dated.example.org", ssl_cert_id=dated.id)
    t = table(h, certs=[dated])
    assert t.select("dated.example.org", NOW).certificate is dated
    assert t.select("dated.example.org", moment).certificate is FALLBACK


def test_a_misbehaving_lookup_never_serves_wrong_source_or_expired() -> None:
    class Sloppy:
        """Answers every question with one certificate, whatever was asked."""

        def __init__(self, answer):
            self.answer = answer

        def by_id(self, cert_id):
            return None

        def lookup(self, name, now, sources):
            if self.answer is None:
                raise RuntimeError("index broken")
            return self.answer

    for answer in (LE, EXPIRED, None):
        t = SelectionTable([], Sloppy(answer), FALLBACK)
        assert t.select("le.example.com", NOW).certificate is FALLBACK
