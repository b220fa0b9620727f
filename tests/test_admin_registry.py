"""The registry admin: marketers browse, preview, diff and add versions; oncall only looks."""

from __future__ import annotations

import json
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from templates_registry import services
from templates_registry.models import Origin, Template, Variant, VariantVersion
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES

MJML_TEXT = "<mjml><mj-body><mj-section><mj-column><mj-text>{}</mj-text></mj-column></mj-section></mj-body></mjml>"


def _url(name: str, *args: Any) -> str:
    return reverse(f"admin:templates_registry_{name}", args=args)


@pytest.fixture
def as_marketer(staff_client: Callable[[User], Client], marketer: User) -> Client:
    return staff_client(marketer)


def _version_form(variant: Variant, **changes: Any) -> dict[str, Any]:
    form = {
        "variant": variant.pk,
        "subject": "Hello {{ first_name }}",
        "sender_name": "Atelier",
        "preheader": "",
        "mjml_body": SIMPLE_MJML,
        "text_body": "",
        "variables": json.dumps(SIMPLE_VARIABLES),
    }
    return {**form, **changes}


def _derive_form(version: VariantVersion, **changes: Any) -> dict[str, Any]:
    form = {name: getattr(version, name) for name in ("subject", "sender_name", "preheader", "mjml_body", "text_body")}
    return {**form, "variables": json.dumps(version.variables), **changes}


class _Iframes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "iframe":
            self.found.append(dict(attrs))


def _iframes(html: str) -> list[dict[str, str | None]]:
    parser = _Iframes()
    parser.feed(html)
    return parser.found


# --- Browsing --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["template", "variant", "variantversion"])
def test_marketer_sees_each_registry_changelist(as_marketer: Client, version: VariantVersion, model: str) -> None:
    response = as_marketer.get(_url(f"{model}_changelist"))

    assert response.status_code == 200
    assert "welcome" in response.content.decode()


def test_version_changelist_links_preview_and_diff(as_marketer: Client, version: VariantVersion) -> None:
    page = as_marketer.get(_url("variantversion_changelist")).content.decode()

    assert _url("variantversion_preview", version.pk) in page
    assert _url("variantversion_diff", version.pk) in page


def test_version_changelist_filters_by_status_and_searches_template_slug(
    as_marketer: Client, version: VariantVersion
) -> None:
    changelist = _url("variantversion_changelist")

    drafts_by_people = {"status__exact": "draft", "origin__exact": "human"}
    assert str(version) in as_marketer.get(changelist, drafts_by_people).content.decode()
    assert str(version) not in as_marketer.get(changelist, {"status__exact": "approved"}).content.decode()
    assert str(version) in as_marketer.get(changelist, {"q": "welcome"}).content.decode()
    assert str(version) not in as_marketer.get(changelist, {"q": "no-such-template"}).content.decode()


def test_template_page_lists_its_variants_with_links_to_their_versions(
    as_marketer: Client, version: VariantVersion
) -> None:
    page = as_marketer.get(_url("template_change", version.variant.template_id)).content.decode()

    assert _url("variant_change", version.variant_id) in page
    assert f"{_url('variantversion_changelist')}?variant__id__exact={version.variant_id}" in page


# --- Preview ---------------------------------------------------------------------------


def test_preview_shows_the_rendered_headers_and_text(as_marketer: Client, version: VariantVersion) -> None:
    response = as_marketer.get(_url("variantversion_preview", version.pk))
    page = response.content.decode()

    assert response.status_code == 200
    assert '<td class="sp-subject">Hi Ana</td>' in page
    assert '<td class="sp-sender">Atelier</td>' in page
    assert '<td class="sp-preheader">Two picks for Ana</td>' in page
    assert "1. Hat" in page.split('<pre class="sp-text">', 1)[1].split("</pre>", 1)[0]


def test_preview_puts_the_html_in_two_sandboxed_srcdoc_iframes(as_marketer: Client, version: VariantVersion) -> None:
    page = as_marketer.get(_url("variantversion_preview", version.pk)).content.decode()
    frames = _iframes(page)

    assert [frame["class"] for frame in frames] == ["sp-desktop", "sp-mobile"]
    for frame in frames:
        assert frame["sandbox"] == ""  # present and empty: no scripts, opaque origin
        assert "Hello Ana" in (frame["srcdoc"] or "")
        assert "<body" in (frame["srcdoc"] or "")
    # The message's own <body> is escaped into the attribute, never live in the admin page.
    assert page.count("<body") == 1


