"""HTTP/2 frames into the proxy front (h2's state machine plus ours), in memory."""

from __future__ import annotations

import contextlib

import h2.config
import h2.connection
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.targets import h2_frames, h2_raw


@given(st.binary(max_size=400))
def test_frames_never_crash_or_500(data: bytes) -> None:
    h2_frames(data)


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    """Real HPACK-encoded requests with hostile header lists, from an h2 client."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False))
    client.initiate_connection()
    client.data_to_send()
    pseudo = draw(st.lists(st.sampled_from([
        (":method", "GET"), (":method", "CONNECT"), (":path", "/"), (":path", ""),
        (":scheme", "https"), (":authority", "app.test"), (":authority", "a b"),
        (":status", "200"), ("host", "other.test"), ("connection", "close"),
        ("content-length", "5"), ("content-length", "x"), ("te", "trailers"),
        ("transfer-encoding", "chunked"), ("Upper", "x"), ("x", "a\r\nb"),
    ]), min_size=1, max_size=8))
    client.send_headers(1, pseudo, end_stream=draw(st.booleans()))
    if draw(st.booleans()):
        data = draw(st.binary(max_size=30))
        with contextlib.suppress(Exception):  # the client's own state machine may refuse
            client.send_data(1, data, end_stream=True)
    return bytes(client.data_to_send())[9:]  # without the client's SETTINGS frame


@given(header_blocks(), st.integers(0, 255))
def test_hostile_header_lists_never_crash_or_500(frames: bytes, cut: int) -> None:
    h2_raw(bytes([cut]) + frames)


def test_the_harness_reaches_the_h2_front() -> None:
    from twisted.internet.testing import MemoryReactorClock

    from aegis.proxy._engine import ProxyEngine
    from aegis.proxy._http1 import Http1Connection
    from aegis.proxy.routing import ProxyLimits
    from tests.fuzz.targets import H2Transport, _LocalRouter

    proto = Http1Connection(ProxyEngine(_LocalRouter(), MemoryReactorClock(), ProxyLimits()))
    transport = H2Transport()
    proto.makeConnection(transport)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                            (":authority", "app.test")], end_stream=True)
    proto.dataReceived(client.data_to_send())
    events = client.receive_data(transport.value())
    statuses = [dict(e.headers).get(b":status") for e in events if hasattr(e, "headers")]
    assert statuses == [b"200"]
