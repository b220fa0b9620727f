"""REST API of the template registry: validate, call a service or selector, serialize.

Product backends and AI generators push versions here (with provenance); any
role may read and preview, and read a version's spam assessment. Marketers and
admins approve, through the same gate as the admin (services.version_approve;
four-eyes: not the version's creator where the template says so), and retire a
version or roll a variant back to one approved before (templates.approve).
Bad input is answered 400 in the project's one error shape
(controlplane.api_errors) and changes nothing: the services validate and
render everything before they write.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.permissions import Capability, CapabilityPermission, user_can
from controlplane.api import (
    JsonObjectField,
    Pagination,
    StrictInputSerializer,
    error_responses,
    get_or_404,
    paginated_response,
)
from templates_registry import selectors, services
from templates_registry.models import AssessmentState, Origin, Template, Variant, VariantVersion, VersionAssessment

TAG = "templates"


_DESCRIBED = {
    400: "Bad input (unknown field, wrong type, template that does not render); nothing was saved.",
    401: "No or invalid token.",
    403: "Your role does not allow this.",
    404: "No such template, variant or version.",
}
_REASON_HELP = "Why: kept in the audit trail."


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return error_responses(_DESCRIBED, *codes)


class RegistryApi(APIView):
    # Common to every registry view: role checks, and registry errors as 400s.
    # (A comment, not a docstring: drf-spectacular would show it on every operation.)

    permission_classes = [CapabilityPermission]
    read_capability = Capability.READ
    write_capability = Capability.TEMPLATES_WRITE


def _template(slug: str) -> Template:
    return get_or_404(Template.objects.all(), f"template {slug!r}", slug=slug)


def _variant(slug: str, variant_slug: str) -> Variant:
    return get_or_404(
        Variant.objects.select_related("template"),
        f"variant {variant_slug!r} of template {slug!r}",
        template__slug=slug,
        slug=variant_slug,
    )


# --- Templates ------------------------------------------------------------------------


class TemplateOutputSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    description = serializers.CharField()
    spam_threshold = serializers.DecimalField(
        max_digits=5, decimal_places=2, help_text="A version scoring at or above this is never approvable."
    )
    four_eyes = serializers.BooleanField(help_text="The creator of a version cannot approve it; another person must.")
    variant_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    class Meta:
        ref_name = "Template"


class TemplateListCreateApi(RegistryApi):
    pagination_class = Pagination

    class InputSerializer(StrictInputSerializer):
        slug = serializers.CharField(help_text="Lowercase letters, digits, - or _ (at most 100).")
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(required=False, allow_blank=True)
        spam_threshold = serializers.DecimalField(max_digits=5, decimal_places=2, required=False)
        four_eyes = serializers.BooleanField(
            required=False, help_text="The creator of a version cannot approve it (true when omitted)."
        )

        class Meta:
            ref_name = "TemplateCreate"

    @extend_schema(
        tags=[TAG],
        operation_id="templates_list",
        description="All templates, by slug, with how many variants each has.",
        responses={200: TemplateOutputSerializer(many=True), **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return paginated_response(self, request, selectors.template_list(), TemplateOutputSerializer)

    @extend_schema(
        tags=[TAG],
        operation_id="templates_create",
        description="Create a template; its variants and versions come next.",
        request=InputSerializer,
        responses={201: TemplateOutputSerializer, **_errors(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data.get("four_eyes") is False and not user_can(request.user, Capability.APPROVAL_POLICY):
            raise PermissionDenied("four_eyes: a template without four-eyes approval is an admin's decision (approval.policy)")
        template = services.template_create(created_by=request.user, **serializer.validated_data)
        template = selectors.template_list().get(pk=template.pk)  # with its variant count
        return Response(TemplateOutputSerializer(template).data, status=status.HTTP_201_CREATED)


class TemplateDetailApi(RegistryApi):
    write_capability = Capability.APPROVAL_POLICY  # the one change: who may approve its versions

    class InputSerializer(StrictInputSerializer):
        four_eyes = serializers.BooleanField(help_text="The creator of a version cannot approve it; another person must.")

        class Meta:
            ref_name = "TemplateUpdate"

    @extend_schema(
        tags=[TAG],
        operation_id="templates_retrieve",
        description="One template.",
        responses={200: TemplateOutputSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        template = get_or_404(selectors.template_list(), f"template {slug!r}", slug=slug)
        return Response(TemplateOutputSerializer(template).data)

    @extend_schema(
        tags=[TAG],
        operation_id="templates_partial_update",
        description=(
            "Turn four-eyes approval on or off (the only field that changes after creation), audited. "
            "Setting the value it has changes nothing."
        ),
        request=InputSerializer,
        responses={200: TemplateOutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def patch(self, request: Request, slug: str) -> Response:
        template = _template(slug)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.template_set_four_eyes(template=template, four_eyes=serializer.validated_data["four_eyes"], actor=request.user)
        return Response(TemplateOutputSerializer(selectors.template_list().get(pk=template.pk)).data)


# --- Variants -------------------------------------------------------------------------


class VariantOutputSerializer(serializers.Serializer):
    template = serializers.SlugField(source="template.slug")
    slug = serializers.SlugField()
    weight = serializers.IntegerField(help_text="Relative share of recipients in an A/B test; 0 takes it out.")
    version_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()

    class Meta:
        ref_name = "Variant"


class VariantListCreateApi(RegistryApi):
    pagination_class = Pagination

    class InputSerializer(StrictInputSerializer):
        slug = serializers.CharField(help_text="Lowercase letters, digits, - or _ (at most 100).")
        weight = serializers.IntegerField(required=False, help_text="0 to 10000; 1 when omitted.")

        class Meta:
            ref_name = "VariantCreate"

    @extend_schema(
        tags=[TAG],
        operation_id="variants_list",
        description="The template's variants (A/B alternatives), by slug.",
        responses={200: VariantOutputSerializer(many=True), **_errors(401, 403, 404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        variants = selectors.variant_list(template=_template(slug)).select_related("template")
        return paginated_response(self, request, variants, VariantOutputSerializer)

    @extend_schema(
        tags=[TAG],
        operation_id="variants_create",
        description="Add a variant to the template.",
        request=InputSerializer,
        responses={201: VariantOutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, slug: str) -> Response:
        template = _template(slug)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        variant = services.variant_create(template=template, created_by=request.user, **serializer.validated_data)
        variant = selectors.variant_list(template=template).select_related("template").get(pk=variant.pk)
        return Response(VariantOutputSerializer(variant).data, status=status.HTTP_201_CREATED)


class VariantDetailApi(RegistryApi):
    @extend_schema(
        tags=[TAG],
        operation_id="variants_retrieve",
        description="One variant of the template.",
        responses={200: VariantOutputSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, slug: str, variant_slug: str) -> Response:
        variants = selectors.variant_list(template=_template(slug)).select_related("template")
        variant = get_or_404(variants, f"variant {variant_slug!r} of template {slug!r}", slug=variant_slug)
        return Response(VariantOutputSerializer(variant).data)


# --- Versions -------------------------------------------------------------------------

_VERSIONS = VariantVersion.objects.select_related("variant__template", "created_by", "approved_by")


class VersionSummaryOutputSerializer(serializers.Serializer):
    """A version without its sources (a list of versions stays small); GET the version for them."""

    id = serializers.IntegerField()
    template = serializers.SlugField(source="variant.template.slug")
    variant = serializers.SlugField(source="variant.slug")
    number = serializers.IntegerField()
    status = serializers.CharField(help_text="draft, scored, approved, rejected or retired.")
    status_changed_at = serializers.DateTimeField(allow_null=True)
    content_hash = serializers.CharField(help_text="SHA-256 of the sources and sample values.")
    subject = serializers.CharField()
    origin = serializers.ChoiceField(choices=Origin.choices)
    generator = serializers.CharField()
    model_name = serializers.CharField()
    prompt_hash = serializers.CharField(help_text="SHA-256 of the prompt (computed when only the prompt is sent).")
    parent = serializers.IntegerField(  # type: ignore[assignment]  # drf-stubs: a declared field, not Field.parent
        source="parent_id", allow_null=True
    )
    created_by = serializers.CharField(source="created_by.username", allow_null=True)
    created_at = serializers.DateTimeField()
    approved_by = serializers.CharField(source="approved_by.username", allow_null=True)
    approved_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "VersionSummary"


class VersionOutputSerializer(VersionSummaryOutputSerializer):
    mjml_body = serializers.CharField()
    sender_name = serializers.CharField()
    preheader = serializers.CharField()
    text_body = serializers.CharField()
    variables = serializers.DictField(help_text="Declared variables with their sample values.")
    prompt = serializers.CharField()
    generation_params = serializers.DictField()

    class Meta:
        ref_name = "Version"


class VersionListCreateApi(RegistryApi):
    pagination_class = Pagination

    class InputSerializer(StrictInputSerializer):
        # Sources are stored exactly as sent: they make up the content hash.
        mjml_body = serializers.CharField(trim_whitespace=False)
        subject = serializers.CharField(max_length=998, trim_whitespace=False)
        sender_name = serializers.CharField(max_length=200, required=False, allow_blank=True, trim_whitespace=False)
        preheader = serializers.CharField(max_length=500, required=False, allow_blank=True, trim_whitespace=False)
        text_body = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
        variables = JsonObjectField(
            required=False, help_text="Every variable the sources read, with a sample value for previews and scoring."
        )
        origin = serializers.ChoiceField(choices=Origin.choices, required=False)
        generator = serializers.CharField(
            max_length=200, required=False, allow_blank=True, help_text="Required when origin is ai."
        )
        model_name = serializers.CharField(
            max_length=200, required=False, allow_blank=True, help_text="Required when origin is ai."
        )
        prompt = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
        prompt_hash = serializers.CharField(
            max_length=64,
            required=False,
            allow_blank=True,
            help_text=(
                "Lowercase hex SHA-256 of the prompt; computed from prompt when omitted, checked when both are sent."
            ),
        )
        generation_params = JsonObjectField(required=False)
        parent = serializers.PrimaryKeyRelatedField(  # type: ignore[assignment]  # drf-stubs: a declared field, not Field.parent
            queryset=VariantVersion.objects.select_related("variant"),
            required=False,
            allow_null=True,
            help_text="Id of the version this one was derived from (same template).",
        )

        class Meta:
            ref_name = "VersionCreate"

    @extend_schema(
        tags=[TAG],
        operation_id="versions_list",
        description="The variant's versions, newest first, without their sources.",
        responses={200: VersionSummaryOutputSerializer(many=True), **_errors(401, 403, 404)},
    )
    def get(self, request: Request, slug: str, variant_slug: str) -> Response:
        versions = selectors.version_list(variant=_variant(slug, variant_slug)).select_related(
            "variant__template", "created_by", "approved_by"
        )
        return paginated_response(self, request, versions, VersionSummaryOutputSerializer)

    @extend_schema(
        tags=[TAG],
        operation_id="versions_create",
        description=(
            "Push a new version, with its provenance when an AI generator made it. It is saved only if "
            "every source renders in the sandbox with the sample values; it starts as a draft."
        ),
        request=InputSerializer,
        responses={201: VersionOutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, slug: str, variant_slug: str) -> Response:
        variant = _variant(slug, variant_slug)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        version = services.version_create(variant=variant, created_by=request.user, **serializer.validated_data)
        return Response(VersionOutputSerializer(_VERSIONS.get(pk=version.pk)).data, status=status.HTTP_201_CREATED)


class VersionDetailApi(RegistryApi):
    @extend_schema(
        tags=[TAG],
        operation_id="versions_retrieve",
        description="One version, with its sources, sample values and provenance.",
        responses={200: VersionOutputSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, version_id: int) -> Response:
        version = get_or_404(_VERSIONS, f"version {version_id}", pk=version_id)
        return Response(VersionOutputSerializer(version).data)


class VersionPreviewApi(RegistryApi):
    write_capability = Capability.READ  # a preview renders and saves nothing: a read, whatever the method

    class InputSerializer(StrictInputSerializer):
        context = JsonObjectField(  # type: ignore[assignment]  # drf-stubs: a declared field, not Field.context
            required=False, help_text="Variables to render with; the version's sample values when omitted."
        )

        class Meta:
            ref_name = "VersionPreview"

    class OutputSerializer(serializers.Serializer):
        subject = serializers.CharField()
        sender_name = serializers.CharField()
        preheader = serializers.CharField()
        html = serializers.CharField()
        text = serializers.CharField()

        class Meta:
            ref_name = "RenderedMessage"

    @extend_schema(
        tags=[TAG],
        operation_id="versions_preview",
        description=(
            "Render the version as a recipient would get it, through the same sandboxed path dispatch uses. "
            "A context that does not fit (undefined variable, sandbox limit, line break in a header) is a 400."
        ),
        request=InputSerializer,
        responses={200: OutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = get_or_404(VariantVersion.objects.all(), f"version {version_id}", pk=version_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rendered = selectors.version_render(version=version, context=serializer.validated_data.get("context"))
        return Response(self.OutputSerializer(rendered).data)


# --- Approval -------------------------------------------------------------------------


class VersionApproveApi(RegistryApi):
    write_capability = Capability.TEMPLATES_APPROVE

    @extend_schema(
        tags=[TAG],
        operation_id="versions_approve",
        description=(
            "Approve the version for sending, recording who and when. The gate: it renders with its sample "
            "values, passed every blocking pre-send check, and spamd scored it under its template's threshold "
            "(not scored is never a pass); on a template with four_eyes, the caller is not the version's creator "
            "(the user whose token pushed it). Refused with the gate's one-line reason as a 400, changing nothing. "
            "Approving an approved version changes nothing; a retired one is made live again by a rollback."
        ),
        request=None,
        responses={200: VersionOutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = get_or_404(_VERSIONS, f"version {version_id}", pk=version_id)
        services.version_approve(version=version, approved_by=request.user)
        return Response(VersionOutputSerializer(_VERSIONS.get(pk=version.pk)).data)


class VersionRetireApi(RegistryApi):
    write_capability = Capability.TEMPLATES_APPROVE

    class InputSerializer(StrictInputSerializer):
        reason = serializers.CharField(max_length=1000, help_text=_REASON_HELP)

        class Meta:
            ref_name = "VersionRetire"

    @extend_schema(
        tags=[TAG],
        operation_id="versions_retire",
        description=(
            "Retire an approved version: new triggers never send it (the variant's newest approved version left, "
            "if any, is live instead; none: the variant leaves the rotation). Messages already queued with it still "
            "send as queued; pause the campaign to stop them. Audited as version.retire. Anything but an approved "
            "version is a 400, changing nothing."
        ),
        request=InputSerializer,
        responses={200: VersionOutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = get_or_404(_VERSIONS, f"version {version_id}", pk=version_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.version_retire(version=version, actor=request.user, reason=serializer.validated_data["reason"])
        return Response(VersionOutputSerializer(_VERSIONS.get(pk=version.pk)).data)


class VariantRollbackApi(RegistryApi):
    write_capability = Capability.TEMPLATES_APPROVE

    class InputSerializer(StrictInputSerializer):
        to_version = serializers.IntegerField(min_value=1, help_text="The number (v<n>) of a version of this variant approved before.")
        reason = serializers.CharField(max_length=1000, help_text=_REASON_HELP)

        class Meta:
            ref_name = "VariantRollback"

    class OutputSerializer(serializers.Serializer):
        live = VersionSummaryOutputSerializer(help_text="The version new triggers send now.")
        retired = serializers.ListField(
            child=serializers.IntegerField(), help_text="Numbers of the versions this retired, newest first."
        )

        class Meta:
            ref_name = "VariantRollbackResult"

    @extend_schema(
        tags=[TAG],
        operation_id="variants_rollback",
        description=(
            "Make an earlier version, approved before (now retired, or approved but not live), the variant's live "
            "version in one step: every approved version newer than it is retired, and it is approved again, with no "
            "new version and no edit. It must still pass the gate's reading of its content (renders, pre-send checks, "
            "score under today's threshold). A version never approved, rejected, or already live is a 400, changing "
            "nothing. Audited as version.rollback (from, to) and one version.retire per retired version."
        ),
        request=InputSerializer,
        responses={200: OutputSerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, slug: str, variant_slug: str) -> Response:
        variant = _variant(slug, variant_slug)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        number = serializer.validated_data["to_version"]
        to_version = get_or_404(_VERSIONS, f"version {number} of {variant}", variant=variant, number=number)
        rollback = services.version_rollback(
            variant=variant, to_version=to_version, actor=request.user, reason=serializer.validated_data["reason"]
        )
        body = {"live": _VERSIONS.get(pk=rollback.live.pk), "retired": [version.number for version in rollback.retired]}
        return Response(self.OutputSerializer(body).data)


class SpamRuleOutputSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="SpamAssassin rule name, e.g. HTML_MESSAGE.")
    points = serializers.FloatField()
    description = serializers.CharField()

    class Meta:
        ref_name = "SpamRule"


class PreSendCheckOutputSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Stable id of the check, e.g. unsubscribe_link.")
    passed = serializers.BooleanField()
    blocking = serializers.BooleanField(help_text="A failed blocking check makes the version not approvable.")
    message = serializers.CharField()

    class Meta:
        ref_name = "PreSendCheck"


_ASSESSMENT_FIELDS = (
    "state",
    "score",
    "spamd_threshold",
    "rules",
    "checks",
    "spamd_version",
    "duration_ms",
    "from_cache",
    "not_scored_reason",
    "attempts",
    "next_attempt_at",
    "scored_at",
)


class VersionAssessmentApi(RegistryApi):
    class OutputSerializer(serializers.Serializer):
        version = serializers.IntegerField()
        state = serializers.ChoiceField(
            choices=AssessmentState.choices, help_text="pending (not scored yet), scored, or not_scored (spamd down)."
        )
        score = serializers.FloatField(allow_null=True, help_text="SpamAssassin points; null until scored.")
        threshold = serializers.DecimalField(
            max_digits=5, decimal_places=2, help_text="The template's threshold: approvable only under it."
        )
        spamd_threshold = serializers.FloatField(
            allow_null=True, help_text="spamd's own required score, for reference; the template's threshold decides."
        )
        rules = SpamRuleOutputSerializer(many=True)
        checks = PreSendCheckOutputSerializer(many=True)
        spamd_version = serializers.CharField()
        duration_ms = serializers.FloatField(allow_null=True)
        from_cache = serializers.BooleanField(help_text="Copied from a version with the same content hash.")
        not_scored_reason = serializers.CharField(help_text="Why spamd could not score it; empty otherwise.")
        attempts = serializers.IntegerField(help_text="Failed scoring attempts so far.")
        next_attempt_at = serializers.DateTimeField(allow_null=True)
        scored_at = serializers.DateTimeField(allow_null=True)
        approvable = serializers.BooleanField(help_text="Whether the caller could approve it now.")
        approvable_reason = serializers.CharField(
            allow_null=True, help_text="Why it cannot be approved; null when it can."
        )

        class Meta:
            ref_name = "VersionAssessment"

    @extend_schema(
        tags=[TAG],
        operation_id="versions_assessment",
        description=(
            "The version's spam sandbox result: pre-send checks, spam score with the SpamAssassin rules hit, and "
            "whether the approval gate would pass it (and if not, why). A version not assessed yet is pending."
        ),
        responses={200: OutputSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, version_id: int) -> Response:
        version = get_or_404(_VERSIONS, f"version {version_id}", pk=version_id)
        # An unsaved row stands for "not assessed yet": its defaults are what pending means.
        assessment = VersionAssessment.objects.filter(version=version).first() or VersionAssessment(version=version)
        reason = services.version_approvable(version=version, approver=request.user)
        body = {name: getattr(assessment, name) for name in _ASSESSMENT_FIELDS} | {
            "version": version.pk,
            "threshold": version.variant.template.spam_threshold,
            "approvable": reason is None,
            "approvable_reason": reason,
        }
        return Response(self.OutputSerializer(body).data)


__all__ = [
    "TemplateDetailApi",
    "TemplateListCreateApi",
    "VariantDetailApi",
    "VariantListCreateApi",
    "VariantRollbackApi",
    "VersionApproveApi",
    "VersionAssessmentApi",
    "VersionDetailApi",
    "VersionListCreateApi",
    "VersionPreviewApi",
    "VersionRetireApi",
]