def test_preview_of_a_version_that_no_longer_renders_shows_the_one_line_error(
    as_marketer: Client, variant: Variant
) -> None:
    # Written past the service on purpose: stands for a version stored before a rule tightened.
    broken = VariantVersion.objects.create(
        variant=variant, number=1, mjml_body=MJML_TEXT.format("{% if %}"), subject="Hi", content_hash="0" * 64
    )

    response = as_marketer.get(_url("variantversion_preview", broken.pk))
    page = response.content.decode()

    assert response.status_code == 200
    assert '<p class="errornote">mjml_body: Jinja syntax error:' in page
    assert "Traceback" not in page
    assert "<iframe" not in page


# --- Adding a version --------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["marketer", "admin_role"])
def test_add_form_creates_the_next_numbered_version(
    request: pytest.FixtureRequest, staff_client: Callable[[User], Client], version: VariantVersion, writer: str
) -> None:
    user = request.getfixturevalue(writer)

    response = staff_client(user).post(_url("variantversion_add"), _version_form(version.variant))

    assert response.status_code == 302
    created = VariantVersion.objects.get(variant=version.variant, number=2)
    assert (created.subject, created.created_by, created.origin, created.parent) == (
        "Hello {{ first_name }}",
        user,
        Origin.HUMAN,
        None,
    )
    assert created.content_hash == services.content_hash(created.content())
    assert LogEntry.objects.filter(object_id=str(created.pk)).exists()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        # On its field the error goes without the field's name (the label says it): "MJML error ...", not "mjml_body: ...".
        ({"mjml_body": "<mjml><mj-body><mj-section>"}, "mjml_body", "MJML error"),
        ({"mjml_body": MJML_TEXT.format("{% if %}")}, "mjml_body", "Jinja syntax error"),
        ({"mjml_body": MJML_TEXT.format("{{ last_name }}")}, "mjml_body", "undeclared variable 'last_name'"),
        ({"subject": "Hi {{ nickname }}"}, "subject", "undeclared variable 'nickname'"),
        ({"mjml_body": MJML_TEXT.format("{{ ''.__class__ }}")}, "mjml_body", "sandbox violation"),
        ({"variables": '{"first_name": "Ana",'}, "variables", "Enter the sample values as a JSON object"),
        ({"variables": '["Ana"]'}, "variables", "Sample values must be a JSON object"),
    ],
    ids=["mjml", "jinja", "undeclared-body", "undeclared-subject", "sandbox", "bad-json", "json-not-object"],
)
def test_add_form_shows_the_problem_on_its_field_and_saves_nothing(
    as_marketer: Client, variant: Variant, changes: dict[str, str], field: str, message: str
) -> None:
    response = as_marketer.post(_url("variantversion_add"), _version_form(variant, **changes))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert message.replace("'", "&#x27;") in response.content.decode()
    assert not VariantVersion.objects.exists()


def test_add_form_treats_empty_variables_as_none_declared(as_marketer: Client, variant: Variant) -> None:
    form = _version_form(variant, mjml_body=MJML_TEXT.format("Plain"), subject="News", variables="")

    assert as_marketer.post(_url("variantversion_add"), form).status_code == 302
    assert VariantVersion.objects.get().variables == {}


# --- Existing versions are immutable -----------------------------------------------------


def test_version_change_page_is_read_only(as_marketer: Client, version: VariantVersion) -> None:
    page = as_marketer.get(_url("variantversion_change", version.pk)).content.decode()

    assert 'name="mjml_body"' not in page
    assert 'name="subject"' not in page
    assert 'name="_save"' not in page
    assert _url("variantversion_derive", version.pk) in page
    assert _url("variantversion_preview", version.pk) in page


def test_posting_to_a_version_change_page_changes_nothing(as_marketer: Client, version: VariantVersion) -> None:
    form = _version_form(version.variant, subject="Tampered", status="approved")

    response = as_marketer.post(_url("variantversion_change", version.pk), form)

    assert response.status_code == 403
    version.refresh_from_db()
    assert (version.subject, version.status) == ("Hi {{ first_name }}", "draft")


