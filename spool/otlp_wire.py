"""OTLP wire building blocks: attribute values into protobuf messages, and the two encodings
(``http/protobuf`` and OTLP/JSON) of an ``ExportTraceServiceRequest``, with their inverses and
the ``partial_success`` of an answer.  Pure; used by spool/otlp.py (the mapping), the OTLP sink
and the tests' receiver."""
from __future__ import annotations

import base64
import json
from typing import Any, Iterable

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

MAX_INT = 2**63 - 1
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v) if -MAX_INT <= v <= MAX_INT else AnyValue(
            string_value=str(v))
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, (list, tuple)):
        out = AnyValue()
        out.array_value.values.extend(value(x) for x in v)
        return out
    return AnyValue(string_value=str(v))


def attrs(pairs: Iterable[tuple[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in pairs if v is not None and v != ""]


def put(container: Any, pairs: Iterable[tuple[str, Any]]) -> None:
    """``pairs`` added to a repeated KeyValue field in place (no message copies: the hot
    path of rendering); None and "" are left out."""
    add = container.add
    for k, v in pairs:
        t = v.__class__
        if t is str:
            if v:
                add(key=k).value.string_value = v
        elif t is int and -MAX_INT <= v <= MAX_INT:
            add(key=k).value.int_value = v
        elif v is None:
            continue
        elif t is bool:
            add(key=k).value.bool_value = v
        elif t is float:
            add(key=k).value.double_value = v
        else:
            add(key=k).value.CopyFrom(value(v))


def encode(req: ExportTraceServiceRequest, protocol: str = "http/protobuf") -> bytes:
    """Protobuf bytes, or OTLP/JSON (ids as hex, enums as integers) for ``http/json``."""
    if protocol == "http/json":
        d = json_format.MessageToDict(req, use_integers_for_enums=True)
        _hex_ids(d)
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()
    return req.SerializeToString(deterministic=True)


def _hex_ids(obj: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in _ID_FIELDS and isinstance(v, str):
                obj[k] = base64.b64decode(v).hex()
            else:
                _hex_ids(v)
    elif isinstance(obj, list):
        for v in obj:
            _hex_ids(v)


def decode_request(data: bytes, protocol: str = "http/protobuf") -> ExportTraceServiceRequest:
    """The inverse of :func:`encode` (tests and receivers)."""
    req = ExportTraceServiceRequest()
    if protocol == "http/json":
        d = json.loads(data)

        def unhex(o: Any) -> None:
            if isinstance(o, dict):
                for k, v in o.items():
                    if k in _ID_FIELDS and isinstance(v, str):
                        o[k] = base64.b64encode(bytes.fromhex(v)).decode()
                    else:
                        unhex(v)
            elif isinstance(o, list):
                for v in o:
                    unhex(v)
        unhex(d)
        json_format.ParseDict(d, req)
    else:
        req.ParseFromString(data)
    return req


def partial_success(data: bytes, content_type: str | None) -> tuple[int, str] | None:
    """(rejected spans, message) from an export response, or None when all were accepted or
    the body is not an ExportTraceServiceResponse."""
    if not data:
        return None
    resp = ExportTraceServiceResponse()
    try:
        if content_type and "json" in content_type:
            json_format.Parse(data, resp, ignore_unknown_fields=True)
        else:
            resp.ParseFromString(data)
    except Exception:  # noqa: BLE001 - any undecodable body: nothing to report
        return None
    ps = resp.partial_success
    if ps.rejected_spans or ps.error_message:
        return int(ps.rejected_spans), ps.error_message
    return None


def attributes(span_or_resource: Any) -> dict[str, Any]:
    """Attributes as a plain dict (tests, doctor output)."""
    out = {}
    for kv in span_or_resource.attributes:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out
