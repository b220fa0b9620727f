"""The one error type deliverability services raise for bad input."""

from __future__ import annotations


class DeliverabilityError(ValueError):
    """Bad input: one line naming the problem and, where known, the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message, self.field = message, field
        super().__init__(f"{field}: {message}" if field else message)
