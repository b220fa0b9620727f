"""The admin's long jobs (dispatch.services.jobs): the pages that start them, and each job's progress.

- "Import suppressions" (``suppressions.add``), linked from the suppressions' list: a CSV file or a pasted list;
- "Erase addresses" (``addresses.erase``, admins): a pasted list;
- "Re-score the selected versions" (``templates.approve``): the versions' admin action asks to confirm, then posts
  the ids here (the registry never imports dispatch: it names this page's URL only);
- a job's page: a ``<progress>`` bar with its count, state, summary and problems, which a small script
  (dispatch/static/dispatch/job_progress.js) updates from ``<id>/progress/`` while the job runs, without
  moving the keyboard focus. Jobs are read-only here; every role sees them (they name no address).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime

from access.permissions import Capability
from controlplane.admin_roles import ReadOnlyAdmin, add_service_error
from controlplane.errors import ServiceError
from deliverability.models import SendingDomain
from dispatch.models import Job, JobState
from dispatch.services import jobs

POLL_MILLISECONDS = 1000  # how often a running job's page asks for its progress
_MB = f"{jobs.MAX_INPUT_BYTES / 1_048_576:g} MB"


# --- the forms ------------------------------------------------------------------------------------------------


class ListForm(forms.Form):
    """A list as a file or pasted; exactly one of them."""

    file = forms.FileField(
        label="CSV file", required=False, help_text=f"UTF-8 text, at most {_MB}.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.txt,text/csv,text/plain"}),
    )
    addresses = forms.CharField(
        label="Or paste the list", required=False, widget=forms.Textarea(attrs={"rows": 12, "class": "vLargeTextField"}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload, pasted = data.get("file"), (data.get("addresses") or "").strip()
        if bool(upload) == bool(pasted):
            raise forms.ValidationError("Choose a file or paste a list (one of the two).")
        if upload and upload.size > jobs.MAX_INPUT_BYTES:  # refused before reading it
            self.add_error("file", f"The file is {upload.size / 1_048_576:.1f} MB, at most {_MB}: split it into several.")
            return data
        data["list"] = upload.read(jobs.MAX_INPUT_BYTES + 1) if upload else pasted
        return data

    def start(self, create: Any, **kwargs: Any) -> Job | None:
        """The service's refusal becomes a form error and None (no job was created)."""
        try:
            job: Job = create(text=self.cleaned_data["list"], **kwargs)
        except ServiceError as exc:
            add_service_error(self, exc)
            return None
        return job


