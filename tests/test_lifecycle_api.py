"""The lifecycle as the admin API shows and controls it (issue 14, faults 1, 6, 8, 9):
which hosts a certificate serves and how, the delete guard over every selection step and
``?force=true``, ``lifecycle``/``retired`` on the certificate object, the truthful replace
refusal, ``GET /api/v1/issuance`` and the host's retry-now. The real engine, store, registry
and SNI selection table in memory (tests/lifecycle_rig.py); time on a Clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trustme

from aegis.admin._certificates import CERTIFICATE_SCHEMA, IN_USE_SCHEMA
from aegis.admin._lifecycle import ISSUANCE_SCHEMA
from aegis.admin._openapi import document
from aegis.certs.lifecycle import RETRY_INTERVALS
from aegis.localca import LocalAuthority
from aegis.sources.cloudflare import SOURCE as CLOUDFLARE_ORIGIN
from aegis.store._runner import immediate_runner
from aegis.store.memory import MemoryStore
from aegis.store.sqlite import SQLiteStore
from tests.helpers import certificate_fields
from tests.lifecycle_rig import AUTOMATIC, LifecycleAPI, Rig
from tests.test_certs_helpers import trustme_pair

pytest_plugins = ["tests.test_certs_api_harness"]


@pytest.fixture(params=["sqlite", "memory"])
def rig(request: pytest.FixtureRequest, tmp_path: Path, authority: LocalAuthority,
        ca: trustme.CA) -> Iterator[Rig]:
    store: Any = (SQLiteStore.open(tmp_path / "aegis.db", immediate_runner)
                  if request.param == "sqlite" else MemoryStore())
    built = Rig(store, authority, ca)
    yield built
    built.engine.stopService()
    store.close()


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` refusing members it does not describe: the document says all there is."""
    return {**schema, "additionalProperties": False}


def upload(rig: Rig, ca: trustme.CA, *names: str) -> dict[str, Any]:
    pair = trustme_pair(ca, *names)
    code, body = rig.call("POST", "/api/v1/certificates",
                          {"cert_pem": pair.cert_pem, "key_pem": pair.key_pem})
    assert code == 201, body
    return dict(body)


def automatic_id(rig: Rig, name: str) -> int:
    step, cert_id = rig.served(name)
    assert step == "autocert" and cert_id is not None, (step, cert_id)
    return cert_id


# fault 8: certificate.hosts lists every host it serves, and how -------------------------


def test_hosts_lists_every_host_by_its_selection_step(rig: Rig, ca: trustme.CA) -> None:
    shop = upload(rig, ca, "shop.example.com")
    bound = upload(rig, ca, "bound.example.com")
    covered = rig.add_host("shop.example.com", ssl_mode="letsencrypt")
    binder = rig.add_host("bound.example.com", ssl_mode="custom", ssl_cert_id=bound["id"])
    auto = rig.add_host("le.example.com", aliases=("www.le.example.com",),
                        ssl_mode="letsencrypt")
    le_id, www_id = automatic_id(rig, "le.example.com"), automatic_id(rig, "www.le.example.com")
    assert le_id != www_id  # one certificate per name

    def use(host: Any, step: str, *names: str) -> dict[str, Any]:
        return {"id": host.id, "domain": host.domain, "names": list(names), "step": step}

    expected = {
        shop["id"]: [use(covered, "domain_match", "shop.example.com")],
        bound["id"]: [use(binder, "host_binding", "bound.example.com")],
        le_id: [use(auto, "autocert", "le.example.com")],
        www_id: [use(auto, "autocert", "www.le.example.com")],
    }
    code, listed = rig.call("GET", "/api/v1/certificates")
    assert code == 200
    assert {c["id"]: c["hosts"] for c in listed} == expected
    for cert_id, hosts in expected.items():
        shown = rig.certificate(cert_id)
        assert shown["hosts"] == hosts
        jsonschema.validate(shown, strict(CERTIFICATE_SCHEMA))
    for each in listed:
        jsonschema.validate(each, strict(CERTIFICATE_SCHEMA))


