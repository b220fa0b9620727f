"""Bounce and complaint classification (issue 5): raw message in, one verdict per recipient out.

``classify_message`` is the public entry point; ``vocabulary`` holds the stable
event/reason names and the mapping tables, ``parse`` the per-format parsers.
"""

from __future__ import annotations

from deliverability.bounces.classify import Classification, classify_message

__all__ = ["Classification", "classify_message"]