def test_versions_cannot_be_deleted_in_the_admin(as_marketer: Client, version: VariantVersion) -> None:
    response = as_marketer.post(_url("variantversion_delete", version.pk), {"post": "yes"})

    assert response.status_code == 403
    assert VariantVersion.objects.filter(pk=version.pk).exists()


# --- New version from an old one --------------------------------------------------------


def test_derive_form_starts_from_the_source_content(as_marketer: Client, version: VariantVersion) -> None:
    response = as_marketer.get(_url("variantversion_derive", version.pk))

    assert response.status_code == 200
    form = response.context["form"]
    assert form["subject"].value() == "Hi {{ first_name }}"
    assert form["mjml_body"].value() == SIMPLE_MJML
    assert json.loads(form["variables"].value()) == SIMPLE_VARIABLES


def test_derive_creates_the_next_version_with_the_source_as_parent(
    as_marketer: Client, marketer: User, version: VariantVersion
) -> None:
    response = as_marketer.post(_url("variantversion_derive", version.pk), _derive_form(version, subject="Ciao"))

    derived = VariantVersion.objects.get(variant=version.variant, number=2)
    assert response.status_code == 302
    assert response["Location"] == _url("variantversion_change", derived.pk)
    assert (derived.subject, derived.parent, derived.created_by) == ("Ciao", version, marketer)
    assert (derived.mjml_body, derived.variables) == (version.mjml_body, version.variables)


def test_derive_keeps_sources_whose_browser_line_ends_changed_only(
    as_marketer: Client, version: VariantVersion
) -> None:
    form = _derive_form(version, subject="Ciao", mjml_body=version.mjml_body.replace("\n", "\r\n"))

    as_marketer.post(_url("variantversion_derive", version.pk), form)

    assert VariantVersion.objects.get(number=2).mjml_body == version.mjml_body


def test_derive_with_a_template_error_shows_it_and_saves_nothing(as_marketer: Client, version: VariantVersion) -> None:
    form = _derive_form(version, mjml_body=SIMPLE_MJML.replace("first_name", "surname"))

    response = as_marketer.post(_url("variantversion_derive", version.pk), form)

    assert response.status_code == 200
    assert "undeclared variable 'surname'" in response.context["form"].errors["mjml_body"][0]
    assert "Nothing was saved" in response.content.decode()
    assert VariantVersion.objects.count() == 1


def test_derive_without_a_change_is_refused(as_marketer: Client, version: VariantVersion) -> None:
    response = as_marketer.post(_url("variantversion_derive", version.pk), _derive_form(version))

    assert response.status_code == 200
    assert "nothing changed from v1" in response.content.decode()
    assert VariantVersion.objects.count() == 1


# --- Diff ------------------------------------------------------------------------------


def test_diff_defaults_to_the_parent_and_colours_changed_lines(as_marketer: Client, version: VariantVersion) -> None:
    derived = services.version_derive(source=version, subject="Hello {{ first_name }}")

    page = as_marketer.get(_url("variantversion_diff", derived.pk)).content.decode()

    assert '<h2 class="sp-field">subject</h2>' in page
    assert '<h2 class="sp-field">mjml_body</h2>' not in page
    assert '<div class="diff-del">-Hi {{ first_name }}</div>' in page
    assert '<div class="diff-add">+Hello {{ first_name }}</div>' in page


def test_diff_without_a_parent_compares_with_the_previous_number(as_marketer: Client, version: VariantVersion) -> None:
    second = services.version_create(
        variant=version.variant, mjml_body=SIMPLE_MJML, subject="Hi {{ first_name }}!", variables=SIMPLE_VARIABLES
    )

    response = as_marketer.get(_url("variantversion_diff", second.pk))

    assert response.context["against"] == version
    assert '<div class="diff-add">+Hi {{ first_name }}!</div>' in response.content.decode()


def test_diff_against_a_chosen_version(as_marketer: Client, version: VariantVersion) -> None:
    second = services.version_derive(source=version, sender_name="Atelier Team")
    third = services.version_derive(source=second, preheader="Picked for you")

    page = as_marketer.get(_url("variantversion_diff", third.pk), {"against": version.pk}).content.decode()

    assert '<h2 class="sp-field">sender_name</h2>' in page
    assert '<h2 class="sp-field">preheader</h2>' in page


