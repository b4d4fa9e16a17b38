"""ACME profiles: the host's ``acme_profile`` (else ``AEGIS_ACME_PROFILE``) in every order of
its names, renewals included; CAs without profiles get none; an unlisted one fails the
attempt by name. The engine and the ACME issuer against the fake CA on a Clock; the hosts
API side through ``host_request``; Pebble through the front in tests/test_acme_front.py."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred

from aegis.admin._errors import ApiError
from aegis.hosts.validate import host_request
from aegis.sources.acme import build_acme
from aegis.sources.acme.profiles import (
    PROFILE_KEY,
    ProfileError,
    check_offered,
    offered_profiles,
    parse_profile,
    profile_for,
)
from aegis.store.records import HostFields
from aegis.testing.acme_front import PROFILES
from tests.test_acme_manager import World


def test_profile_names() -> None:
    assert parse_profile("shortlived") == "shortlived"
    for bad in ("", "Short", "six days", "x" * 65, "-lead", "ümlaut"):
        with pytest.raises(ProfileError):
            parse_profile(bad)


def test_offered_profiles_from_the_directory() -> None:
    assert offered_profiles({"meta": {"profiles": {"classic": "90 days"}}}) == {
        "classic": "90 days"}
    assert offered_profiles({"meta": {}}) is None
    assert offered_profiles({"meta": {"profiles": {}}}) is None
    assert offered_profiles({"meta": "nonsense"}) is None
    assert offered_profiles(None) is None
    check_offered("classic", None)  # a CA without profiles: nothing to refuse
    with pytest.raises(ProfileError, match="offers classic, shortlived"):
        check_offered("tlsserver", {"shortlived": "", "classic": ""})


def _profile_lookup(world: World, default: str = "") -> Any:
    store = world.rig.store
    return lambda names: store.transact(
        lambda txn: profile_for(txn.list_hosts(), names, default))


def _add(world: World, domain: str, profile: str | None = None) -> None:
    extra = {} if profile is None else {PROFILE_KEY: profile}
    fields = HostFields(domain=domain, upstream="http://127.0.0.1:1",
                        ssl_mode="letsencrypt", extra=extra)
    world.rig.store.transact_blocking(lambda t: t.add_host(fields))


def _profiles_ordered(world: World) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {}
    for order in world.rig.ca.new_orders:
        seen.setdefault(order["identifiers"][0]["value"], []).append(order.get("profile"))
    return seen


def test_host_profile_and_default_are_ordered_and_kept_on_renewal() -> None:
    world = World()
    world.rig.ca.profiles = dict(PROFILES)
    world.profile_for = _profile_lookup(world, default="tlsserver")
    _add(world, "short.example.com", "shortlived")
    _add(world, "plain.example.com")
    engine = world.boot()
    world.settle()
    state = engine.state("short.example.com")
    assert state is not None and state.renews_at is not None
    world.rig.clock.advance((state.renews_at - engine.now()).total_seconds() + 1)
    world.settle()
    assert _profiles_ordered(world)["short.example.com"] == ["shortlived", "shortlived"]
    assert _profiles_ordered(world)["plain.example.com"][0] == "tlsserver"


def test_a_ca_without_profiles_gets_no_profile_field() -> None:
    world = World()
    world.profile_for = _profile_lookup(world)
    _add(world, "short.example.com", "shortlived")
    engine = world.boot()
    world.settle()
    assert engine.state("short.example.com").status == "valid"  # type: ignore[union-attr]
    assert "profile" not in world.rig.ca.new_orders[0]


def test_a_profile_the_ca_does_not_list_fails_the_attempt_by_name() -> None:
    world = World()
    world.rig.ca.profiles = {"classic": "90 days"}
    world.profile_for = _profile_lookup(world)
    _add(world, "short.example.com", "shortlived")
    engine = world.boot()
    world.settle()
    state = engine.state("short.example.com")
    assert state is not None and state.status == "failed"
    assert "does not offer the profile 'shortlived'" in (state.last_error or "")
    assert world.rig.ca.orders_created == 0


def test_the_hosts_api_takes_validates_and_clears_acme_profile() -> None:
    body = {"domain": "a.example.com", "upstream": "http://127.0.0.1:1",
            "ssl_mode": "letsencrypt", "acme_profile": "shortlived"}
    created = host_request(body).fields
    assert created.extra[PROFILE_KEY] == "shortlived"
    kept = host_request({"force_https": True}, created).fields
    assert kept.extra[PROFILE_KEY] == "shortlived"  # PATCH keeps it
    cleared = host_request({"acme_profile": None}, created).fields
    assert PROFILE_KEY not in cleared.extra
    with pytest.raises(ApiError) as refused:
        host_request({**body, "acme_profile": "Six Days"})
    assert refused.value.status == 400 and "acme_profile" in str(refused.value.body)


def test_build_acme_takes_the_default_profile() -> None:
    world = World()
    parts = build_acme(world.rig.clock, world.rig.store, world.rig.wrapper, "https://ca.test/dir",
                       http=world.rig.stub, clock=world.rig.clock, default_profile="shortlived")
    _add(world, "x.example.com")
    found = world.drive(parts.issuer._profile_for(["x.example.com"]))  # type: ignore[misc]
    assert found == "shortlived"


def test_the_hosts_api_refuses_a_profile_the_ca_does_not_list() -> None:
    from types import SimpleNamespace

    from aegis.admin._hosts import _check_profile

    world = World()
    world.rig.ca.profiles = {"classic": "90 days", "shortlived": "6 days"}
    issuer = world.rig.issuer
    ctx: Any = SimpleNamespace(lifecycle=SimpleNamespace(issuer_of=lambda source: issuer))
    fields = host_request({"domain": "a.example.com", "upstream": "http://127.0.0.1:1",
                           "ssl_mode": "letsencrypt", "acme_profile": "tlsserver"}).fields
    _check_profile(ctx, fields)  # the directory not read yet: nothing known, accepted
    world.drive(Deferred.fromCoroutine(world.rig.client.directory()))
    with pytest.raises(ApiError) as refused:
        _check_profile(ctx, fields)
    assert refused.value.status == 422 and "classic, shortlived" in str(refused.value.body)
    _check_profile(ctx, host_request({"domain": "a.example.com", "upstream": "http://127.0.0.1:1",
                                      "acme_profile": "shortlived"}).fields)
