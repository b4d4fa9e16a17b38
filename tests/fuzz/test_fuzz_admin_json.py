"""Every admin JSON body under hypothesis, through StubTreq against the real Klein app
(ACCEPTANCE 11, 12): a 4xx in the error shape or a success, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aegis.admin._json import Field, ObjectSchema
from tests.fuzz.targets import (
    admin_call,
    admin_channel,
    admin_json,
    admin_operations,
    check_admin_answer,
    concrete,
)

WRITES = [op for op in admin_operations() if op.body is not None]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=30),
                    st.sampled_from(["a.com;touch /tmp/x", "$(id)", "a\nb", "*.com",
                                     "bücher.example", "http://127.0.0.1:1", "\x00", "",
                                     "-----BEGIN CERTIFICATE-----\nAAAA\n"
                                     "-----END CERTIFICATE-----\n"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def value_for(spec: Field) -> st.SearchStrategy[Any]:
    """Mostly the declared type (to get past the schema into the handlers), sometimes not."""
    typed: st.SearchStrategy[Any]
    if spec.enum:
        typed = st.sampled_from(list(spec.enum))
    elif spec.kind == "string":
        typed = scalars.filter(lambda v: isinstance(v, str))
    elif spec.kind == "integer":
        typed = st.integers(-(2**64), 2**64)
    elif spec.kind == "boolean":
        typed = st.booleans()
    elif spec.kind == "array":
        typed = st.lists(value_for(spec.items) if spec.items else json_values, max_size=4)
    elif spec.kind == "object" and spec.schema is not None:
        typed = bodies(spec.schema)
    else:
        typed = json_values
    return st.one_of(typed, typed, typed, json_values)


def bodies(schema: ObjectSchema) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {}, optional={name: value_for(spec) for name, spec in schema.fields.items()})


@pytest.mark.parametrize("op", WRITES, ids=[op.operation_id for op in WRITES])
def test_schema_shaped_bodies_never_500(op: Any) -> None:
    assert op.body is not None

    @settings(max_examples=20)  # per operation; the profile's other settings hold
    @given(bodies(op.body))
    def run(body: dict[str, Any]) -> None:
        status, payload = admin_call(op.method, concrete(op.openapi_path),
                                     json.dumps(body).encode())
        check_admin_answer(status, payload)

    run()


@given(st.binary(max_size=200))
def test_any_bytes_as_a_body_never_500(data: bytes) -> None:
    admin_json(data)


@given(json_values, st.sampled_from(WRITES))
def test_any_json_as_a_body_never_500(value: Any, op: Any) -> None:
    status, payload = admin_call(op.method, concrete(op.openapi_path),
                                 json.dumps(value).encode())
    check_admin_answer(status, payload)
    assert status >= 400 or isinstance(value, dict)


@given(st.binary(max_size=300))
@example(b".GET /api/v1/openapi.json HTTP/1.1\r\nHost: .127.0.0.1:9443\r\n\r\n")  # atheris
@example(b".GET /\x81 HTTP/1.1\r\nHost: 127.0.0.1:9443\r\n\r\n")
def test_any_bytes_into_the_admin_channel_never_500(data: bytes) -> None:
    admin_channel(data)


def test_the_harness_reaches_a_handler() -> None:
    status, payload = admin_call("POST", "/api/v1/hosts", json.dumps(
        {"domain": "fuzz.example.com", "upstream": "http://127.0.0.1:8080"}).encode())
    assert status in (201, 503), payload
