"""What a JSON value from outside may hold before it reaches PostgreSQL or a template."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput

from controlplane.errors import ServiceError

MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_problem(value: Any) -> str | None:
    """One line naming why ``value`` cannot be stored and rendered, or None.

    PostgreSQL's jsonb refuses NUL, UTF-8 refuses lone surrogates, the JSON
    encoder refuses non-finite numbers and deep nesting exhausts the stack:
    each would otherwise be a 500 far from the input that caused it.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"nests deeper than {MAX_JSON_DEPTH} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str) and ("\x00" in item or _SURROGATE.search(item)):
            return "must not contain NUL or surrogate characters"
        elif isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite"
    return None


class JSONValueError(ServiceError):
    """One line naming why a JSON text from outside was refused (a 400 at the API, a form error in the admin)."""


def json_parse(text: str | bytes) -> Any:
    """``json.loads`` for text from outside: every refusal is one JSONValueError, never a RecursionError (a 500).

    The decoder recurses once per nesting level, so 10,000 ``[`` exhaust the
    stack before any depth check could run; past that, ``json_problem`` applies.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise JSONValueError(f"nests deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise JSONValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise JSONValueError("not valid JSON: not UTF-8") from None
    problem = json_problem(value)
    if problem:
        raise JSONValueError(problem)
    return value


class BoundedJSONField(forms.JSONField):
    """Django's form JSONField with ``json_problem``: a form error, not a 500, for deep or unstorable JSON."""

    def to_python(self, value: Any) -> Any:
        try:
            converted = super().to_python(value)
        except RecursionError:
            raise ValidationError(f"nests deeper than {MAX_JSON_DEPTH} levels", code="too_deep") from None
        problem = json_problem(converted)
        if problem:
            raise ValidationError(problem, code="unstorable")
        return converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except RecursionError:  # the form is shown again with the error: keep the text as typed
            return InvalidJSONInput(data)
