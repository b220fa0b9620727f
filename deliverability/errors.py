"""The one error type deliverability services raise for bad input."""

from __future__ import annotations

from controlplane.errors import ServiceError


class DeliverabilityError(ServiceError):
    """Bad input: one line naming the problem and, where known, the field."""
