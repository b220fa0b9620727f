"""API routes of dispatch (mounted under /api/v1/)."""

from __future__ import annotations

from django.urls import path

from dispatch import api, feedback_api

urlpatterns = [
    path("campaigns/", api.CampaignListCreateApi.as_view(), name="campaign-list"),
    path("campaigns/<int:campaign_id>/", api.CampaignDetailApi.as_view(), name="campaign-detail"),
    path("campaigns/<int:campaign_id>/triggers", api.TriggerCreateApi.as_view(), name="campaign-trigger"),
    path("bounces/", feedback_api.BounceUploadApi.as_view(), name="bounce-upload"),
    path("erasures/", feedback_api.ErasureApi.as_view(), name="erasure-create"),
]
