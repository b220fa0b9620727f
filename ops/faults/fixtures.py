"""The run's actors, its approved template, and the campaigns and recipients each scenario makes."""

from __future__ import annotations

from typing import Any

MJML = """<mjml>
  <mj-body>
    <mj-section><mj-column>
      <mj-text>Hello {{ first_name }}, your order {{ order }} is on its way. {{ note }}</mj-text>
      <mj-text><a href="https://example.com/orders">See your orders</a></mj-text>
      <mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
    </mj-column></mj-section>
  </mj-body>
</mjml>"""
VARIABLES = {"first_name": "Ana", "order": "A-100", "note": ""}
HARD_EVERY = 50  # one recipient in 50 is refused for good (550 at RCPT): the sink's standing rule


def actors(run: Any) -> None:
    from django.contrib.auth.models import Group, User

    from access.services import token_create

    for role in ("marketer", "oncall"):
        user = User.objects.create_user(username=f"faults-{role}", password=None)
        user.groups.add(Group.objects.get(name=role))
        run.users[role] = user
        run.tokens[role] = token_create(user=user, name="fault suite", created_by=None)[1]


def version_new(variant: Any, note: str) -> Any:
    from templates_registry import services

    return services.version_create(
        variant=variant, mjml_body=MJML.replace("{{ note }}", note), subject="Your order, {{ first_name }}",
        sender_name="Atelier", preheader="On its way", variables=VARIABLES,
    )  # fmt: skip


def approved_template(run: Any) -> None:
    """Two variants, each approved through the real gate (the machine's spamd scores them once)."""
    from deliverability.assessments import version_assess
    from templates_registry import services

    run.template = services.template_create(slug="faults", name="Fault suite")
    for slug, note in (("a", "Thanks!"), ("b", "Thank you for shopping with us.")):
        variant = services.variant_create(template=run.template, slug=slug, weight=1)
        version = version_new(variant, note)
        assessment = version_assess(version_id=version.pk)
        if assessment is None or assessment.state != "scored":
            raise SystemExit(f"spamd on port {run.spamd_port} could not score the template: {assessment and assessment.not_scored_reason}")
        services.version_approve(version=version, approved_by=run.users["marketer"])


def campaigns(run: Any, scenario: str, domains: int, *, per_domain: int = 1, rate: float = 400.0, burst: int = 100) -> list[Any]:
    """Fresh sending domains for the scenario, ``per_domain`` campaigns on each."""
    from deliverability.services import domain_create
    from dispatch.services.campaigns import campaign_create

    made = []
    for d in range(domains):
        name = f"{scenario.replace('_', '-')}{run.tag}-{d}.faults.example"  # the tag keeps a second pass's domains apart
        domain = domain_create(domain=name, default_sender=f"news@{name}", rate_per_second=rate, burst=burst)
        for c in range(per_domain):
            made.append(
                campaign_create(name=f"{scenario} {d}.{c}", template=run.template, sending_domain=domain, created_by=run.users["marketer"])
            )
    return made


def recipients(tag: str, start: int, count: int) -> list[dict[str, Any]]:
    """Unique addresses ``u<i>-<tag>@...``; every HARD_EVERY-th is ``hard<i>-<tag>`` (550 at the sink)."""
    made = []
    for i in range(start, start + count):
        local = f"hard{i}" if i % HARD_EVERY == HARD_EVERY - 1 else f"u{i}"
        made.append({"address": f"{local}-{tag}@example{i % 3}.org", "context": {"first_name": f"R{i}", "order": f"A-{i}", "note": ""}})
    return made


def index_of(address: str) -> int:
    local = address.partition("@")[0].partition("-")[0]
    return int(local.lstrip("uhard") or -1)


def trigger_all(campaigns_: list[Any], tag: str, total: int, *, chunk: int = 500) -> int:
    """Spread ``total`` recipients over the campaigns through the trigger service; returns how many were accepted."""
    from dispatch.services.triggers import trigger_accept

    accepted, start = 0, 0
    share = -(-total // len(campaigns_))
    for campaign in campaigns_:
        for offset in range(0, share, chunk):
            people = recipients(f"{tag}{campaign.pk}", start + offset, min(chunk, share - offset))
            response, _ = trigger_accept(campaign=campaign, idempotency_key=f"{tag}-{campaign.pk}-{offset}", recipients=people)
            accepted += response["accepted"]
        start += share
    return accepted
