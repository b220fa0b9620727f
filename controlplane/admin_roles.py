"""Admin access from the API roles: every role reads; writes are opted into per ModelAdmin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from controlplane.api import user_roles


class ReadOnlyAdmin(admin.ModelAdmin):
    """Visible to every role, changeable by none: state changes go through services, not forms."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(user_roles(request.user))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(user_roles(request.user))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
