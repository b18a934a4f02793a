"""Property-based: whatever lands in an etcd journal, no traceback ever escapes the etcd log parser (tuning.etcdlog):
it answers with a warning or None.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.tuning.etcdlog import parse_entry, parse_message

pytestmark = pytest.mark.slow


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400), st.floats(allow_nan=True, allow_infinity=True))
def test_etcd_log_parser_never_raises(line: str, at: float) -> None:
    parse_entry(line, "etcd.service")
    parse_message(line, at)
    for cut in (len(line) // 2, len(line) - 1):
        parse_entry(line[:cut], "etcd.service")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30), st.text(max_size=30))
def test_etcd_warning_fields_with_garbage(interval: str, expected: str, exceeded: str) -> None:
    import json

    message = json.dumps(
        {
            "msg": "leader failed to send out heartbeat on time",
            "heartbeat-interval": interval,
            "expected-duration": expected,
            "exceeded-duration": exceeded,
        }
    )
    parse_message(message, 0.0)
    parse_message(f"failed to send out heartbeat on time (exceeded the {interval} timeout for {exceeded}", 0.0)
    parse_entry(json.dumps({"__CURSOR": "c", "__REALTIME_TIMESTAMP": interval, "MESSAGE": message}), "etcd.service")