def test_a_binding_counts_while_its_certificate_is_not_chosen(rig: Rig, ca: trustme.CA) -> None:
    expired = replace(certificate_fields(("app.example.com",)), not_after=rig.now()
                      - timedelta(days=1), not_before=rig.now() - timedelta(days=91))
    stale = rig.store.transact_blocking(lambda txn: txn.add_certificate(expired))
    host = rig.add_host("app.example.com", ssl_mode="custom", ssl_cert_id=stale.id)
    fresh = upload(rig, ca, "app.example.com")
    assert rig.served("app.example.com") == ("domain_match", fresh["id"])
    assert rig.certificate(stale.id)["hosts"] == [
        {"id": host.id, "domain": "app.example.com", "names": ["app.example.com"],
         "step": "host_binding"}]
    assert rig.certificate(fresh["id"])["hosts"][0]["step"] == "domain_match"
    code, body = rig.call("DELETE", f"/api/v1/certificates/{stale.id}?force=true")
    assert code == 409 and body["error"]["hosts"] == [
        {"id": host.id, "domain": "app.example.com", "step": "host_binding"}]


# fault 1: the delete guard sees every step; force deletes and orders anew ---------------


def test_deleting_a_hosts_automatic_certificate_is_refused_then_forced(rig: Rig) -> None:
    host = rig.add_host("le.example.com", ssl_mode="letsencrypt")
    first = automatic_id(rig, "le.example.com")
    assert rig.issuer.calls == [("le.example.com",)]

    code, body = rig.call("DELETE", f"/api/v1/certificates/{first}")
    assert code == 409, body
    jsonschema.validate(body, IN_USE_SCHEMA)
    error = body["error"]
    assert error["code"] == "certificate_in_use"
    assert error["hosts"] == [{"id": host.id, "domain": "le.example.com", "step": "autocert"}]
    assert f"le.example.com (host {host.id}) by autocert" in error["message"]
    assert "force=true" in error["message"]
    assert rig.certificate(first)["id"] == first  # still there, still served
    assert rig.served("le.example.com") == ("autocert", first)

    for query in ("force=yes", "force=1", "force=", "force=true&force=true"):
        code, body = rig.call("DELETE", f"/api/v1/certificates/{first}?{query}")
        assert code == 400 and body["error"]["field"] == "force", query

    code, body = rig.call("DELETE", f"/api/v1/certificates/{first}?force=true")
    assert code == 204, body
    code, _ = rig.call("GET", f"/api/v1/certificates/{first}")
    assert code == 404
    deleted = rig.named("cert_deleted")
    assert [dict(e.fields) for e in deleted] == [{
        "certificate_id": first, "source": AUTOMATIC.name, "names": ["le.example.com"],
        "forced": True,
        "served_hosts": [{"id": host.id, "domain": "le.example.com", "step": "autocert"}],
    }]
    assert [e.fields["reason"] for e in rig.named("cert_reset")] == ["deleted"]
    # A new order started at once (no clock move) and its certificate is served.
    assert rig.issuer.calls == [("le.example.com",)] * 2
    second = automatic_id(rig, "le.example.com")
    assert second != first
    state = rig.engine.state("le.example.com")
    assert state is not None and state.status == "valid" and state.certificate_id == second


def test_a_domain_match_serving_a_host_is_refused_then_forced(rig: Rig, ca: trustme.CA) -> None:
    shop = upload(rig, ca, "shop.example.com")
    host = rig.add_host("shop.example.com", ssl_mode="letsencrypt")
    assert rig.issuer.calls == []  # covered by the upload (the spec's order)
    code, body = rig.call("DELETE", f"/api/v1/certificates/{shop['id']}?force=false")
    assert code == 409
    assert body["error"]["hosts"] == [
        {"id": host.id, "domain": "shop.example.com", "step": "domain_match"}]
    assert "by domain_match" in body["error"]["message"]
    code, _ = rig.call("DELETE", f"/api/v1/certificates/{shop['id']}?force=true")
    assert code == 204
    assert rig.issuer.calls == [("shop.example.com",)]  # the name is Aegis's to order now
    assert rig.served("shop.example.com")[0] == "autocert"


def test_a_bound_certificate_is_refused_even_with_force(rig: Rig, ca: trustme.CA) -> None:
    bound = upload(rig, ca, "bound.example.com")
    host = rig.add_host("bound.example.com", ssl_mode="custom", ssl_cert_id=bound["id"])
    for path in ("", "?force=true"):
        code, body = rig.call("DELETE", f"/api/v1/certificates/{bound['id']}{path}")
        assert code == 409, path
        assert body["error"]["hosts"] == [
            {"id": host.id, "domain": "bound.example.com", "step": "host_binding"}]
        assert "force does not remove a binding" in body["error"]["message"]
    assert rig.certificate(bound["id"])["hosts"][0]["step"] == "host_binding"
    assert rig.named("cert_deleted") == []


