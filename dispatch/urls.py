"""API routes of dispatch (mounted under /api/v1/)."""

urlpatterns: list = []
