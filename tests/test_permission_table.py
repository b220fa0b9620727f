"""The permission table (access/permissions.py) is what the API and the admin do, for every route and every admin.

Every route under /api/v1/, with each method its view allows, is called with a real token as each role,
a superuser and an account without a role, and with none: the answer is 403 exactly when the table says
the caller lacks the capability the view declares, and 401 without a token. DRF checks permissions
before it parses the body or looks up an object, so placeholder path parameters and empty bodies do.
Every ModelAdmin on ``admin.site`` (and its inlines) answers each ``has_<x>_permission`` and offers each
action as the table says for its ``<x>_capability``. A view or admin that declares nothing fails here.
The expectations read ``PERMISSIONS`` itself, never ``user_can``, so a bug there shows too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import AnonymousUser, Group, User
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import IntConverter, PathConverter, SlugConverter, StringConverter, UUIDConverter
from rest_framework.permissions import SAFE_METHODS
from rest_framework.test import APIClient
from rest_framework.views import APIView

from access.permissions import PERMISSIONS, Capability, CapabilityPermission, Role
from controlplane.admin_roles import CapabilityAccess
from controlplane.path_converters import DomainConverter
from dispatch.admin import CampaignAdmin

API_PREFIX = "api/v1/"
SUPERUSER, NO_ROLE, ANONYMOUS = "superuser", "no-role", "anonymous"
ACTORS = [*Role, SUPERUSER, NO_ROLE, ANONYMOUS]
LOGGED_IN = [actor for actor in ACTORS if actor != ANONYMOUS]

# Routes outside the table, by URL name, and why. None: the schema and its UI ask the table too
# (access/schema.py), as a map of every route is worth something to an account with no role.
OUTSIDE_THE_TABLE: set[str] = set()
# Django's own account admins: Django model permissions, which the role groups do not carry; only superusers.
DJANGO_ACCOUNT_ADMINS = {User, Group}

_PLACEHOLDERS = {
    IntConverter: "987654321",
    UUIDConverter: "00000000-0000-4000-8000-000000000000",
    SlugConverter: "placeholder",
    StringConverter: "placeholder",
    PathConverter: "placeholder",
    DomainConverter: "placeholder.example",
}
_PARAMETER = re.compile(r"<(?:[^>:]+:)?([^>]+)>")


# --- the table as each actor holds it --------------------------------------------------------------


def roles_of(actor: str) -> frozenset[Role]:
    if actor == SUPERUSER:
        return frozenset(Role)
    return frozenset({Role(actor)}) if actor in set(Role) else frozenset()


def holds(actor: str, capability: Capability | None) -> bool:
    return capability is not None and bool(roles_of(actor) & PERMISSIONS[capability])


def make_user(actor: str) -> User | AnonymousUser:
    if actor == ANONYMOUS:
        return AnonymousUser()
    user = User.objects.create_user(username=f"table-{actor}", password="correct-horse-battery-staple", is_superuser=actor == SUPERUSER)
    if actor in set(Role):
        user.groups.add(Group.objects.get_or_create(name=actor)[0])  # a transaction=True test flushes migration data
    return user


def test_every_capability_has_a_line_in_the_table() -> None:
    assert set(PERMISSIONS) == set(Capability)
    assert all(roles <= set(Role) for roles in PERMISSIONS.values())


# --- the API -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    view: Any

    def methods(self) -> list[str]:
        return sorted(self.view().allowed_methods)


def _walk(patterns: list[Any], prefix: str, converters: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], URLPattern]]:
    for entry in patterns:
        route, found = prefix + str(entry.pattern), {**converters, **entry.pattern.converters}
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, route, found)
        else:
            yield route, found, entry


def _placeholder_path(route: str, converters: dict[str, Any]) -> str:
    return "/" + _PARAMETER.sub(lambda m: _PLACEHOLDERS[type(converters[m.group(1)])], route)


def api_routes() -> list[Route]:
    routes = []
    for route, converters, pattern in _walk(get_resolver().url_patterns, "", {}):
        if route.startswith(API_PREFIX):
            view = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
            routes.append(Route(pattern.name or route, _placeholder_path(route, converters), view))
    return routes


ROUTES = api_routes()
TABLE_ROUTES = [route for route in ROUTES if route.name not in OUTSIDE_THE_TABLE]


def declared(view: Any, method: str) -> Any:
    """What the view declares for the method, read here rather than through the permission class."""
    return getattr(view, "read_capability" if method in SAFE_METHODS else "write_capability", None)


def test_the_walk_finds_the_api() -> None:
    names = {route.name for route in ROUTES}
    expected = {"template-list", "campaign-trigger", "domain-resume", "suppression-detail", "erasure-create", "audit-list"}
    assert expected | {"api-schema", "api-schema-ui"} <= names
    assert OUTSIDE_THE_TABLE <= names  # an exemption whose route is gone must go too


@pytest.mark.parametrize("route", TABLE_ROUTES, ids=lambda route: route.name)
def test_every_api_view_declares_a_capability_for_each_method(route: Route) -> None:
    assert isinstance(route.view, type) and issubclass(route.view, APIView), f"{route.path} is not a DRF view"
    assert CapabilityPermission in route.view.permission_classes, f"{route.name} does not ask the table"
    for method in route.methods():
        assert isinstance(declared(route.view, method), Capability), f"{method} {route.path} declares no capability"


def _call(client: APIClient, method: str, path: str) -> int:
    response = getattr(client, method.lower())(path)
    return int(response.status_code)


def _api_mismatch(actor: str, route: Route, method: str, status: int) -> str | None:
    capability = declared(route.view, method)
    if actor == ANONYMOUS:
        expected = "401"
        ok = status == 401
    elif holds(actor, capability):
        expected = "neither 401 nor 403"
        ok = status not in (401, 403)
    else:
        expected = "403"
        ok = status == 403
    return None if ok else f"{method} {route.path} as {actor}: {status}, the table ({capability}) says {expected}"


@pytest.mark.django_db
@pytest.mark.parametrize("actor", ACTORS)
def test_every_api_route_answers_as_the_table_says(actor: str, api_as: Callable[[Any], APIClient], settings: Any) -> None:
    settings.SENDPLANE_API_THROTTLE = {**settings.SENDPLANE_API_THROTTLE, "anon": "1000/minute"}  # 401s count; this is no flood
    user = make_user(actor)
    client = api_as(None if actor == ANONYMOUS else user)
    calls = [(route, method) for route in TABLE_ROUTES for method in route.methods()]
    mismatches = [m for route, method in calls if (m := _api_mismatch(actor, route, method, _call(client, method, route.path)))]
    assert not mismatches, "\n".join(mismatches)
    assert len(calls) > 40  # every route, with its OPTIONS


# --- the admin -----------------------------------------------------------------------------------------


def model_admins() -> list[tuple[str, Any]]:
    """Every ModelAdmin on admin.site, and every inline it shows."""
    found = []
    for model, model_admin in admin.site._registry.items():
        found.append((model.__name__, model_admin))
        found += [(f"{model.__name__}.{inline.__name__}", inline(model, admin.site)) for inline in model_admin.inlines]
    return found


ADMINS = [(name, a) for name, a in model_admins() if a.model not in DJANGO_ACCOUNT_ADMINS]
ACCOUNT_ADMINS = [(name, a) for name, a in model_admins() if a.model in DJANGO_ACCOUNT_ADMINS]


def admin_request(user: Any) -> Any:
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def permission_names(model_admin: Any) -> list[str]:
    """Each ``has_<x>_permission`` the admin answers (Django's derived view-or-change excepted)."""
    names = [m.group(1) for m in map(re.compile(r"has_(\w+)_permission$").match, dir(model_admin)) if m]
    return [name for name in names if name != "view_or_change"]


def _attribute(name: str) -> str:
    return "view_capability" if name == "module" else f"{name}_capability"


def _capability_of(model_admin: Any, name: str) -> Capability | None:
    return getattr(model_admin, _attribute(name))


def _permission_mismatches(actor: str, label: str, model_admin: Any, request: Any) -> list[str]:
    mismatches = []
    for name in permission_names(model_admin):
        if not hasattr(model_admin, _attribute(name)):
            mismatches.append(f"{label}: has_{name}_permission without a {_attribute(name)}")
            continue
        capability = _capability_of(model_admin, name)
        answer = getattr(model_admin, f"has_{name}_permission")(request)
        if answer != holds(actor, capability):
            mismatches.append(f"{label}: has_{name}_permission is {answer} for {actor}, the table ({capability}) says otherwise")
    return mismatches


def _action_mismatches(actor: str, label: str, model_admin: Any, request: Any, everything: set[str]) -> list[str]:
    """``everything``: what the admin offers a superuser (an admin may withhold an action from all, as suppressions do delete)."""
    mismatches, expected = [], set()
    for func, name, _ in model_admin._get_base_actions():  # every action, before Django filters it by permission
        permissions = getattr(func, "allowed_permissions", ())
        if not permissions:
            mismatches.append(f"{label}: action {name} names no permission, so every viewer gets it")
        elif undeclared := [p for p in permissions if not hasattr(model_admin, _attribute(p))]:
            mismatches.append(f"{label}: action {name} needs {undeclared} without a capability for each")
        elif name in everything and any(holds(actor, _capability_of(model_admin, p)) for p in permissions):
            expected.add(name)
    offered = set(model_admin.get_actions(request))
    if offered != expected:
        mismatches.append(f"{label}: {actor} is offered {sorted(offered)}, the table says {sorted(expected)}")
    return mismatches


@pytest.mark.django_db
@pytest.mark.parametrize("actor", ACTORS)
def test_every_admin_answers_as_the_table_says(actor: str) -> None:
    request = admin_request(make_user(actor))
    superuser_request = admin_request(User(username="root", is_superuser=True, is_active=True))
    mismatches = []
    for label, model_admin in ADMINS:
        if not isinstance(model_admin, CapabilityAccess):
            mismatches.append(f"{label} does not ask the table (mix in controlplane.admin_roles.CapabilityAccess)")
            continue
        mismatches += _permission_mismatches(actor, label, model_admin, request)
        if isinstance(model_admin, admin.ModelAdmin):
            everything = set(model_admin.get_actions(superuser_request))
            mismatches += _action_mismatches(actor, label, model_admin, request, everything)
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.django_db
@pytest.mark.parametrize("actor", [actor for actor in ACTORS if actor != SUPERUSER])
def test_no_role_opens_djangos_account_admins(actor: str) -> None:
    request = admin_request(make_user(actor))
    for label, model_admin in ACCOUNT_ADMINS:
        answers = {name: getattr(model_admin, f"has_{name}_permission")(request) for name in ("module", "view", "add", "change", "delete")}
        assert not any(answers.values()), (label, answers)


@pytest.mark.django_db
@pytest.mark.parametrize("actor", LOGGED_IN)
def test_the_cockpit_and_the_launch_page_follow_the_table(actor: str, staff_client: Callable[[Any], Any]) -> None:
    client = staff_client(make_user(actor))
    pages = {"/admin/cockpit/": Capability.READ, reverse("admin:dispatch_campaign_launch"): CampaignAdmin.launch_capability}
    for url, capability in pages.items():
        status = client.get(url).status_code
        assert status == (200 if holds(actor, capability) else 403), (url, actor, status)


def test_every_capability_is_asked_somewhere() -> None:
    """A line of the table that nothing asks would be a promise nothing keeps."""
    asked = {declared(route.view, method) for route in TABLE_ROUTES for method in route.methods()}
    for _, model_admin in ADMINS:
        asked |= {getattr(model_admin, name) for name in dir(model_admin) if name.endswith("_capability")}
    assert set(Capability) <= asked