def test_an_unused_certificate_is_deleted_without_force(rig: Rig, ca: trustme.CA) -> None:
    spare = upload(rig, ca, "spare.example.com")
    code, _ = rig.call("DELETE", f"/api/v1/certificates/{spare['id']}")
    assert code == 204
    assert [e.fields["forced"] for e in rig.named("cert_deleted")] == [False]
    assert rig.named("cert_reset") == []  # nothing managed: nothing to reset


# retirement shown; the lifecycle of a certificate ----------------------------------------


def test_lifecycle_and_retired_on_the_certificate_object(rig: Rig, ca: trustme.CA) -> None:
    custom = upload(rig, ca, "shop.example.com")
    assert custom["lifecycle"] is None and custom["retired"] is False
    host = rig.add_host("le.example.com", ssl_mode="letsencrypt")
    cert_id = automatic_id(rig, "le.example.com")
    shown = rig.certificate(cert_id)
    state = rig.engine.state("le.example.com")
    assert state is not None and state.renews_at is not None
    assert shown["lifecycle"] == {
        "key": "le.example.com", "status": "valid",
        "renews_at": state.renews_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "next_attempt_at": None, "last_error": None,
    }
    assert shown["retired"] is False and shown["auto_renew"] is True

    # The host leaves letsencrypt: nobody wants the certificate any more.
    rig.store.transact_blocking(
        lambda txn: txn.replace_host(host.id, replace(host.fields(), ssl_mode="none")))
    rig.changed()
    shown = rig.certificate(cert_id)
    assert shown["retired"] is True and shown["lifecycle"]["status"] == "retired"
    assert shown["auto_renew"] is False and shown["hosts"] == []
    jsonschema.validate(shown, strict(CERTIFICATE_SCHEMA))
    code, _ = rig.call("DELETE", f"/api/v1/certificates/{cert_id}")
    assert code == 204  # serves nobody: no force needed


# fault 9: the replace refusal tells the truth --------------------------------------------


def test_replace_refusal_says_how_each_source_is_renewed(rig: Rig, ca: trustme.CA) -> None:
    pair = trustme_pair(ca, "app.example.com")

    def refusal(source: str, auto_renew: bool) -> str:
        fields = replace(certificate_fields(("app.example.com",), source=source),
                         auto_renew=auto_renew)
        record = rig.store.transact_blocking(lambda txn: txn.add_certificate(fields))
        code, body = rig.call("PUT", f"/api/v1/certificates/{record.id}",
                              {"cert_pem": pair.cert_pem, "key_pem": pair.key_pem})
        assert code == 409 and body["error"]["code"] == "not_replaceable"
        return str(body["error"]["message"])

    origin = refusal(CLOUDFLARE_ORIGIN, False)
    assert "Aegis does not renew it automatically" in origin
    assert "renewed by Aegis" not in origin
    assert "POST /api/v1/certificates/cloudflare-origin" in origin
    assert "renewed by Aegis automatically" in refusal(AUTOMATIC.name, True)
    retired = refusal(AUTOMATIC.name, False)  # what retirement leaves behind
    assert "no longer renewed" in retired and "renewed by Aegis" not in retired


# fault 6: the operator sees every managed name and can retry now -------------------------


def test_issuance_shows_failures_and_retry_starts_at_once(rig: Rig) -> None:
    rig.issuer.failing = True
    host = rig.add_host("down.example.com", ssl_mode="letsencrypt")
    rig.clock.advance(RETRY_INTERVALS[0])  # the second attempt, after the first backoff
    assert len(rig.issuer.calls) == 2
    code, listed = rig.call("GET", "/api/v1/issuance")
    assert code == 200 and len(listed) == 1
    entry = listed[0]
    jsonschema.validate(entry, strict(ISSUANCE_SCHEMA))
    assert entry["name"] == "down.example.com" and entry["status"] == "failed"
    assert entry["failures"] == 2 and "connection refused" in entry["last_error"]
    assert entry["issuer"] == rig.issuer.identity and entry["source"] == AUTOMATIC.name
    assert entry["attempt_started_at"] is None and entry["in_flight"] is False
    assert entry["next_attempt_at"] > entry["last_attempt_at"]
    code, shown = rig.call("GET", f"/api/v1/hosts/{host.id}")
    assert shown["issuance"] == listed

    # The operator fixed DNS: retry now, no clock move; the attempt runs while we look.
    rig.issuer.failing, rig.issuer.holding = False, True
    code, body = rig.call("POST", f"/api/v1/hosts/{host.id}/issuance/retry")
    assert code == 200, body
    assert len(rig.issuer.calls) == 3
    (running,) = body
    assert running["status"] == "obtaining" and running["in_flight"] is True
    assert running["attempt_started_at"] == running["last_attempt_at"] is not None
    assert running["failures"] == 0 and running["next_attempt_at"] is None
    assert [e.fields["reason"] for e in rig.named("cert_reset")] == ["retry"]
    rig.issuer.release()
    code, (done,) = rig.call("GET", "/api/v1/issuance")
    assert done["status"] == "valid" and done["last_error"] is None
    assert done["attempt_started_at"] is None and done["certificate_id"] is not None
    assert rig.served("down.example.com") == ("autocert", done["certificate_id"])


