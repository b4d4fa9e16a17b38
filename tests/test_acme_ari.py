"""ACME Renewal Information (RFC 9773): identifiers on the RFC's own examples, the answer's
rules, and the lifecycle engine following a CA's window on a Clock (the fake CA of
tests/test_acme_fakeca.py with renewalInfo on; the real flow against Pebble through the
ARI front is in tests/test_acme_front.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aegis.certs.lifecycle.advice import RETRY_AFTER_FAILURE
from aegis.sources.acme import ari
from tests.test_acme_fakeca import Scripted
from tests.test_acme_manager import World

RFC_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
RFC_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_rfc_9773_example_identifier() -> None:
    """§4.1: keyIdentifier 69:88:5B:..., serial 00:87:65:43:21."""
    assert ari.serial_octets(0x87654321) == bytes.fromhex("0087654321")
    assert ari.certificate_id(RFC_AKI, 0x87654321) == RFC_ID


def test_identifier_of_a_certificate_with_the_rfc_values() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(0x87654321)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.AuthorityKeyIdentifier(RFC_AKI, None, None), critical=False)
        .sign(key, hashes.SHA256())
    )
    assert ari.certificate_id_of(cert) == RFC_ID
    no_aki = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(5)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(ari.RenewalInfoError):
        ari.certificate_id_of(no_aki)


def test_serial_without_a_high_bit_has_no_leading_zero() -> None:
    assert ari.serial_octets(0x7F) == b"\x7f"
    assert ari.serial_octets(0x80) == b"\x00\x80"
    assert ari.serial_octets(0x0102) == b"\x01\x02"


def test_rfc_9773_example_answer() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    advice = ari.parse_renewal_info({
        "suggestedWindow": {"start": "2025-01-02T04:00:00Z", "end": "2025-01-03T04:00:00Z"},
        "explanationURL": "https://acme.example.com/docs/ari",
    }, now, 21600)
    assert advice.window == (datetime(2025, 1, 2, 4, tzinfo=UTC),
                             datetime(2025, 1, 3, 4, tzinfo=UTC))
    assert advice.next_check == now + timedelta(hours=6)
    assert advice.explanation_url == "https://acme.example.com/docs/ari"


@pytest.mark.parametrize("document", [
    {},
    {"suggestedWindow": "soon"},
    {"suggestedWindow": {"start": "2025-01-03T04:00:00Z", "end": "2025-01-02T04:00:00Z"}},
    {"suggestedWindow": {"start": "yesterday", "end": "2025-01-02T04:00:00Z"}},
    {"suggestedWindow": {"start": "2025-01-02T04:00:00", "end": "2025-01-03T04:00:00"}},
    {"suggestedWindow": {"start": 1, "end": 2}},
    [],
])
def test_unusable_answers_are_refused(document: Any) -> None:
    with pytest.raises(ari.RenewalInfoError):
        ari.parse_renewal_info(document, datetime.now(UTC), None)


def test_retry_after_is_kept_between_a_minute_and_a_day() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert ari.next_check(now, 1) == now + ari.MIN_CHECK_INTERVAL
    assert ari.next_check(now, 5 * 86400) == now + ari.MAX_CHECK_INTERVAL
    assert ari.next_check(now, None) == now + ari.DEFAULT_CHECK_INTERVAL


# the engine and the ACME issuer against the fake CA, on a Clock


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _now(world: World) -> datetime:
    return datetime.fromtimestamp(world.rig.clock.seconds(), UTC).replace(microsecond=0)


def _window(world: World, start_days: float, end_days: float) -> tuple[datetime, datetime]:
    now = datetime.fromtimestamp(world.rig.clock.seconds(), UTC).replace(microsecond=0)
    start, end = now + timedelta(days=start_days), now + timedelta(days=end_days)
    world.rig.ca.ari_window = (_iso(start), _iso(end))
    return start, end


def _ari_lookups(world: World) -> int:
    return len(world.rig.ca.requests("/renewal-info/"))


def _issued(world: World, name: str = "a.example.com") -> Any:
    world.add_host(name)
    engine = world.boot()
    world.settle()
    state = engine.state(name)
    assert state is not None and state.status == "valid"
    return state


def test_renewal_time_is_a_point_of_the_suggested_window() -> None:
    world = World()  # jitter 0.5: the middle of the window
    start, end = _window(world, 40, 42)
    state = _issued(world)
    assert state.renews_at == start + (end - start) / 2  # the lifetime rule says day 60
    assert _ari_lookups(world) == 1
    stored = world.state("a.example.com")
    assert stored.renews_at == state.renews_at  # persisted


def test_without_renewal_info_the_lifetime_rule_holds() -> None:
    world = World()
    state = _issued(world)
    (cert,) = world.certificates()
    assert state.renews_at == cert.not_after - (cert.not_after - cert.not_before) / 3
    assert _ari_lookups(world) == 0
    assert "replaces" not in world.rig.ca.new_orders[0]


def test_a_moved_window_moves_the_renewal_and_replaces_is_sent() -> None:
    world = World()
    world.rig.ca.ari_retry_after = "3600"
    _window(world, 40, 42)
    _issued(world)
    (old,) = world.certificates()
    # The CA must revoke: it moves the window of this certificate into the past (a new
    # certificate gets the window in the future). Seen at the next check.
    old_id = ari.certificate_id_of_pem(old.chain_pem)
    world.rig.ca.ari_windows[old_id] = _iso(_now(world) - timedelta(hours=1)), _iso(_now(world))
    world.rig.clock.advance(3600)
    world.settle()
    assert _ari_lookups(world) >= 2
    (new,) = world.certificates()
    assert new.id == old.id and new.chain_pem != old.chain_pem  # renewed in place
    assert world.rig.ca.orders_created == 2
    assert world.rig.ca.new_orders[1]["replaces"] == old_id
    assert "replaces" not in world.rig.ca.new_orders[0]


def test_a_window_that_ended_before_the_certificate_began_is_ignored() -> None:
    """Followed, it would renew every fresh certificate again at once."""
    world = World()
    _window(world, -3, -2)
    state = _issued(world)
    (cert,) = world.certificates()
    assert state.renews_at == cert.not_after - (cert.not_after - cert.not_before) / 3
    world.rig.clock.advance(86400)
    world.settle(1)
    assert _ari_lookups(world) == 2 and world.rig.ca.orders_created == 1


def test_the_same_window_keeps_the_drawn_time_and_is_asked_at_least_daily() -> None:
    world = World()
    world.rig.ca.ari_retry_after = str(5 * 86400)  # longer than a day: asked daily anyway
    start, end = _window(world, 40, 42)
    first = _issued(world)
    draws = iter([0.1, 0.9])
    assert world.manager is not None
    world.manager.advice._rand = lambda: next(draws)
    for _ in range(3):
        world.rig.clock.advance(86400)
        world.settle(1)
    assert _ari_lookups(world) == 4
    assert world.state("a.example.com").renews_at == first.renews_at  # no redraw
    start, end = _window(world, 30, 32)  # moved: drawn again, inside the new window
    world.rig.clock.advance(86400)
    world.settle(1)
    assert world.state("a.example.com").renews_at == start + (end - start) * 0.1


def test_a_replaces_the_ca_refuses_falls_back_to_a_plain_order() -> None:
    world = World()
    _window(world, 40, 42)
    _issued(world)
    cert = world.certificates()[0]
    world.rig.ca.ari_windows[ari.certificate_id_of_pem(cert.chain_pem)] = (
        _iso(_now(world) - timedelta(hours=1)), _iso(_now(world)))
    world.rig.ca.script.append(Scripted("/order", 409, "alreadyReplaced"))
    world.rig.clock.advance(6 * 3600)
    world.settle()
    assert world.state("a.example.com").status == "valid"
    assert "replaces" not in world.rig.ca.new_orders[-1]
    assert world.rig.ca.orders_created == 2


def test_a_failed_lookup_keeps_the_time_and_asks_again_later() -> None:
    world = World()
    world.rig.ca.ari_retry_after = "60"
    _window(world, 40, 42)
    first = _issued(world)
    world.rig.ca.script.append(Scripted("/renewal-info/", 404, "malformed"))
    world.rig.clock.advance(60)
    world.settle(1)
    assert _ari_lookups(world) == 2
    assert world.state("a.example.com").renews_at == first.renews_at
    world.rig.clock.advance(RETRY_AFTER_FAILURE.total_seconds() - 30)
    world.settle(1)
    assert _ari_lookups(world) == 2  # not before the failure's wait
    world.rig.clock.advance(60)
    world.settle(1)
    assert _ari_lookups(world) == 3
