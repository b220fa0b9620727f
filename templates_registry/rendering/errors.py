"""The one error type rendering raises: a single line that names the problem."""

from __future__ import annotations

from controlplane.errors import ServiceError


class RenderError(ServiceError):
    """A template problem a marketer or generator can fix (syntax, variables, limits).

    ``field`` says which part of a version it came from (``mjml_body``,
    ``subject``...), ``line`` is 1-based in that field's source when known.
    """

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        self.line = line  # before the base's __init__, which formats the message with it
        super().__init__(message, field=field)

    def with_field(self, field: str) -> RenderError:
        return type(self)(self.message, line=self.line, field=self.field or field)

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        prefix = f"{self.field}: " if self.field else ""
        return f"{prefix}{self.message}{where}"


class RenderLimitError(RenderError):
    """A sandbox limit (time, size, iterations, calls, nesting) was exceeded."""
