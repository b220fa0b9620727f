"""The correlation id: one id carried from an API request through its trigger and tasks into every log line.

A request takes its id from ``X-Request-ID`` when the value is safe to log
(visible ASCII, at most 100 characters) and gets a fresh one otherwise; the
response echoes it. A trigger stores it, hints to workers carry it in a task
header, and the task's run sets it again (``task_prerun``) and drops it
(``task_postrun``). The log formatters read it from here (controlplane/logging.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

HTTP_HEADER = "X-Request-ID"
TASK_HEADER = "sendplane_correlation_id"  # not "correlation_id": Celery's AMQP property of that name is the task id
MAX_LENGTH = 100
_SAFE = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_LENGTH)  # one grep-able token: no spaces, no control characters

_current: ContextVar[str | None] = ContextVar("sendplane_correlation_id", default=None)
_task_tokens: dict[str, Token[str | None]] = {}


def correlation_id() -> str | None:
    """The id of the request or task being handled, if any."""
    return _current.get()


def correlation_valid(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _SAFE.fullmatch(value) is not None


def correlation_new() -> str:
    return uuid.uuid4().hex


def task_headers(correlation: str | None = None) -> dict[str, str]:
    """Headers for a task published now: the given id, else the current one."""
    value = correlation or _current.get()
    return {TASK_HEADER: value} if value else {}


class CorrelationMiddleware:
    """Sets the id for the request (the client's X-Request-ID when valid, else a new one) and echoes it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get(HTTP_HEADER)
        value = offered if correlation_valid(offered) else correlation_new()
        token = _current.set(value)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[HTTP_HEADER] = value
        return response


def on_task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Celery ``task_prerun``: the publisher's id from the headers, else the caller's (eager), else a new one."""
    request = getattr(task, "request", None)
    offered = (getattr(request, "headers", None) or {}).get(TASK_HEADER) or getattr(request, TASK_HEADER, None)
    value = offered if correlation_valid(offered) else (_current.get() or correlation_new())
    _task_tokens[task_id or ""] = _current.set(value)


def on_task_postrun(task_id: str | None = None, **_: Any) -> None:
    """Celery ``task_postrun``: back to what was current before the task (nothing, in a worker)."""
    token = _task_tokens.pop(task_id or "", None)
    if token is None:
        _current.set(None)
        return
    try:
        _current.reset(token)
    except ValueError:  # the token belongs to another context: nothing there to restore
        _current.set(None)
