"""The one base of every error a service raises for input it refuses.

A service error is one line naming the problem, the input ``field`` it is
about where known, and the HTTP ``status`` the API answers with (400 unless a
subclass says otherwise: 409 for a conflict, 413 for a body too large).
``controlplane.api_errors.exception_handler`` maps every one of them, so no
view catches them itself; the admin and the commands show ``str(exc)``.
It stays a ``ValueError`` so callers that only care about "bad input" can say so.
"""

from __future__ import annotations


class ServiceError(ValueError):
    """Bad input a service refuses before changing anything."""

    status: int = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = " ".join(str(message).split())
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message
