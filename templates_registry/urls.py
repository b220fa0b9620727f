"""API routes of the template registry (mounted under /api/v1/)."""

urlpatterns: list = []