class SuppressionImportForm(ListForm):
    field_order = ["file", "addresses", "sending_domain"]
    sending_domain = forms.ModelChoiceField(
        SendingDomain.objects.order_by("domain"), required=False, empty_label="All sending domains",
        label="For lines that name no domain",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text = f"One address a line, optionally “address,domain” (a sending domain); UTF-8, at most {_MB}."
        self.fields["addresses"].help_text = "The same format. Lines that are not an address are listed as the job's problems."


class ErasureForm(forms.Form):
    addresses = forms.CharField(
        label="Addresses to erase", widget=forms.Textarea(attrs={"rows": 12, "class": "vLargeTextField"}),
        help_text=f"One a line, at most {_MB}. Each is blanked everywhere it is stored and stays suppressed, by its hash only.",
    )
    confirm = forms.BooleanField(label="I understand that an erase cannot be undone")

    def start(self, user: Any) -> Job | None:
        try:
            return jobs.erasure_job_create(text=self.cleaned_data["addresses"], created_by=user)
        except ServiceError as exc:
            self.add_error("addresses", exc.message)
            return None


# --- the admin -----------------------------------------------------------------------------------------------------


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "state", "progress", "summary", "created_by", "created_at")
    list_filter = ("kind", "state")
    list_select_related = ("created_by",)
    import_capability = Capability.SUPPRESSIONS_ADD  # the same service as adding one suppression
    erase_capability = Capability.ADDRESSES_ERASE
    rescore_capability = Capability.TEMPLATES_APPROVE  # which owns asking for a new spam score

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "import")

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "erase")

    def has_rescore_permission(self, request: HttpRequest) -> bool:
        return self.allows(request, "rescore")

    @admin.display(description="progress")
    def progress(self, job: Job) -> str:
        return progress_count(job)

    def get_urls(self) -> list[URLPattern]:
        view, name = self.admin_site.admin_view, f"{self.opts.app_label}_{self.opts.model_name}"
        own = [
            path("import-suppressions/", view(self.import_view), name=f"{name}_suppression_import"),
            path("erase/", view(self.erase_view), name=f"{name}_erasure"),
            path("rescore/", view(self.rescore_view), name=f"{name}_rescore"),
            path("<int:object_id>/progress/", view(self.progress_view), name=f"{name}_progress"),
        ]
        return own + super().get_urls()  # before the catch-all <path:object_id>/

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "can_import": self.has_import_permission(request), "can_erase": self.has_erase_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = SuppressionImportForm(request.POST or None, request.FILES or None)
        if form.is_valid():
            domain = form.cleaned_data["sending_domain"]
            job = form.start(jobs.suppression_import_job_create, created_by=request.user, sending_domain=domain)
            if job is not None:
                return self._started(request, job)
        return self._form_page(request, form, "Import suppressions", "Import", multipart=True)

    def erase_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_erase_permission(request):
            raise PermissionDenied
        form = ErasureForm(request.POST or None)
        if form.is_valid() and (job := form.start(request.user)) is not None:
            return self._started(request, job)
        return self._form_page(request, form, "Erase addresses", "Erase")

    def rescore_view(self, request: HttpRequest) -> HttpResponse:
        """The POST of the versions' "Re-score the selected versions" confirmation (templates_registry/admin.py)."""
        if not self.has_rescore_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        ids = request.POST.getlist("version")
        if not ids or not all(pk.isdigit() for pk in ids):
            self.message_user(request, "Select the versions to re-score first.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:templates_registry_variantversion_changelist"))
        try:
            job = jobs.rescore_job_create(version_ids=[int(pk) for pk in ids], created_by=request.user)
        except ServiceError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:templates_registry_variantversion_changelist"))
        return self._started(request, job)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """A job's page: its progress, kept current by job_progress.js while it runs."""
        job = self._viewable(request, object_id)
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "title": str(job), "job": job,
            "progress": job_progress(job), "progress_url": reverse("admin:dispatch_job_progress", args=[job.pk]),
            "poll_milliseconds": POLL_MILLISECONDS,
        }
        return TemplateResponse(request, "admin/dispatch/job/detail.html", context)

    def progress_view(self, request: HttpRequest, object_id: int) -> JsonResponse:
        response = JsonResponse(job_progress(self._viewable(request, str(object_id))))
        response["Cache-Control"] = "no-store"
        return response

    def _viewable(self, request: HttpRequest, object_id: str) -> Job:
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404("no such job")
        return job

    def _started(self, request: HttpRequest, job: Job) -> HttpResponse:
        self.message_user(request, format_html("Started {}: {}.", job, job.summary), messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:dispatch_job_change", args=[job.pk]))

    def _form_page(self, request: HttpRequest, form: forms.Form, title: str, submit: str, *, multipart: bool = False) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "title": title, "form": form, "submit": submit,
            "multipart": multipart,
            "adminform": helpers.AdminForm(form, [(None, {"fields": list(form.fields)})], {}),  # type: ignore[arg-type]  # django-stubs: any Form works
        }
        return TemplateResponse(request, "admin/dispatch/job/form.html", context)


def progress_count(job: Job) -> str:
    return f"{job.done:,} of {job.total:,}"


def job_progress(job: Job) -> dict[str, Any]:
    """What the job's page shows, as its script reads it (``<id>/progress/``)."""
    running = job.state in (JobState.QUEUED, JobState.RUNNING)
    return {
        "state": job.state, "state_label": job.get_state_display(), "running": running,
        "done": job.done, "total": job.total, "count": progress_count(job),
        "percent": int(100 * job.done / job.total) if job.total else 100,
        "summary": job.summary, "problems": list(job.problems), "problem_count": job.problem_count,
        "started": _when(job.started_at), "finished": _when(job.finished_at),
    }


def _when(moment: datetime | None) -> str:
    """As the page's template shows a time (the DATETIME_FORMAT, local time), so an update reads the same."""
    return date_format(localtime(moment), "DATETIME_FORMAT") if moment else "not yet"
