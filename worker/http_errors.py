"""The HTTP API's one error shape, the archive manager's own.

Every 4xx and 5xx body the daemon sends is built here, so a client parses one shape:
``{"messages": ["..."], "details": {"<attribute>": [{"error": "<kind>", "value": "..."}]}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi.responses import JSONResponse

#: attribute -> [{"error": kind, "value": what was received}]
Details = Mapping[str, Sequence[Mapping[str, str]]]


def error_body(messages: str | Sequence[str], details: Details | None = None) -> dict[str, object]:
    listed = [messages] if isinstance(messages, str) else list(messages)
    return {
        "messages": listed,
        "details": {
            name: [dict(item) for item in items] for name, items in (details or {}).items()
        },
    }


def error_response(
    status_code: int,
    messages: str | Sequence[str],
    details: Details | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(messages, details),
        status_code=status_code,
        headers=dict(headers) if headers else None,
    )


#: Seconds a client waits before retrying while the journal refuses writes.
JOURNAL_RETRY_AFTER_S = 5


def journal_unavailable(kind: str, detail: str) -> JSONResponse:
    """503 while the journal refuses writes: nothing was committed, the client retries."""
    return error_response(
        503,
        f"the journal cannot take writes now ({kind}); nothing was changed, retry later",
        {"journal": [{"error": kind, "value": detail}]},
        headers={"Retry-After": str(JOURNAL_RETRY_AFTER_S)},
    )
