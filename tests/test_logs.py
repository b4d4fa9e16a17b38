"""The access log (format, batching, reopen) and the application log (level, JSON)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel

from aegis.logs import AccessLog, BatchedLogFile
from aegis.logs.access import escaped
from aegis.logs.application import observer
from aegis.proxy.routing import ConnectionInfo, RequestHead

# 2026-12-02 05:47:46 UTC
MOMENT = 1796190466.25


def _clock() -> Clock:
    clock = Clock()
    clock.advance(MOMENT)
    return clock


def _head(**kwargs: Any) -> RequestHead:
    values: dict[str, Any] = {
        "method": b"GET", "target": b"/a?b=1", "version": "1.1", "host": "app.test",
        "headers": [(b"Host", b"app.test"), (b"User-Agent", b"curl/8.5.0"),
                    (b"Referer", b"https://ref.test/")],
    }
    values.update(kwargs)
    return RequestHead(**values)


CONN = ConnectionInfo("https", "203.0.113.7", 55000, "app.test", "http/1.1")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_combined_line_is_nginx_combined(tmp_path: Path) -> None:
    clock = _clock()
    path = tmp_path / "access.log"
    access = AccessLog(BatchedLogFile(str(path), clock), clock, "combined")
    access.record(_head(), CONN, 200, 1024, 12)
    access.record(_head(version="2", headers=[], method=b"POST"), CONN, 502, 0, None)
    access.file.flush()
    assert _lines(path) == [
        '203.0.113.7 - - [02/Dec/2026:05:47:46 +0000] "GET /a?b=1 HTTP/1.1" 200 1024 '
        '"https://ref.test/" "curl/8.5.0"',
        '203.0.113.7 - - [02/Dec/2026:05:47:46 +0000] "POST /a?b=1 HTTP/2.0" 502 0 "-" "-"',
    ]


def test_logged_values_cannot_break_the_line() -> None:
    assert escaped(b'/x"y\\z') == '/x\\x22y\\x5Cz'
    assert escaped(b"agent\r\nFake: line\x00\xff") == "agent\\x0D\\x0AFake: line\\x00\\xFF"
    assert escaped(b"plain/ascii-text_~") == "plain/ascii-text_~"


def test_json_line_has_the_fields(tmp_path: Path) -> None:
    clock = _clock()
    path = tmp_path / "access.json"
    access = AccessLog(BatchedLogFile(str(path), clock), clock, "json")
    access.record(_head(headers=[(b"user-agent", "zoë".encode())]), CONN, 200, 5, 7)
    access.file.flush()
    (line,) = _lines(path)
    assert json.loads(line) == {
        "time": "2026-12-02T05:47:46Z", "client": "203.0.113.7", "host": "app.test",
        "scheme": "https", "method": "GET", "uri": "/a?b=1", "protocol": "HTTP/1.1",
        "status": 200, "bytes": 5, "referer": None, "user_agent": "zoë", "upstream_ms": 7,
    }


def test_timestamp_follows_the_clock(tmp_path: Path) -> None:
    clock = _clock()
    path = tmp_path / "access.log"
    access = AccessLog(BatchedLogFile(str(path), clock, interval=100), clock)
    access.record(_head(), CONN, 200, 1, 1)
    clock.advance(61)
    access.record(_head(), CONN, 200, 1, 1)
    access.file.flush()
    assert ["05:47:46" in _lines(path)[0], "05:48:47" in _lines(path)[1]] == [True, True]


def test_lines_are_written_in_batches_on_a_timer(tmp_path: Path) -> None:
    clock = _clock()
    path = tmp_path / "access.log"
    file = BatchedLogFile(str(path), clock, interval=1.0)
    for n in range(3):
        file.write(f"line {n}\n")
    assert _lines(path) == [] and len(clock.getDelayedCalls()) == 1
    clock.advance(0.99)
    assert _lines(path) == []
    clock.advance(0.01)
    assert _lines(path) == ["line 0", "line 1", "line 2"]
    assert clock.getDelayedCalls() == []
    file.write("line 3\n")  # the next batch arms the timer again
    clock.advance(1.0)
    assert _lines(path)[-1] == "line 3"


def test_a_full_buffer_is_written_at_once(tmp_path: Path) -> None:
    clock = _clock()
    path = tmp_path / "access.log"
    file = BatchedLogFile(str(path), clock, limit=1000)
    for n in range(9):
        file.write(f"{n:099d}\n")  # 100 bytes each
    assert _lines(path) == []
    file.write(f"{9:099d}\n")
    assert len(_lines(path)) == 10 and clock.getDelayedCalls() == []


def test_close_flushes_and_later_lines_are_dropped(tmp_path: Path) -> None:
    clock = _clock()
    path = tmp_path / "access.log"
    file = BatchedLogFile(str(path), clock)
    file.write("before stop\n")
    file.close()
    assert _lines(path) == ["before stop"] and clock.getDelayedCalls() == []
    file.write("after stop\n")
    file.reopen()
    assert _lines(path) == ["before stop"]


def test_reopen_after_rename_loses_nothing(tmp_path: Path) -> None:
    clock = _clock()
    path = tmp_path / "access.log"
    file = BatchedLogFile(str(path), clock)
    file.write("one\n")
    file.flush()
    file.write("two\n")  # still queued when logrotate renames the file
    path.rename(tmp_path / "access.log.1")
    file.reopen()
    file.write("three\n")
    file.flush()
    assert _lines(tmp_path / "access.log.1") == ["one", "two"]
    assert _lines(path) == ["three"]
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_write_errors_are_reported_once_and_do_not_raise(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    from twisted.logger import globalLogPublisher

    globalLogPublisher.addObserver(events.append)
    try:
        clock = _clock()
        file = BatchedLogFile("/dev/full", clock)
        for _ in range(3):
            file.write("x\n")
            file.flush()
    finally:
        globalLogPublisher.removeObserver(events.append)
    errors = [e for e in events if e.get("log_level") == LogLevel.error]
    assert len(errors) == 1 and "/dev/full" in errors[0]["target"]


def test_application_log_json_lines_and_level() -> None:
    out = io.StringIO()
    log = Logger(namespace="aegis.test", observer=observer("warn", "json", out))
    log.info("dropped below the level")
    log.warn("kept {what}", what="this", event="thing_happened")
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("it failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "kept this" and first["level"] == "warn"
    assert first["namespace"] == "aegis.test" and first["event"] == "thing_happened"
    assert first["time"].endswith("Z")
    assert second["level"] == "critical" and "ValueError: boom" in second["traceback"]


def test_application_log_text_level() -> None:
    out = io.StringIO()
    log = Logger(namespace="aegis.test", observer=observer("error", "text", out))
    log.warn("not shown")
    log.error("shown")
    assert "not shown" not in out.getvalue() and "[aegis.test#error] shown" in out.getvalue()


def test_twistd_observer_follows_the_settings(monkeypatch: Any) -> None:
    from aegis.logs import twistd_observer

    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setenv("AEGIS_LOG_FORMAT", "json")
    monkeypatch.setenv("AEGIS_LOG_LEVEL", "error")
    log = Logger(namespace="aegis.test", observer=twistd_observer())
    log.info("below")
    log.error("kept")
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["message"] == "kept"


def test_a_record_that_cannot_be_formatted_is_left_out_once(tmp_path: Path) -> None:
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock = _clock()
        path = tmp_path / "access.log"
        for format in ("combined", "json"):
            access = AccessLog(BatchedLogFile(str(path), clock), clock, format)
            broken = _head(version="3")  # not a version the parsers produce
            access.record(broken, CONN, 200, 1, 1)
            access.record(broken, CONN, 200, 1, 1)
            access.record(_head(), CONN, 200, 1, 1)
            access.file.flush()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert len(_lines(path)) == 2
    assert len([e for e in events if "log_failure" in e]) == 2  # once per access log
