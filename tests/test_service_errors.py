"""One service-error base, mapped once: every refusal a service raises reaches the API the same way."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

from access.services import TokenError
from controlplane.api_errors import exception_handler
from controlplane.errors import ServiceError
from deliverability.errors import DeliverabilityError
from deliverability.services.pause import ResumeRefused
from dispatch.services.campaigns import CampaignError
from dispatch.services.feedback import FeedbackError, FeedbackTooLarge
from dispatch.services.triggers import TriggerConflict, TriggerError
from templates_registry.rendering import RenderError
from templates_registry.rendering.errors import RenderLimitError
from templates_registry.services import RegistryError

APPS = ("access", "audit", "controlplane", "templates_registry", "dispatch", "deliverability")
EXPECTED_STATUS = {
    TokenError: 400, DeliverabilityError: 400, ResumeRefused: 409, CampaignError: 400, FeedbackError: 400,
    FeedbackTooLarge: 413, TriggerError: 400, TriggerConflict: 409, RenderError: 400, RenderLimitError: 400, RegistryError: 400,
}


def _all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(_all_subclasses(sub) for sub in found)) if found else found


def _import_every_module() -> None:
    for app in APPS:
        package = importlib.import_module(app)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{app}."):
            if ".migrations" not in info.name and not info.name.endswith(".wsgi") and not info.name.endswith(".asgi"):
                importlib.import_module(info.name)


def test_every_service_error_of_the_apps_derives_from_the_base() -> None:
    """No bad-input error outside the base: a plain ValueError subclass would be a 500 at the API."""
    _import_every_module()
    strays = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _all_subclasses(ValueError)
        if cls.__module__.split(".")[0] in APPS and not issubclass(cls, ServiceError)
    ]
    assert strays == []
    assert set(EXPECTED_STATUS) <= _all_subclasses(ServiceError)


@pytest.mark.parametrize("cls", sorted(EXPECTED_STATUS, key=lambda c: c.__name__))
def test_the_handler_answers_each_error_with_its_status_and_one_line(cls: type[ServiceError]) -> None:
    response = exception_handler(cls("must be\n  one line", field="reason"), {})
    assert response is not None
    assert response.status_code == EXPECTED_STATUS[cls]
    assert response.data["error"].startswith("reason: must be one line")
    assert response.data["fields"]["reason"][0].startswith("must be one line")


def test_an_error_without_a_field_has_no_fields() -> None:
    response = exception_handler(TriggerConflict("this Idempotency-Key was already used"), {})
    assert response is not None and response.status_code == 409
    assert response.data == {"error": "this Idempotency-Key was already used"}


def _views(patterns: list[URLPattern | URLResolver]) -> list[type]:
    views: list[type] = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            views += _views(entry.url_patterns)
        elif cls := getattr(entry.callback, "cls", None):
            views.append(cls)
    return views


def test_no_api_view_maps_errors_itself() -> None:
    """The one mapping is the exception handler; a view-level override would be a second owner."""
    views = _views(get_resolver().url_patterns)
    assert views, "no API views found"
    overriding = sorted({v.__name__ for v in views if issubclass(v, APIView) and "handle_exception" in vars(v)})
    assert overriding == []
    assert all(inspect.getattr_static(v, "handle_exception") is APIView.handle_exception for v in views if issubclass(v, APIView))