def test_retry_refusals(rig: Rig, ca: trustme.CA) -> None:
    code, body = rig.call("POST", "/api/v1/hosts/99/issuance/retry")
    assert code == 404 and body["error"]["code"] == "not_found"
    bound = upload(rig, ca, "bound.example.com")
    for mode, extra in (("custom", {"ssl_cert_id": bound["id"]}), ("none", {})):
        host = rig.add_host(f"{mode}.example.com", ssl_mode=mode, **extra)
        code, body = rig.call("POST", f"/api/v1/hosts/{host.id}/issuance/retry")
        assert code == 409 and body["error"]["code"] == "not_automatic", mode
        assert body["error"]["field"] == "ssl_mode"
    assert rig.issuer.calls == []


# the document describes what is returned -------------------------------------------------


def test_openapi_describes_force_and_the_in_use_body() -> None:
    paths = document(LifecycleAPI.operations)["paths"]
    delete = paths["/api/v1/certificates/{cert_id}"]["delete"]
    assert {"name": "force", "in": "query", "required": False,
            "description": delete["parameters"][1]["description"],
            "schema": {"type": "boolean"}} in delete["parameters"]
    in_use = delete["responses"]["409"]["content"]["application/json"]["schema"]
    assert in_use == IN_USE_SCHEMA
    listed = paths["/api/v1/certificates"]["get"]["responses"]["200"]
    item = listed["content"]["application/json"]["schema"]["items"]["properties"]
    assert {"hosts", "lifecycle", "retired"} <= set(item)
    assert paths["/api/v1/issuance"]["get"]
    assert paths["/api/v1/hosts/{host_id}/issuance/retry"]["post"]


def test_a_new_automatic_host_shows_its_order_not_covered(rig: Rig, ca: trustme.CA) -> None:
    """The answer to the create already reflects the engine's demand: a new letsencrypt host
    is being (here: has been) obtained, and only a name an upload serves is ``covered``."""
    upload(rig, ca, "shop.example.com")
    code, host = rig.call("POST", "/api/v1/hosts", {
        "domain": "new.example.com", "aliases": ["shop.example.com"],
        "upstream": "http://127.0.0.1:9", "ssl_mode": "letsencrypt"})
    assert code == 201, host
    new, shop = host["issuance"]
    assert new["name"] == "new.example.com" and new["status"] == "valid", new
    assert new["certificate_id"] == automatic_id(rig, "new.example.com")
    assert shop["name"] == "shop.example.com" and shop["status"] == "covered"
    assert host["serving_certificate"]["step"] == "autocert"
    assert rig.issuer.calls == [("new.example.com",)]


def test_renew_a_certificate_now(rig: Rig, ca: trustme.CA) -> None:
    """``POST /api/v1/certificates/{id}/renew`` (what ``aegis certs renew`` calls): an
    automatic certificate is renewed at once, in place; an upload is refused in words."""
    host = rig.add_host("renew.example.com", ssl_mode="letsencrypt")
    code, (state,) = rig.call("GET", "/api/v1/issuance")
    assert state["status"] == "valid", state
    cert_id = state["certificate_id"]
    calls = len(rig.issuer.calls)
    code, body = rig.call("POST", f"/api/v1/certificates/{cert_id}/renew")
    assert code == 200, body
    jsonschema.validate(body, strict(ISSUANCE_SCHEMA))
    assert len(rig.issuer.calls) == calls + 1
    assert body["status"] == "valid" and body["certificate_id"] == cert_id
    assert rig.served(host.domain) == ("autocert", cert_id)
    uploaded = upload(rig, ca, "manual.example.com")
    code, body = rig.call("POST", f"/api/v1/certificates/{uploaded['id']}/renew")
    assert code == 409 and body["error"]["code"] == "not_automatic", body
    assert "PUT /api/v1/certificates" in body["error"]["message"]
    code, body = rig.call("POST", "/api/v1/certificates/999/renew")
    assert code == 404
