"""HTTP/1.1 heads and chunked bodies into the proxy front, in memory (ACCEPTANCE 25)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.targets import http1, proxy_connection

methods = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"CONNECT", b"G\x00T", b""])
targets = st.sampled_from([b"/", b"/a?b=c", b"http://app.test/x", b"*", b"//x", b"/%00", b"a"])
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"HTTP/0.9"])
names = st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection",
                         b"Expect", b"Upgrade", b"X-Forwarded-For", b"Host ", b" Host", b""])
values = st.one_of(
    st.sampled_from([b"app.test", b"5", b"+5", b"0x5", b"-1", b"chunked", b"gzip, chunked",
                     b"close", b"100-continue", b"", b"a\rb", b"99999999999999999999"]),
    st.binary(max_size=20))
eols = st.sampled_from([b"\r\n", b"\n", b"\r"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    eol = draw(eols)
    head = draw(methods) + b" " + draw(targets) + b" " + draw(versions) + eol
    for _ in range(draw(st.integers(0, 6))):
        head += draw(names) + b":" + draw(st.sampled_from([b" ", b"", b"\t"])) + draw(values)
        head += draw(eols)
    head += draw(eols)
    body = b""
    for _ in range(draw(st.integers(0, 3))):
        chunk = draw(st.binary(max_size=12))
        size = draw(st.sampled_from([b"%x" % len(chunk), b"0x%x" % len(chunk), b"zz", b"",
                                     b"%x;ext=1" % len(chunk), b"fffffffffffffffff"]))
        body += size + draw(eols) + chunk + draw(eols)
    if draw(st.booleans()):
        body += b"0\r\n\r\n"
    return head + body


@given(st.lists(requests(), min_size=1, max_size=3), st.integers(0, 255))
def test_structured_requests_never_crash_or_500(pipeline: list[bytes], cut: int) -> None:
    http1(bytes([cut]) + b"".join(pipeline))


@given(st.binary(max_size=300))
def test_any_bytes_never_crash_or_500(data: bytes) -> None:
    http1(data)


def test_a_valid_request_is_answered() -> None:
    proto, transport = proxy_connection()
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 ")
