"""One definition of each vocabulary, used as the model fields' choices, and every value the code can produce is in it.

Event types, kinds, reasons and how a report was matched live in
``deliverability/bounces/vocabulary.py``; the detector's signals and rules in
``deliverability/detector.py``. These tests walk every table that produces a
value (status codes, phrase tables, ESP mappings, the whole bounce corpus,
arbitrary SMTP replies) and check membership, so a typo in a table fails here
rather than landing in the database.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from django.db.models import TextChoices
from hypothesis import given
from hypothesis import strategies as st

from deliverability import detector
from deliverability import models as m
from deliverability.bounces import classify_message
from deliverability.bounces import vocabulary as v
from deliverability.bounces.smtp_reply import classify_reply
from deliverability.errors import DeliverabilityError
from deliverability.services import Feedback, event_record
from deliverability.services.feedback import RECIPIENT_SOFT_REASONS, REPUTATION_REASONS
from dispatch.services import feedback as dispatch_feedback
from dispatch.services import webhooks
from tests.conftest import CORPORA

BOUNCES = CORPORA / "bounces"
CORPUS = sorted(BOUNCES.glob("*.eml")) if BOUNCES.exists() else []

FIELDS: list[tuple[type[Any], str, type[TextChoices]]] = [
    (m.FeedbackEvent, "event_type", v.EventType),
    (m.FeedbackEvent, "kind", v.Kind),
    (m.FeedbackEvent, "reason", v.Reason),
    (m.FeedbackEvent, "matched_by", v.MatchedBy),
    (m.PauseEvidence, "signal", detector.Signal),
    (m.PauseEvidence, "rule", detector.Rule),
]


def test_each_vocabulary_is_defined_once_and_the_models_reexport_it() -> None:
    assert m.EventType is v.EventType and m.Kind is v.Kind and m.Reason is v.Reason and m.MatchedBy is v.MatchedBy
    assert m.Signal is detector.Signal and m.Rule is detector.Rule
    assert detector.SIGNALS == tuple(detector.Signal)  # the signal axis of the detector's arrays, in order


@pytest.mark.parametrize(("model", "name", "vocabulary"), FIELDS, ids=[f"{model.__name__}.{name}" for model, name, _ in FIELDS])
def test_model_fields_take_their_choices_from_the_vocabulary(model: type[Any], name: str, vocabulary: type[TextChoices]) -> None:
    field = model._meta.get_field(name)
    assert list(field.choices) == vocabulary.choices
    assert max(len(value) for value in vocabulary.values) <= field.max_length


def test_members_are_plain_strings_wherever_they_are_written() -> None:
    assert json.dumps({"reason": v.Reason.USER_UNKNOWN}) == '{"reason": "user_unknown"}'
    assert f"{v.Kind.HARD}" == str(v.Kind.HARD) == "hard" and {v.Reason.BLOCKED: 1}["blocked"] == 1


def test_every_reason_a_table_can_name_is_in_the_vocabulary() -> None:
    produced = {
        *v.STATUS_REASONS.values(), *(reason for reason, _ in v.TEXT_REASONS), *v.PSEUDO_STATUS, *v.MTA_CATEGORIES.values(),
        *v.HARD_REASONS, *v.OUTRANK_ADDRESS_STATUS, *v.PERMANENT_ONLY, *RECIPIENT_SOFT_REASONS, *REPUTATION_REASONS,
    }
    assert produced <= set(v.Reason.values)
    for key in v.DECISIVE_STATUSES:
        assert v.decisive_reason_from_status("5" + key[1:]) in v.Reason.values


def test_every_value_the_esp_mappings_write_is_in_the_vocabulary() -> None:
    assert set(webhooks.LEARNED.values()) <= set(v.EventType.values)
    for event_type, _, reason in webhooks.REJECTED.values():
        assert event_type in v.EventType.values and reason in (*v.Reason.values, "")
    for _, table in webhooks.ESP_SIGNALS.values():
        for _, reason in table.values():
            assert reason in (*v.Reason.values, "")


def test_every_kind_maps_onto_an_event_type() -> None:
    assert set(dispatch_feedback._EVENT_FOR_KIND) == set(v.Kind.values)
    assert set(dispatch_feedback._EVENT_FOR_KIND.values()) <= set(v.EventType.values)


@pytest.mark.skipif(not CORPUS, reason=f"bounce corpus not found at {BOUNCES}")
def test_every_classification_of_the_corpus_is_in_the_vocabulary() -> None:
    kinds: set[str] = set()
    for path in CORPUS:
        for verdict in classify_message(path.read_bytes()):
            assert verdict.kind in v.Kind.values, (path.name, verdict.kind)
            assert verdict.reason in v.Reason.values, (path.name, verdict.reason)
            kinds.add(verdict.kind)
    assert {"hard", "soft", "complaint", "auto_reply", "delivered"} <= kinds  # the walk reached every producing branch


@given(code=st.one_of(st.none(), st.integers(400, 599)), text=st.text(max_size=300))
def test_every_smtp_reply_classifies_into_the_vocabulary(code: int | None, text: str) -> None:
    verdict = classify_reply(code, text)
    assert verdict.kind in (v.Kind.HARD, v.Kind.SOFT) and verdict.reason in v.Reason.values


def test_the_detector_decides_with_a_signal_and_a_rule_of_its_vocabulary() -> None:
    state = detector.DetectorState.empty(2)
    decided: list[tuple[str, str]] = []
    for minute in range(240):
        bad = minute >= 200
        sent = np.array([100, 100])
        decisions = detector.detector_step(state, sent, np.array([30 if bad else 1, 1]), np.array([0, 0]), np.array([0, 0]))
        decided += [(detector.SIGNALS[int(s)], str(r)) for s, r in zip(decisions.signal, decisions.rule, strict=True)]
    assert decided and all(signal in detector.Signal.values and rule in detector.Rule.values for signal, rule in decided)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "value"),
    [("event_type", "bounce"), ("kind", "hardbounce"), ("reason", "userunknown"), ("matched_by", "guess")],
)
def test_event_record_refuses_a_value_outside_the_vocabulary_and_writes_nothing(name: str, value: str) -> None:
    values: dict[str, Any] = {"event_type": v.EventType.BOUNCED, "kind": v.Kind.HARD, "reason": v.Reason.USER_UNKNOWN, name: value}
    with pytest.raises(DeliverabilityError) as caught:
        event_record(Feedback(recipient="someone@example.org", source="upload", dedupe=f"bad-{name}", **values))
    assert caught.value.field == name
    assert not m.FeedbackEvent.objects.exists()
