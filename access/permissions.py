"""Who may do what: the roles, the capabilities, and the one table between them.

Roles are Django groups (created by migration ``templates_registry/0002_roles``);
a superuser holds every role. Nothing else in the project names a role: each API
view declares the capability it needs (``read_capability`` for GET, HEAD and
OPTIONS, ``write_capability`` for the other methods, read by
``CapabilityPermission``), and every admin page and action asks ``user_can``
(``controlplane/admin_roles.py``: ``has_<x>_permission`` asks the admin's
``<x>_capability``). So a change of policy is one line of ``PERMISSIONS``.
``tests/test_permission_table.py`` walks every API route and every admin against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from rest_framework import permissions

from access.throttling import throttle_unauthenticated


class Role(StrEnum):
    MARKETER = "marketer"
    ONCALL = "oncall"
    ADMIN = "admin"


class Capability(StrEnum):
    READ = "read"  # every list and detail, a preview, the cockpit, the admin's pages
    TEMPLATES_WRITE = "templates.write"  # templates, variants, versions (and "new version from this one")
    TEMPLATES_APPROVE = "templates.approve"  # the approval gate, and asking for a new spam score
    APPROVAL_POLICY = "approval.policy"  # turn four-eyes approval off (or on) for a template
    CAMPAIGNS_WRITE = "campaigns.write"  # create and trigger a campaign, the admin's launch page
    CAMPAIGNS_END = "campaigns.end"  # cancel a campaign (its waiting messages with it), mark one completed
    SENDING_CONTROL = "sending.control"  # pause and resume a domain, a campaign, or all sending
    DOMAINS_CONFIGURE = "domains.configure"  # add a sending domain, change its pace, warm-up, DKIM, SMTP sessions
    FEEDBACK_UPLOAD = "feedback.upload"  # raw bounce and complaint upload
    SUPPRESSIONS_ADD = "suppressions.add"  # and withdraw a consent: both only stop mail
    CONSENT_RECORD = "consent.record"  # record that a recipient consented to a purpose, define purposes
    SUPPRESSIONS_LIFT = "suppressions.lift"  # it may have been a complaint or a hard bounce
    ADDRESSES_ERASE = "addresses.erase"  # GDPR erasure
    TOKENS_MANAGE = "tokens.manage"  # issue and revoke anyone's API tokens, see them all


# The table: one line per capability, the roles that hold it.
PERMISSIONS: Mapping[Capability, frozenset[Role]] = MappingProxyType({
    Capability.READ: frozenset({Role.MARKETER, Role.ONCALL, Role.ADMIN}),
    Capability.TEMPLATES_WRITE: frozenset({Role.MARKETER, Role.ADMIN}),
    Capability.TEMPLATES_APPROVE: frozenset({Role.MARKETER, Role.ADMIN}),
    Capability.APPROVAL_POLICY: frozenset({Role.ADMIN}),  # else a marketer (or a generator's token) could approve its own
    Capability.CAMPAIGNS_WRITE: frozenset({Role.MARKETER, Role.ADMIN}),
    Capability.CAMPAIGNS_END: frozenset({Role.MARKETER, Role.ONCALL, Role.ADMIN}),  # the marketer's call, or on-call's at 3 a.m.
    Capability.SENDING_CONTROL: frozenset({Role.ONCALL, Role.ADMIN}),  # a marketer cannot resume a paused domain
    Capability.DOMAINS_CONFIGURE: frozenset({Role.ADMIN}),  # pace and DKIM are the whole fleet's reputation
    Capability.FEEDBACK_UPLOAD: frozenset({Role.ONCALL, Role.ADMIN}),
    Capability.SUPPRESSIONS_ADD: frozenset({Role.MARKETER, Role.ONCALL, Role.ADMIN}),
    Capability.SUPPRESSIONS_LIFT: frozenset({Role.ADMIN}),
    Capability.CONSENT_RECORD: frozenset({Role.MARKETER, Role.ADMIN}),  # it lets mail go where a domain requires consent
    Capability.ADDRESSES_ERASE: frozenset({Role.ADMIN}),
    Capability.TOKENS_MANAGE: frozenset({Role.ADMIN}),
})


def user_roles(user: Any) -> frozenset[Role]:
    """The user's roles, read once per user object (the admin asks for every model on every page)."""
    if not user or not user.is_authenticated:
        return frozenset()
    if user.is_superuser:
        return frozenset(Role)
    cached: frozenset[Role] | None = getattr(user, "_sendplane_roles", None)
    if cached is None:
        cached = frozenset(Role(name) for name in user.groups.filter(name__in=list(Role)).values_list("name", flat=True))
        user._sendplane_roles = cached
    return cached


def user_can(user: Any, capability: Capability) -> bool:
    return bool(user_roles(user) & PERMISSIONS[capability])


def capability_for(view: Any, method: str) -> Capability | None:
    """What an API view declares for ``method``; None when it declares nothing."""
    name = "read_capability" if method in permissions.SAFE_METHODS else "write_capability"
    return getattr(view, name, None)


class CapabilityPermission(permissions.BasePermission):
    """DRF's check, before the body is parsed or an object looked up. A view that declares nothing is refused."""

    message = "Your role does not allow this."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not request.user.is_authenticated:  # a 401 to come: DRF would never reach its throttles (access/throttling.py)
            throttle_unauthenticated(request)
            return False
        capability = capability_for(view, request.method)
        return capability is not None and user_can(request.user, capability)
