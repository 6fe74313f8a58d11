"""The serving process's own checks (issue 21): the plain-HTTP warning and the JSON refusals
written below the application."""

from __future__ import annotations

import json

import pytest

from tarn.config import ServeConfig
from tarn.serve.server import bounded_protocol, plain_http_warning, refusal_bytes


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_binds_start_quietly(host):
    assert plain_http_warning(host) == ""


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_a_reachable_bind_warns_and_names_the_fix(host):
    w = plain_http_warning(host)
    assert host in w and "admin secret" in w and "TLS" in w and "127.0.0.1" in w


@pytest.mark.parametrize("status", [400, 408, 431, 503])
def test_refusals_are_whole_json_responses_that_close(status):
    raw = refusal_bytes(status, "why")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close" in head and b"content-type: application/json" in head
    assert b"content-length: %d" % len(body) in head
    assert json.loads(body)["message"] == "why"


def test_the_protocol_carries_the_configured_limits():
    proto = bounded_protocol(ServeConfig(max_connections=7, header_timeout_s=3,
                                         body_timeout_s=4, max_header_bytes=2048))
    assert (proto.max_connections, proto.header_timeout_s, proto.body_timeout_s,
            proto.max_header_bytes) == (7, 3, 4, 2048)
