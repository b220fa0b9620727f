"""API tokens in the admin: ``tokens.manage`` (access/permissions.py) issues, revokes and sees all; others see their own.

A new token's plaintext is shown once, in the body of the answer to "Save" (not
in a message: the messages cookie would carry it, and the browser keep it); the row
keeps only its hash. Tokens are never edited or deleted (revoked rows stay as
the record of what existed).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from access.models import ApiToken
from access.permissions import Capability, user_can
from access.services import token_create, token_revoke
from controlplane.admin_roles import ReadOnlyAdmin

_ADD_FIELDS = ("user", "name")
_VIEW_FIELDS = ("user", "name", "prefix", "created_at", "created_by", "last_used_at", "revoked_at")


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked_at", "created_by"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "user__username"]
    list_select_related = ["user", "created_by"]
    actions = ["revoke"]
    add_capability = Capability.TOKENS_MANAGE
    revoke_capability = Capability.TOKENS_MANAGE

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        tokens = super().get_queryset(request)
        return tokens if user_can(request.user, Capability.TOKENS_MANAGE) else tokens.filter(user=request.user)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return _ADD_FIELDS if obj is None else _VIEW_FIELDS

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "revoke")

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        token, plaintext = token_create(user=obj.user, name=obj.name, created_by=request.user)
        for field in ApiToken._meta.concrete_fields:  # the admin goes on with (logs, links to) the created row
            setattr(obj, field.attname, getattr(token, field.attname))
        request._sendplane_new_token = plaintext  # type: ignore[attr-defined]  # for response_add, this request only

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        """The page with the new secret, instead of the admin's redirect and its message."""
        context = {**self.admin_site.each_context(request), "opts": self.opts, "token": obj}
        context["plaintext"] = request._sendplane_new_token  # type: ignore[attr-defined]
        response = TemplateResponse(request, "admin/access/apitoken/token_created.html", context)
        response["Cache-Control"] = "no-store"  # not kept by the browser's cache or the back button
        return response

    @admin.action(description="Revoke the selected tokens (admins only)", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = sum(token_revoke(token=token, revoked_by=request.user) for token in queryset)
        self.message_user(request, f"{revoked} token(s) revoked.")
