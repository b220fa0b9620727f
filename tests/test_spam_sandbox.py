"""Issue 4 acceptance: the spam sandbox against the real spamd.

ops/test starts the shared spamd on 127.0.0.1:783; the "spamd stopped mid-run"
test starts a private one of its own on a free port and kills only that one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from email import policy
from email.parser import BytesParser
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from deliverability import tasks
from deliverability.assessments import (
    SANDBOX_RECIPIENT,
    sandbox_message,
    version_assess,
)
from templates_registry import services
from templates_registry.models import (
    AssessmentState,
    Variant,
    VariantVersion,
    VersionAssessment,
    VersionStatus,
)
from templates_registry.rendering import compile_version
from templates_registry.services import RegistryError
from tests.conftest import SIMPLE_MJML, SIMPLE_VARIABLES

# What a careless generator writes: shouting, money claims, a raw-IP link, no unsubscribe link.
BAD_AI_MJML = """<mjml><mj-body>
  <mj-section><mj-column>
    <mj-text font-size="28px" color="#ff0000"><b>FREE!!! FREE!!! ACT NOW {{ first_name }}!!!</b></mj-text>
    <mj-text>EARN $5,000 A WEEK FROM HOME!!! 100% GUARANTEED!!! NO RISK, NO CATCH, CASH BONUS!!!</mj-text>
    <mj-text>Dear friend, this is NOT SPAM. You have been SELECTED to receive a FREE GIFT.
      Limited time offer, order now, click below while supplies last!!!</mj-text>
    <mj-button href="http://192.0.2.7/claim">CLICK HERE TO CLAIM YOUR $$$ NOW!!!</mj-button>
  </mj-column></mj-section>
</mj-body></mjml>"""
BAD_AI_SUBJECT = "FREE!!! EARN $5,000 A WEEK - 100% GUARANTEED!!!"

# Spammy words only: every blocking pre-send check passes, so only the score can refuse it.
SPAMMY_BUT_TIDY_MJML = """<mjml><mj-body>
  <mj-section><mj-column>
    <mj-text>Dear friend, {{ first_name }}, this offer is 100% guaranteed and completely risk free.</mj-text>
    <mj-text>Earn extra cash from home, no experience needed. Act now, this is not spam.</mj-text>
    <mj-text><a href="https://example.com/offer">See the offer</a></mj-text>
    <mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
  </mj-column></mj-section>
