import json
import logging

from shared import logs


def format_record(message, **extra):
    record = logging.LogRecord("orderpipe.test", logging.WARNING, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return json.loads(logs.CloudLoggingFormatter().format(record))


def test_log_lines_are_json_with_cloud_logging_severity_and_message():
    entry = format_record("stock low", product_id="p1")
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "stock low"
    assert entry["product_id"] == "p1"


def test_correlation_id_and_trace_travel_from_the_context():
    token_c = logs.correlation_id.set("abc-123")
    token_t = logs.trace.set("projects/p/traces/0af7651916cd43dd8448eb211c80319c")
    try:
        entry = format_record("hello")
    finally:
        logs.correlation_id.reset(token_c)
        logs.trace.reset(token_t)
    assert entry["correlation_id"] == "abc-123"
    assert entry["logging.googleapis.com/trace"] == "projects/p/traces/0af7651916cd43dd8448eb211c80319c"


def test_trace_names_come_from_cloud_trace_and_w3c_headers():
    assert logs.trace_from_header("105445aa7843bc8bf206b12000100000/1;o=1", "shop") == \
        "projects/shop/traces/105445aa7843bc8bf206b12000100000"
    assert logs.trace_from_header("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "shop") == \
        "projects/shop/traces/0af7651916cd43dd8448eb211c80319c"
    assert logs.trace_from_header("not a trace; drop table", "shop") is None
    assert logs.trace_from_header("105445aa7843bc8bf206b12000100000/1", None) is None
