"""What a JSON value from outside may hold before it reaches PostgreSQL or a template."""

from __future__ import annotations

import math
import re
from typing import Any

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
