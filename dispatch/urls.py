"""API routes of dispatch (mounted under /api/v1/)."""

from __future__ import annotations

from django.urls import path

import controlplane.path_converters  # noqa: F401  # registers <domain:...>
from dispatch import api, controls_api, feedback_api, results_api, story_api

urlpatterns = [
    path("campaigns/", api.CampaignListCreateApi.as_view(), name="campaign-list"),
    path("campaigns/<int:campaign_id>/", api.CampaignDetailApi.as_view(), name="campaign-detail"),
    path("campaigns/<int:campaign_id>/triggers", api.TriggerCreateApi.as_view(), name="campaign-trigger"),
    path("campaigns/<int:campaign_id>/results", results_api.CampaignResultsApi.as_view(), name="campaign-results"),
    path("quarantines/<int:quarantine_id>/restore", results_api.QuarantineRestoreApi.as_view(), name="quarantine-restore"),
    path("campaigns/<int:campaign_id>/pause", controls_api.CampaignPauseApi.as_view(), name="campaign-pause"),
    path("campaigns/<int:campaign_id>/resume", controls_api.CampaignResumeApi.as_view(), name="campaign-resume"),
    path("campaigns/<int:campaign_id>/cancel", api.CampaignCancelApi.as_view(), name="campaign-cancel"),
    path("campaigns/<int:campaign_id>/complete", api.CampaignCompleteApi.as_view(), name="campaign-complete"),
    path("domains/", controls_api.DomainListApi.as_view(), name="domain-list"),
    path("domains/<domain:domain>/", controls_api.DomainDetailApi.as_view(), name="domain-detail"),
    path("domains/<domain:domain>/evidence", controls_api.DomainEvidenceApi.as_view(), name="domain-evidence"),
    path("domains/<domain:domain>/pause", controls_api.DomainPauseApi.as_view(), name="domain-pause"),
    path("domains/<domain:domain>/resume", controls_api.DomainResumeApi.as_view(), name="domain-resume"),
    path("domains/<domain:domain>/streams", controls_api.DomainStreamsApi.as_view(), name="domain-streams"),
    path("domains/<domain:domain>/streams/<slug:provider>/resume", controls_api.StreamResumeApi.as_view(), name="stream-resume"),
    path("sending", controls_api.SendingStateApi.as_view(), name="sending-state"),
    path("pause-all", controls_api.PauseAllApi.as_view(), name="pause-all"),
    path("resume-all", controls_api.ResumeAllApi.as_view(), name="resume-all"),
    path("bounces/", feedback_api.BounceUploadApi.as_view(), name="bounce-upload"),
    path("erasures/", feedback_api.ErasureApi.as_view(), name="erasure-create"),
    path("messages/<uuid:message_uuid>", story_api.MessageStoryApi.as_view(), name="message-story"),
]
