"""Path converters for names that reach a database lookup: a segment no row can hold never reaches PostgreSQL.

Django's ``str`` converter passes any segment on, NUL included, and psycopg
refuses a NUL in a query parameter with a DataError: a 500 for
``/api/v1/domains/%00/``. A segment these converters refuse matches no route,
so the answer is the 404 every unknown URL gets (JSON under /api/).
"""

from __future__ import annotations

from django.urls import register_converter


class DomainConverter:
    """A sending domain as a URL segment: at most 253 characters (RFC 1035), no NUL or other control character."""

    regex = "[^/\x00-\x1f\x7f]{1,253}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(DomainConverter, "domain")