def test_diff_of_a_first_version_says_there_is_nothing_to_compare(
    as_marketer: Client, version: VariantVersion
) -> None:
    page = as_marketer.get(_url("variantversion_diff", version.pk)).content.decode()

    assert "no earlier version" in page


def test_diff_against_garbage_is_not_found(as_marketer: Client, version: VariantVersion) -> None:
    assert as_marketer.get(_url("variantversion_diff", version.pk), {"against": "x"}).status_code == 404


# --- Templates and variants go through services --------------------------------------------


def test_template_add_goes_through_the_service(as_marketer: Client) -> None:
    form = {"slug": "winback", "name": "  Win back ", "description": "", "spam_threshold": "4.5"}

    assert as_marketer.post(_url("template_add"), form).status_code == 302
    assert Template.objects.get(slug="winback").name == "Win back"  # the service strips it


def test_template_add_shows_the_service_error(as_marketer: Client) -> None:
    form = {"slug": "Winback", "name": "Win back", "description": "", "spam_threshold": "5"}

    response = as_marketer.post(_url("template_add"), form)

    assert "must be lowercase letters" in response.context["adminform"].form.errors["slug"][0]
    assert not Template.objects.exists()


def test_variant_add_and_weight_change_go_through_services(as_marketer: Client, template: Template) -> None:
    as_marketer.post(_url("variant_add"), {"template": template.pk, "slug": "b", "weight": 3})
    variant = Variant.objects.get(template=template, slug="b")

    as_marketer.post(_url("variant_change", variant.pk), {"weight": 7, "slug": "renamed"})

    variant.refresh_from_db()
    assert (variant.slug, variant.weight) == ("b", 7)


# --- Who may do what ----------------------------------------------------------------------


def test_oncall_can_look_at_everything(
    staff_client: Callable[[User], Client], oncall: User, version: VariantVersion
) -> None:
    client = staff_client(oncall)

    for url in (
        _url("template_changelist"),
        _url("variant_changelist"),
        _url("variantversion_changelist"),
        _url("variantversion_change", version.pk),
        _url("variantversion_preview", version.pk),
        _url("variantversion_diff", version.pk),
    ):
        assert client.get(url).status_code == 200, url
    change_page = client.get(_url("variantversion_change", version.pk)).content.decode()
    assert _url("variantversion_derive", version.pk) not in change_page


def test_oncall_cannot_add_anything(
    staff_client: Callable[[User], Client], oncall: User, version: VariantVersion
) -> None:
    client = staff_client(oncall)

    assert client.get(_url("variantversion_add")).status_code == 403
    assert client.post(_url("variantversion_add"), _version_form(version.variant)).status_code == 403
    assert client.get(_url("variantversion_derive", version.pk)).status_code == 403
    derive = _derive_form(version, subject="x")
    assert client.post(_url("variantversion_derive", version.pk), derive).status_code == 403
    assert client.post(_url("template_add"), {"slug": "x", "name": "X", "spam_threshold": "5"}).status_code == 403
    assert client.post(_url("variant_change", version.variant_id), {"weight": 9}).status_code == 403
    assert VariantVersion.objects.count() == 1
    assert not Template.objects.filter(slug="x").exists()


def test_staff_outsider_without_a_role_is_refused(
    staff_client: Callable[[User], Client], outsider: User, version: VariantVersion
) -> None:
    client = staff_client(outsider)

    assert client.get(_url("variantversion_changelist")).status_code == 403
    assert client.get(_url("variantversion_preview", version.pk)).status_code == 403
    assert client.get(_url("variantversion_add")).status_code == 403
    assert client.post(_url("variantversion_add"), _version_form(version.variant)).status_code == 403
    assert client.get(_url("variantversion_derive", version.pk)).status_code == 403
    assert VariantVersion.objects.count() == 1


def test_marketer_who_is_not_staff_is_sent_to_the_login_page(marketer: User, version: VariantVersion) -> None:
    client = Client()
    client.force_login(marketer)

    response = client.get(_url("variantversion_preview", version.pk))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