</mj-body></mjml>"""


def _other_content(n: int) -> dict[str, Any]:
    """Distinct clean content: SIMPLE_MJML with its own subject and items."""
    return {
        "mjml_body": SIMPLE_MJML,
        "subject": f"Hi {{{{ first_name }}}}, picks no. {n}",
        "sender_name": "Atelier",
        "variables": {**SIMPLE_VARIABLES, "items": [f"Hat {n}", f"Scarf {n}"]},
    }


def _approved_count() -> int:
    return VariantVersion.objects.filter(status=VersionStatus.APPROVED).count()


# --- (1) bad AI output scores worse than the clean version and is not approvable -------------


def test_bad_ai_version_scores_worse_than_clean_and_is_not_approvable(
    version: VariantVersion, variant: Variant, marketer: User
) -> None:
    bad = services.version_create(
        variant=variant, mjml_body=BAD_AI_MJML, subject=BAD_AI_SUBJECT, sender_name="WINNER",
        variables={"first_name": "Ana"}, origin="ai", generator="copy-lab", model_name="example-llm", prompt="make it pop",
    )
    clean_assessment = version_assess(version_id=version.pk)
    bad_assessment = version_assess(version_id=bad.pk)
    assert clean_assessment is not None and bad_assessment is not None
    assert clean_assessment.state == bad_assessment.state == AssessmentState.SCORED
    threshold = float(variant.template.spam_threshold)
    print(f"\nclean version: {clean_assessment.score:g}; bad AI version: {bad_assessment.score:g} "
          f"(threshold {threshold:g}); bad rules: {', '.join(r['name'] for r in bad_assessment.rules)}")

    assert bad_assessment.score > clean_assessment.score
    assert bad_assessment.score >= threshold
    assert not bad_assessment.from_cache and bad_assessment.spamd_version.startswith("4.")
    assert bad_assessment.rules and all({"name", "points", "description"} <= set(r) for r in bad_assessment.rules)
    failed = {c["name"] for c in bad_assessment.blocking_failures}
    assert {"unsubscribe_link", "link_ip", "subject_caps"} <= failed

    bad.refresh_from_db()
    assert services.version_approvable(version=bad) is not None
    with pytest.raises(RegistryError) as refused:
        services.version_approve(version=bad, approved_by=marketer)
    assert refused.value.field == "status"
    bad.refresh_from_db()
    assert bad.status != VersionStatus.APPROVED and bad.approved_at is None

    # The clean one goes through the same gate.
    version.refresh_from_db()
    assert clean_assessment.score < threshold
    assert services.version_approvable(version=version) is None
    assert services.version_approve(version=version, approved_by=marketer).status == VersionStatus.APPROVED


def test_version_over_threshold_is_refused_for_its_score_alone(variant: Variant, marketer: User) -> None:
    spammy = services.version_create(
        variant=variant, mjml_body=SPAMMY_BUT_TIDY_MJML, subject="A note for {{ first_name }}",
        sender_name="Atelier", variables={"first_name": "Ana"},
    )
    assessment = version_assess(version_id=spammy.pk)
    assert assessment is not None and assessment.state == AssessmentState.SCORED
    assert assessment.blocking_failures == []
    threshold = float(variant.template.spam_threshold)
    assert assessment.score >= threshold, [(r["name"], r["points"]) for r in assessment.rules]

    reason = services.version_approvable(version=spammy)
    assert reason is not None and "spam score" in reason and f"{threshold:g}" in reason
    with pytest.raises(RegistryError, match="spam score"):
        services.version_approve(version=spammy, approved_by=marketer)
    assert _approved_count() == 0


# --- (2) identical content is scored once ------------------------------------------------------


def test_identical_content_is_scored_once(version: VariantVersion, template: Any, settings: Any) -> None:
    other_variant = services.variant_create(template=template, slug="b", weight=1)
    twin = services.version_create(
        variant=other_variant, mjml_body=version.mjml_body, subject=version.subject, sender_name=version.sender_name,
        preheader=version.preheader, variables=version.variables,
    )
    assert twin.content_hash == version.content_hash

    first = version_assess(version_id=version.pk)
    assert first is not None and first.state == AssessmentState.SCORED and not first.from_cache

    # spamd is not asked again: pointed at a port where nothing listens, the twin is still scored.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        settings.SPAMD_PORT = sock.getsockname()[1]
    second = version_assess(version_id=twin.pk)
    assert second is not None and second.state == AssessmentState.SCORED
    assert second.from_cache is True
    assert (second.score, second.spamd_threshold, second.rules, second.spamd_version) == (
        first.score, first.spamd_threshold, first.rules, first.spamd_version,
    )
    assert second.content_hash == first.content_hash
    assert VersionAssessment.objects.filter(content_hash=version.content_hash, from_cache=False).count() == 1


# --- (3) spamd stopped mid-run -----------------------------------------------------------------


class PrivateSpamd:
    """A spamd of this test's own, in the foreground, in its own process group (parent and children)."""

    def __init__(self, log_dir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        log = open(self.log_dir / f"spamd-{self.starts}.log", "wb")  # noqa: SIM115 (the child writes to it)
        self.process = subprocess.Popen(
            ["spamd", "-L", "-i", "127.0.0.1", "-p", str(self.port), "-m", "1", "-s", "stderr"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            ping = subprocess.run(["spamc", "-p", str(self.port), "-K"], check=False, stdin=subprocess.DEVNULL, capture_output=True)
            if ping.returncode == 0:
                return
            time.sleep(0.5)
        log_text = (self.log_dir / f"spamd-{self.starts}.log").read_text(errors="replace")[-2000:]
        self.stop()
        pytest.fail(f"private spamd did not answer on 127.0.0.1:{self.port} within {timeout:g} s:\n{log_text}")

    def stop(self) -> None:
        """SIGTERM to the group (spamd ends its children), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        pgid = process.pid  # start_new_session: the group id is spamd's own pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
        try:  # children that outlived their parent
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def private_spamd(tmp_path: Path) -> Any:
    spamd = PrivateSpamd(tmp_path)
    try:
        yield spamd
    finally:
        spamd.stop()


def test_spamd_stopped_mid_run_is_not_scored_then_retried(
    version: VariantVersion, variant: Variant, marketer: User, private_spamd: PrivateSpamd, settings: Any
) -> None:
    private_spamd.start()
    settings.SPAMD_PORT = private_spamd.port

    first = version_assess(version_id=version.pk)
    assert first is not None and first.state == AssessmentState.SCORED, first and first.not_scored_reason

    private_spamd.stop()
    later = [services.version_create(variant=variant, **_other_content(n)) for n in (1, 2)]
    for pending in later:
        assessment = version_assess(version_id=pending.pk)
        assert assessment is not None
        assert assessment.state == AssessmentState.NOT_SCORED
        assert assessment.score is None and not assessment.from_cache
        reason = assessment.not_scored_reason
        assert f"spamd at 127.0.0.1:{private_spamd.port}" in reason and "unreachable" in reason, reason
        assert assessment.attempts == 1 and assessment.next_attempt_at > timezone.now()

        pending.refresh_from_db()
        assert pending.status == VersionStatus.DRAFT
        assert services.version_approvable(version=pending) == f"it is not scored: {reason}"
        with pytest.raises(RegistryError) as refused:
            services.version_approve(version=pending, approved_by=marketer)
        assert reason in str(refused.value)
    assert _approved_count() == 0

    # Not due yet: the beat leaves them alone (the backoff holds).
    assert tasks.assess_due() == 0

    private_spamd.start()
    VersionAssessment.objects.filter(version__in=later).update(next_attempt_at=timezone.now())
    assert tasks.assess_due() == 2
    for pending in later:
        assessment = VersionAssessment.objects.get(version=pending)
        assert assessment.state == AssessmentState.SCORED, assessment.not_scored_reason
        assert assessment.score is not None and not assessment.from_cache
        assert assessment.not_scored_reason == "" and assessment.next_attempt_at is None
        pending.refresh_from_db()
        assert pending.status == VersionStatus.SCORED
    assert _approved_count() == 0


# --- (4) the sandbox message ---------------------------------------------------------------------


def test_sandbox_message_is_the_mime_dispatch_would_send_to_no_one(version: VariantVersion) -> None:
    rendered = compile_version(version.content()).render(version.variables)
    raw = sandbox_message(version, rendered, None)

    assert b"\r\n\r\n" in raw and all(len(line) <= 998 for line in raw.split(b"\r\n"))
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert message.defects == []
    assert message.get_content_type() == "multipart/alternative"
    assert message["MIME-Version"] == "1.0" and message["Date"] and message["Message-ID"]
    assert message["Subject"] == "Hi Ana"

    # No real recipient: only the placeholder, on a reserved domain, and no copies.
    assert parseaddr(str(message["To"]))[1] == SANDBOX_RECIPIENT
    assert SANDBOX_RECIPIENT.endswith("@example.com")
    assert message["Cc"] is None and message["Bcc"] is None
    assert parseaddr(str(message["From"]))[1].endswith(".invalid")

    unsubscribe = str(message["List-Unsubscribe"])
    assert unsubscribe.startswith("<http") and "<mailto:unsubscribe+" in unsubscribe
    assert version.content_hash[:32] in unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    parts = {part.get_content_type(): part for part in message.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert all(part.get_content_charset() == "utf-8" for part in parts.values())
    assert all(part.defects == [] for part in parts.values())
    text, html = parts["text/plain"].get_content(), parts["text/html"].get_content()
    assert "Hello Ana" in text and "1. Hat" in text
    assert "Hello Ana" in html and "https://example.com/offer" in html and "<html" in html.lower()
    assert text.replace("\r\n", "\n").strip() == rendered.text.replace("\r\n", "\n").strip()
