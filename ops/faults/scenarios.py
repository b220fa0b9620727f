"""The scenarios. Each makes fresh sending domains and campaigns, triggers its messages, breaks
something while real workers send them, and beats until every row is terminal; the runner
then runs the conservation check (ops/faults/checks.py) over its campaigns.

Every scenario runs under the sink's standing rule: one recipient in 50 (``hard*``) is
refused with 550 at RCPT, so every campaign also has permanent failures to record.
"""

from __future__ import annotations

import random
import re
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ops.faults import fixtures
from ops.faults.api_client import Client
from ops.faults.checks import Crash, Ledger, Suppressed, Window


def _start(run: Any, ledger: Ledger, name: str, *, per_domain: int = 1, messages: int | None = None, slow: float = 0.0) -> list[Any]:
    # ``slow``: the receiver's wait after DATA, seconds a message, when it has no distance of its own (the 0 ms pass).
    # Workers hand a chunk over on many sessions at once, so a receiver's waits (30-100 ms, in another region) are what
    # keeps a batch in flight long enough to break; at 30-100 ms a reply the distance does that already.
    made = fixtures.campaigns(run, name, 3, per_domain=per_domain)
    ledger.campaign_ids = [c.pk for c in made]
    if slow and not run.sink.latency_ms[1]:
        run.sink.add(action="slow", phase="data", delay=slow)
    fixtures.trigger_all(made, name[:4], messages or run.size.messages)
    return made


def _workers_alive(run: Any, ledger: Ledger) -> None:
    dead = [w.name for w in run.workers if not w.alive()]
    if dead:
        ledger.fail(f"workers exited: {', '.join(dead)}")


def _batch(run: Any) -> int:
    return int(run.env["SENDPLANE_DISPATCH_BATCH_SIZE"])


def _background(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# --- worker kill -9 mid-batch --------------------------------------------------------------------


def worker_kill9(run: Any, ledger: Ledger) -> None:
    """kill -9 a worker that is inside a batch, several times; a new worker replaces each."""
    _start(run, ledger, "worker_kill9", slow=0.1)
    kills = 2 if run.size.messages < 1000 else 4
    events = [(0.8 + 1.5 * i, lambda: _kill_busy(run, ledger)) for i in range(kills)]
    run.drain(ledger.campaign_ids, events=events)
    # A kill is only made while a worker is inside a batch with rows sending; a short campaign may
    # drain before the later ones (noted, not a failure). None at all means the fault never happened.
    if not ledger.crashes:
        ledger.fail(f"none of {kills} kills found a worker mid-batch")
    elif len(ledger.crashes) < kills:
        ledger.note(f"{len(ledger.crashes)} of {kills} kills made: the campaign drained before the rest")


def _busy(worker: Any) -> bool:
    log = worker.log()
    return log.rfind(" received") > max(log.rfind(" succeeded in "), log.rfind(" raised "), log.rfind("ERROR"))


def _kill_busy(run: Any, ledger: Ledger) -> None:
    from dispatch.models import Message, MessageStatus

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        busy = [w for w in run.workers if _busy(w)]
        sending = Message.objects.filter(campaign_id__in=ledger.campaign_ids, status=MessageStatus.SENDING).count()
        if busy and sending:
            victim = random.choice(busy)
            run.worker_kill9(victim)
            ledger.crashes.append(Crash(f"kill -9 {victim.name}", time.time(), _batch(run)))
            ledger.note(f"killed {victim.name} with {sending} rows sending")
            run.worker_start()
            return
        time.sleep(0.02)


# --- broker and database restarts ------------------------------------------------------------------


def broker_restart(run: Any, ledger: Ledger) -> None:
    """The private Redis dies (every hint in it is lost) and comes back 2 s later; a trigger arrives meanwhile."""
    restarts = 1 if run.size.messages < 1000 else 2
    made = _start(run, ledger, "broker_restart", slow=0.05)
    events: list[tuple[float, Callable[[], None]]] = []
    for i in range(restarts):
        at = 1.0 + 5.0 * i
        events += [(at, run.redis.stop), (at + 0.1, lambda i=i: _trigger_while_broker_down(run, ledger, made[i % len(made)], i)),
                   (at + 2.0, run.redis.start)]  # fmt: skip
    run.drain(ledger.campaign_ids, events=events)
    _workers_alive(run, ledger)


def _trigger_while_broker_down(run: Any, ledger: Ledger, campaign: Any, n: int) -> None:
    """The outbox commits without the broker: the API must say 202, not 500 (the sweeper publishes later)."""
    body = {"recipients": fixtures.recipients(f"down{n}", 100_000 + n * 20, 20)}
    api = Client(run.api.port, run.tokens["marketer"])
    answer = api.post(f"/api/v1/campaigns/{campaign.pk}/triggers", body, {"Idempotency-Key": f"down-{n}"})
    ledger.note(f"trigger while the broker was down: {answer.status} in {answer.seconds:.2f} s")
    if answer.status != 202:
        ledger.fail(f"a trigger while the broker was down got {answer.status}: {str(answer.body)[:160]}")


def database_restart(run: Any, ledger: Ledger) -> None:
    """The private PostgreSQL crashes (immediate shutdown) and restarts 2 s later, mid-batch."""
    _start(run, ledger, "database_restart", slow=0.05)

    def crash() -> None:
        _timed(ledger, "database restart", lambda: run.pg.restart(down_seconds=2))
        ledger.crashes.append(Crash("database restart", time.time(), _batch(run) * len(run.workers)))

    run.drain(ledger.campaign_ids, events=[(1.0, crash)])
    _workers_alive(run, ledger)


def _timed(ledger: Ledger, what: str, action: Callable[[], None]) -> None:
    began = time.monotonic()
    action()
    ledger.note(f"{what} took {time.monotonic() - began:.1f} s")


# --- SMTP faults ---------------------------------------------------------------------------------


def smtp_4xx_storm(run: Any, ledger: Ledger) -> None:
    """Every DATA gets 451 for 2 s, then every RCPT for a while (a storm); then the server recovers."""
    storm = run.size.storm_seconds
    # 451 after DATA first (RCPT refusals would keep messages from reaching DATA), from the first message on.
    rules = [run.sink.storm(seconds=2 + 0.002 * run.size.messages, code=451, phase="data")]
    _start(run, ledger, "smtp_4xx_storm", slow=0.03)
    run.drain(ledger.campaign_ids, events=[(1.0, lambda: rules.append(run.sink.storm(seconds=storm, code=451, phase="rcpt")))])
    ledger.note(f"451 after DATA {rules[0].hits} times, at RCPT {rules[1].hits} times")
    if not all(rule.hits for rule in rules):
        ledger.fail("a storm refused nothing: it came too late to test anything")
    _all_sent_but_hard(ledger)


def _all_sent_but_hard(ledger: Ledger) -> None:
    from dispatch.models import Message, MessageStatus

    rows = Message.objects.filter(campaign_id__in=ledger.campaign_ids)
    unsent = rows.exclude(recipient__startswith="hard").exclude(status=MessageStatus.SENT).count()
    if unsent:
        ledger.fail(f"{unsent} messages were not sent after the server recovered")


def smtp_drops(run: Any, ledger: Ledger) -> None:
    """Connections dropped after DATA (some messages taken first, some not), at RCPT for 2 s, and slow replies."""

    def every(n: int, k: int) -> Callable[[str], bool]:
        return lambda address: fixtures.index_of(address) % n == k

    run.sink.add(action="drop", phase="data", match=every(40, 7), record_before_drop=True)
    run.sink.add(action="drop", phase="data", match=every(40, 23))
    run.sink.add(action="drop", phase="rcpt", match=every(40, 31), until=time.time() + 2.0)
    run.sink.add(action="slow", phase="data", match=every(10, 3), delay=0.2)
    _start(run, ledger, "smtp_drops")
    run.drain(ledger.campaign_ids)
    from dispatch.models import Message, MessageStatus

    rows = Message.objects.filter(campaign_id__in=ledger.campaign_ids)
    expected = sum(1 for r in rows.values_list("recipient", flat=True) if fixtures.index_of(r) % 40 in (7, 23) and not r.startswith("hard"))
    unknown = rows.filter(status=MessageStatus.UNKNOWN).count()
    ledger.note(f"{expected} connections dropped mid-DATA, {unknown} rows unknown")
    if unknown != expected:
        ledger.fail(f"{expected} drops mid-DATA but {unknown} unknown rows")


# --- duplicate triggers racing ------------------------------------------------------------------------


def duplicate_triggers(run: Any, ledger: Ledger) -> None:
    """Many HTTP clients send the same triggers (same key, same body) at once; some keys also race another body."""
    made = fixtures.campaigns(run, "duplicate_triggers", 3)
    ledger.campaign_ids = [c.pk for c in made]
    keys = 12 if run.size.messages < 1000 else 60
    per = max(1, run.size.messages // keys)
    requests = []
    for k in range(keys):
        campaign = made[k % len(made)]
        body = {"recipients": fixtures.recipients(f"dup{k}", k * per, per)}
        requests.append((k, campaign.pk, body, False))
        if k % 4 == 0:  # the same key with another body: one of the two wins, the other is a 409
            requests.append((k, campaign.pk, {"recipients": fixtures.recipients(f"dupx{k}", k * per, per)}, True))
    clients = 8 if run.size.messages < 1000 else 16
    answers: dict[int, list[tuple[bool, Any]]] = defaultdict(list)
    lock = threading.Lock()

    def client() -> None:
        api = Client(run.api.port, run.tokens["marketer"])
        for k, campaign_id, body, other in random.sample(requests, len(requests)):
            answer = api.post(f"/api/v1/campaigns/{campaign_id}/triggers", body, {"Idempotency-Key": f"dup-{k}"})
            with lock:
                answers[k].append((other, answer))
        api.close()

    threads = [_background(client) for _ in range(clients)]
    for thread in threads:
        thread.join()
    _check_idempotency(ledger, answers)
    from celery import current_app

    for campaign in made:  # duplicate hints too: each must be harmless
        for _ in range(5):
            current_app.send_task("dispatch.tasks.send_batch", args=[campaign.sending_domain_id])
    run.drain(ledger.campaign_ids)
    ledger.note(f"{sum(len(a) for a in answers.values())} requests for {keys} keys from {clients} concurrent clients")


def _check_idempotency(ledger: Ledger, answers: dict[int, list[tuple[bool, Any]]]) -> None:
    for k, got in answers.items():
        firsts = [(other, a) for other, a in got if a.status == 202 and "idempotent-replayed" not in a.headers]
        if len(firsts) != 1:
            ledger.fail(f"key dup-{k}: {len(firsts)} requests were answered as the first")
            continue
        winner = firsts[0][0]
        for other, a in got:
            if other == winner and (a.status != 202 or a.body.get("trigger") != firsts[0][1].body.get("trigger")):
                ledger.fail(f"key dup-{k}: a repeat got {a.status} {str(a.body)[:120]}")
            elif other != winner and a.status != 409:
                ledger.fail(f"key dup-{k}: another body got {a.status}, not 409")


# --- pause and resume racing with sends ------------------------------------------------------------


def pause_resume_race(run: Any, ledger: Ledger) -> None:
    """On-call pauses and resumes domains, campaigns and everything through the API while batches run."""
    made = _start(run, ledger, "pause_resume_race", per_domain=2, slow=0.04)
    seconds = 5.0 if run.size.messages < 1000 else 15.0
    domains = sorted({c.sending_domain.domain for c in made})
    scopes = [
        ("domain", domains, "/api/v1/domains/{}/pause", "/api/v1/domains/{}/resume", {"force": True}),
        ("campaign", [str(c.pk) for c in made], "/api/v1/campaigns/{}/pause", "/api/v1/campaigns/{}/resume", {}),
        ("all", ["all"], "/api/v1/pause-all", "/api/v1/resume-all", {}),
    ]
    threads: list[threading.Thread] = []
    in_flight: list[int] = []

    def start() -> None:
        for scope in scopes:
            threads.append(_background(lambda scope=scope: _pause_loop(run, ledger, scope, seconds, in_flight)))

    run.drain(ledger.campaign_ids, events=[(0.3, start)], settle=lambda: bool(threads) and not any(t.is_alive() for t in threads))
    paused_calls = len(ledger.windows)
    ledger.note(f"{paused_calls} pauses; messages in flight when a pause returned: {sum(in_flight)} (max {max(in_flight, default=0)})")
    if paused_calls < 3:
        ledger.fail("fewer than 3 pauses happened")


def _pause_loop(
    run: Any, ledger: Ledger, scope: tuple[str, list[str], str, str, dict[str, Any]], seconds: float, in_flight: list[int]
) -> None:
    kind, targets, pause_path, resume_path, resume_body = scope
    api = Client(run.api.port, run.tokens["oncall"])
    rng = random.Random(hash(kind))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        target = rng.choice(targets)
        answer = api.post(pause_path.format(target), {"reason": f"fault suite: {kind} race"})
        returned = time.time()
        if answer.status != 200:
            ledger.fail(f"pause {kind} {target}: {answer.status} {str(answer.body)[:160]}")
            return
        window = Window(kind, target, returned)
        with ledger.lock:
            ledger.windows.append(window)
            in_flight.append(int(answer.body.get("in_flight", 0)))
        time.sleep(rng.uniform(0.1, 0.6 if kind != "all" else 0.3))
        window.end = time.time()  # from here the resume may let messages through
        answer = api.post(resume_path.format(target), resume_body)
        if answer.status != 200:
            ledger.fail(f"resume {kind} {target}: {answer.status} {str(answer.body)[:160]}")
            return
        time.sleep(rng.uniform(0.1, 0.5 if kind != "all" else 1.2))
    api.close()


# --- suppression arriving mid-campaign ------------------------------------------------------------------


def suppression_mid_campaign(run: Any, ledger: Ledger) -> None:
    """Addresses in batches being sent are suppressed (by hand, and by a hard bounce) while the batches run."""
    _start(run, ledger, "suppression_mid_campaign", slow=0.1)
    done = threading.Event()
    thread: list[threading.Thread] = []

    def start() -> None:
        thread.append(_background(lambda: _suppress_loop(run, ledger, done)))

    run.drain(ledger.campaign_ids, events=[(0.3, start)])
    done.set()
    thread[0].join()
    from deliverability.models import SendingDomain
    from deliverability.selectors import address_suppressed

    def in_force(s: Suppressed) -> bool:
        scope = SendingDomain.objects.get(domain=s.domain) if s.domain else None
        return address_suppressed(address=s.address, sending_domain=scope)

    missed = [s.address for s in ledger.suppressions if not in_force(s)]
    ledger.note(f"{len(ledger.suppressions)} addresses suppressed mid-campaign")
    if missed or len(ledger.suppressions) < 5:
        ledger.fail(f"suppressions: {len(ledger.suppressions)} made, not in force: {missed[:3]}")


def _suppress_loop(run: Any, ledger: Ledger, done: threading.Event) -> None:
    """Aim at the chunk being handed over right now: the rows just after the message the sink took last."""
    from django.db import connections
    from django.db.models import Q

    from dispatch.models import Message, MessageStatus

    rng, taken = random.Random(7), set()
    try:
        while not done.is_set():
            latest = run.sink.latest()
            row = Message.objects.filter(uuid=latest.message_id.strip("<>").partition("@")[0]).first() if latest else None
            if row is None or row.campaign_id not in ledger.campaign_ids:
                time.sleep(0.02)
                continue
            # The next few rows are likely in the chunk being handed over; the ones after, in the next chunk.
            near = Q(id__gt=row.id, id__lte=row.id + 3) | Q(id__gt=row.id + 10, id__lte=row.id + 12)
            upcoming = Message.objects.filter(near, campaign_id=row.campaign_id, status=MessageStatus.SENDING)
            candidates = upcoming.exclude(recipient__startswith="hard").values_list("uuid", "recipient", "sending_domain__domain")
            for uuid, address, domain in candidates:
                if address.lower() not in taken:
                    taken.add(address.lower())
                    _suppress_one(ledger, rng.choice(("manual", "domain", "bounce")), uuid, address.lower(), domain)
            time.sleep(0.05)
    finally:
        connections.close_all()


def _suppress_one(ledger: Ledger, how: str, uuid: Any, address: str, domain: str) -> None:
    from django.db import transaction

    from deliverability.models import SendingDomain
    from deliverability.services import suppression_add
    from dispatch.services.feedback import bounce_ingest

    committed: list[float] = []
    with transaction.atomic():
        if how == "bounce":
            bounce_ingest(raw=_dsn(uuid, address, domain), source="upload")
        else:
            scope = SendingDomain.objects.get(domain=domain) if how == "domain" else None
            suppression_add(address=address, reason="manual", sending_domain=scope, source="fault suite")
        transaction.on_commit(lambda: committed.append(time.time()))
    ledger.suppressions.append(Suppressed(address, domain if how == "domain" else None, committed[0]))


def _dsn(uuid: Any, address: str, domain: str) -> bytes:
    """A real-shaped RFC 3464 report: 5.1.1 user unknown, to our (signed) VERP address."""
    from dispatch.services.verp import verp_address

    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.{address.partition('@')[2]}>\r\n"
        f"To: {verp_address(uuid, domain)}\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {address}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 The email account that you tried to reach does not exist\r\n\r\n--b1--\r\n"
    ).encode()


# --- spamd down during approval -----------------------------------------------------------------------


def spamd_down_approval(run: Any, ledger: Ledger) -> None:
    """spamd is unreachable: a new version is "not scored", never approvable, and nothing unscored is sent."""
    from django.conf import settings

    from deliverability.assessments import version_assess
    from dispatch.services.triggers import TriggerError, trigger_accept
    from templates_registry import services
    from templates_registry.services import RegistryError

    template = services.template_create(slug=f"faults-spamd{run.tag}", name="spamd down")
    variant = services.variant_create(template=template, slug="a", weight=1)
    saved, settings.SPAMD_PORT = settings.SPAMD_PORT, run.closed_port
    try:
        version = fixtures.version_new(variant, f"Fresh copy {time.time_ns()}")  # new content: no cached score
        assessment = version_assess(version_id=version.pk)
    finally:
        settings.SPAMD_PORT = saved
    ledger.note(f"assessment: {assessment.state}: {assessment.not_scored_reason[:80]}")
    if assessment.state != "not_scored":
        ledger.fail(f"spamd down gave {assessment.state}, not not_scored")
    try:
        services.version_approve(version=version, approved_by=run.users["marketer"])
        ledger.fail("an unscored version was approved by the service")
    except RegistryError:
        pass
    answer = Client(run.api.port, run.tokens["marketer"]).post(f"/api/v1/versions/{version.pk}/approve", {})
    version.refresh_from_db()
    if answer.status != 400 or version.status == "approved":
        ledger.fail(f"the approve API answered {answer.status}; version is {version.status}")
    made = fixtures.campaigns(run, "spamd_down_approval", 1)
    unscored = fixtures.campaigns(run, "spamd_down_unscored", 1)
    unscored[0].template = template
    unscored[0].save(update_fields=["template"])
    try:
        trigger_accept(campaign=unscored[0], idempotency_key="unscored", recipients=fixtures.recipients("ns", 0, 5))
        ledger.fail("a trigger of a template with no approved version was accepted")
    except TriggerError:
        pass
    ledger.campaign_ids = [c.pk for c in made] + [unscored[0].pk]
    fixtures.trigger_all(made, "spam", max(50, run.size.messages // 5))
    run.drain(ledger.campaign_ids)
    _only_approved_sent(ledger)


# --- suppression writes while chunks are in flight to a slow receiver -------------------------------------

SUPPRESSION_PROCESSES = 16  # concurrent sending worker processes (the acceptance: 16 workers, a 100 ms receiver)
SUPPRESSION_P99_MS = 50.0  # the long form's bar for a suppression write's p99 while they send
_TIMED = re.compile(r"^(\d+\.\d+) (\d+\.\d+)$", re.MULTILINE)  # timed_writes.py: "write_ms peer_ms"


def suppression_writes_under_load(run: Any, ledger: Ledger) -> None:
    """Suppressions of unrelated addresses are written while 16 worker processes hand chunks to a receiver 100 ms away."""
    messages = max(run.size.messages, 2 * _batch(run) * SUPPRESSION_PROCESSES)  # two batches a process: every one sends
    with run.more_workers(SUPPRESSION_PROCESSES, per_host=8), _receiver_100ms(run):
        _start(run, ledger, "suppression_writes_under_load", messages=messages)
        writer = _timed_writes(run)  # Django's start-up takes the first second, while the workers get going
        try:
            run.drain(ledger.campaign_ids)
        finally:
            waits, peers = _timed_writes_stop(run, writer)
    _judge_suppression_waits(run, ledger, waits, peers)


@contextmanager
def _receiver_100ms(run: Any) -> Iterator[None]:
    """Every reply 100 ms away; in the 0 ms pass the older model, 100 ms after DATA only (a slow server, not a far one)."""
    before = run.sink.latency_ms
    if before[1]:
        run.sink.latency(100, 100)
    else:
        run.sink.add(action="slow", phase="data", delay=0.1)
    try:
        yield
    finally:
        run.sink.latency(*before)


def _quantiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2] * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def _judge_suppression_waits(run: Any, ledger: Ledger, waits: list[float], peers: list[float]) -> None:
    """Print p50 and p99; the long form holds p99 to the bar, the short form only to "never waits on SMTP"."""
    if len(waits) < 20:
        ledger.fail(f"only {len(waits)} suppression writes were timed")
        return
    (p50, p99), (peer50, peer99) = _quantiles(waits), _quantiles(peers)
    ledger.note(f"suppression writes during sending ({SUPPRESSION_PROCESSES} worker processes, receiver 100 ms): {len(waits)}, "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; a SELECT 1 after each: p50 {peer50:.1f} ms, p99 {peer99:.1f} ms")  # fmt: skip
    # A write that waited for a chunk in flight (the old table lock) waits at least one exchange: two 100 ms replies.
    bar = 200.0 if run.size.short else SUPPRESSION_P99_MS
    if p99 > bar:
        ledger.fail(f"suppression writes: p99 {p99:.0f} ms over the bar of {bar:.0f} ms")


def _timed_writes(run: Any) -> Any:
    """Start ops/faults/timed_writes.py (suppression writes from a process of their own); its lines go to a log."""
    script = Path(__file__).with_name("timed_writes.py")
    return run.children.start([sys.executable, str(script)], log=run.base / f"timed_writes{run.tag}.log", env=run.env)


def _timed_writes_stop(run: Any, proc: Any) -> tuple[list[float], list[float]]:
    """Stop it (SIGTERM: it ends after the write in progress); the writes' and the peers' times, seconds."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    timed = _TIMED.findall((run.base / f"timed_writes{run.tag}.log").read_text())
    return [float(w) / 1000 for w, _ in timed], [float(p) / 1000 for _, p in timed]


def _only_approved_sent(ledger: Ledger) -> None:
    from dispatch.models import Message

    bad = Message.objects.filter(campaign_id__in=ledger.campaign_ids).exclude(version__status="approved").count()
    if bad:
        ledger.fail(f"{bad} messages of versions that are not approved")


# --- load: the trigger API under concurrent clients --------------------------------------------------------


def load(run: Any, ledger: Ledger) -> None:
    """N clients post triggers for a fixed time (distinct keys, one request in ten a repeat); workers send meanwhile."""
    from ops.faults.loadgen import generate

    made = fixtures.campaigns(run, "load", 3, rate=1000.0)
    ledger.campaign_ids = [c.pk for c in made]
    figures = generate(run, ledger, [c.pk for c in made], clients=run.size.load_clients, seconds=run.size.load_seconds)
    drained = run.drain(ledger.campaign_ids)
    ledger.note(figures.summary() + f"; the outbox drained {drained:.1f} s after the load stopped")
    run.load_figures = figures


# --- one bad message never blocks a queue ------------------------------------------------------------------

POISON_EVERY = 25  # with batches of 50, a poison recipient sits in the middle of every batch


def poison_recipient(run: Any, ledger: Ledger) -> None:
    """Recipients the next hop cannot take (a Cyrillic local part; the server offers no SMTPUTF8) mid-campaign, and IDN domains."""
    from dispatch.services.triggers import trigger_accept

    made = fixtures.campaigns(run, "poison_recipient", 3)
    ledger.campaign_ids = [c.pk for c in made]
    share = -(-run.size.messages // len(made))
    run.sink.offer_smtputf8(False)
    try:
        for n, campaign in enumerate(made):
            people = [_poisoned(p, k) for k, p in enumerate(fixtures.recipients(f"pois{campaign.pk}", n * share, share))]
            trigger_accept(campaign=campaign, idempotency_key=f"poison-{campaign.pk}", recipients=people)
        run.drain(ledger.campaign_ids)
    finally:
        run.sink.offer_smtputf8(True)
    _poison_ended(run, ledger)


def _poisoned(person: dict[str, Any], k: int) -> dict[str, Any]:
    """Every POISON_EVERY-th ``u...`` recipient gets a Cyrillic local part; another one in as many an IDN domain."""
    local, _, domain = person["address"].partition("@")
    if local.startswith("u") and k % POISON_EVERY == POISON_EVERY // 2:
        return {**person, "address": f"юзер{local[1:]}@{domain}"}
    if local.startswith("u") and k % POISON_EVERY == POISON_EVERY // 4:
        return {**person, "address": f"{local}@{domain.replace('example', 'пример').replace('.org', '.рф')}"}
    return person


def _poison_ended(run: Any, ledger: Ledger) -> None:
    from dispatch.models import Message, MessageStatus

    rows = list(Message.objects.filter(campaign_id__in=ledger.campaign_ids).values_list("recipient", "status", "attempts", "last_reply"))
    poison = [r for r in rows if r[0].startswith("юзер")]
    idn = [r for r in rows if "пример" in r[0]]
    # Each poison message ends failed at its first attempt with its reason; never claimed again.
    wrong = [r for r in poison if (r[1], r[2]) != (MessageStatus.FAILED, 1) or "SMTPUTF8" not in r[3]]
    taken = {rec.recipient for rec in run.sink.accepted()}
    unsent_idn = [r for r in idn if r[1] != MessageStatus.SENT or _ascii_address(r[0]) not in taken]
    others = [r for r in rows if r not in poison and r not in idn and not r[0].startswith("hard") and r[1] != MessageStatus.SENT]
    ledger.note(f"{len(poison)} poison recipients failed with their reason, {len(idn)} IDN recipients sent as A-labels")
    if not poison or not idn:
        ledger.fail("the campaign had no poison or no IDN recipient")
    for what, bad in (("poison rows not failed once with the SMTPUTF8 reason", wrong), ("IDN rows not sent as punycode", unsent_idn),
                      ("other rows not sent", others)):  # fmt: skip
        if bad:
            ledger.fail(f"{len(bad)} {what}, e.g. {bad[0]}")


def _ascii_address(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}"


def missing_dkim_key(run: Any, ledger: Ledger) -> None:
    """One domain's DKIM key file is missing: paused with the reason, its batches go back untouched; fixed and resumed, all go out."""
    from deliverability.services import domain_update

    made = fixtures.campaigns(run, "missing_dkim_key", 3)
    ledger.campaign_ids = [c.pk for c in made]
    key_path = run.base / f"dkim-{time.time_ns()}.pem"
    _write_dkim_key(key_path)  # the save checks the key (issue 17); it goes missing afterwards, as a key can on a worker
    domain = domain_update(domain=made[0].sending_domain, actor="fault suite", dkim_selector="faults", dkim_key_path=str(key_path))
    key_path.unlink()
    window = Window("domain", domain.domain, time.time())  # nothing of this domain may reach the sink until the resume
    ledger.windows.append(window)
    fixtures.trigger_all(made, "dkim", run.size.messages)
    run.drain(ledger.campaign_ids, events=[(0.5, lambda: _fix_dkim_key(run, ledger, domain, key_path, window))])
    _dkim_domain_sent(run, ledger, domain, window)


def _fix_dkim_key(run: Any, ledger: Ledger, domain: Any, key_path: Any, window: Window) -> None:
    """Wait for the pause, read what on-call reads, restore the key, resume through the API."""
    from deliverability.models import SendingDomain
    from dispatch.models import Message, MessageStatus

    began = time.monotonic()
    while not SendingDomain.objects.filter(pk=domain.pk, paused=True).exists():
        if time.monotonic() - began > 30:
            ledger.fail("the domain with a missing DKIM key was not paused within 30 s")
            return
        run.beat()
        time.sleep(0.1)
    state = SendingDomain.objects.get(pk=domain.pk)
    ledger.note(f"paused by {state.paused_by} after {time.monotonic() - began:.1f} s: {state.paused_reason}")
    if (state.paused_by, state.paused_reason) != ("dispatch", f"DKIM key {key_path} unreadable: No such file or directory"):
        ledger.fail(f"paused by {state.paused_by!r} with {state.paused_reason!r}")
    # Released, not ended: a batch still in flight holds its rows ``sending`` until it puts them back.
    touched = Message.objects.filter(sending_domain=domain).exclude(status__in=[MessageStatus.QUEUED, MessageStatus.SENDING])
    if touched.exists():
        ledger.fail(f"rows of the paused domain ended: {sorted(set(touched.values_list('status', flat=True)))}")
    # The key stays missing until the other domains have been seen sending (or a bound passes): the property is that
    # they do not stop, and how soon their first reply arrives depends on the machine, not on the fault.
    while not _others_sent(run, ledger, domain, before=time.time()) and time.monotonic() - began < OTHERS_WAIT:
        run.beat()
        time.sleep(0.1)
    _write_dkim_key(key_path)
    window.end = time.time()
    answer = Client(run.api.port, run.tokens["oncall"]).post(
        f"/api/v1/domains/{domain.domain}/resume", {"ramp_minutes": 0, "reason": "fault suite: DKIM key restored"}
    )
    if answer.status != 200:
        ledger.fail(f"resume: {answer.status} {str(answer.body)[:160]}")


OTHERS_WAIT = 20.0  # seconds the key stays missing at most while waiting to see the other domains send


def _others_sent(run: Any, ledger: Ledger, domain: Any, *, before: float) -> int:
    """Messages of the scenario's other domains the sink accepted before ``before``."""
    from dispatch.models import Message

    rows = Message.objects.filter(campaign_id__in=ledger.campaign_ids).exclude(sending_domain=domain)
    others = {str(u) for u in rows.values_list("uuid", flat=True)}
    return sum(1 for rec in run.sink.accepted() if rec.at < before and rec.message_id.strip("<>").partition("@")[0] in others)


def _write_dkim_key(path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _dkim_domain_sent(run: Any, ledger: Ledger, domain: Any, window: Window) -> None:
    """After the resume, every message of the domain went out at its first counted attempt; the others never stopped."""
    from audit.models import AuditEntry
    from dispatch.models import Message, MessageStatus

    rows = Message.objects.filter(campaign_id__in=ledger.campaign_ids)
    ours = rows.filter(sending_domain=domain).exclude(recipient__startswith="hard")
    if ours.exclude(status=MessageStatus.SENT).exists() or ours.exclude(attempts=1).exists():
        ledger.fail("messages of the fixed domain were not all sent at their first counted attempt")
    during = _others_sent(run, ledger, domain, before=window.end)
    ledger.note(f"the other domains sent {during} messages while the key was missing")
    if not during:
        ledger.fail("the other domains sent nothing while one domain's key was missing")
    if not AuditEntry.objects.filter(action="domain.pause", target_id=str(domain.pk), actor_label="dispatch").exists():
        ledger.fail("the pause has no audit entry by dispatch")
    _all_sent_but_hard(ledger)


# --- a hot domain drained by 8 worker processes ------------------------------------------------------------

HOT_WORKERS = 8
HOT_SHARED = 6  # at least this many of the 8 hand messages over within HOT_WINDOW of the trigger
HOT_WINDOW = 6.0  # seconds with no sweeper: only the trigger's one hint and the fan-out (dispatch.services.worker._fan_out) spread it
HOT_RATE, HOT_BURST = 1000.0, 500  # a big sender's domain: its bucket is not what holds 8 workers back
_BATCH_DONE = re.compile(
    r"^(\S+ \S+) INFO sendplane\.worker batch done .*?\bdomain=(?P<domain>\S+) .*?counts=\{(?P<counts>[^}]*)\}",
    re.MULTILINE,
)
_COUNT = re.compile(r"MessageStatus\.(SENT|FAILED|DEFERRED|UNKNOWN): (\d+)")  # handed over (not QUEUED, not SUPPRESSED)


def hot_domain_8_workers(run: Any, ledger: Ledger) -> None:
    """One sending domain with a large backlog, drained by 8 worker processes: the batches spread over all, the rate holds."""
    backlog = run.size.messages * (4 if run.size.short else 2)
    with run.more_workers(HOT_WORKERS) as extra:
        made = fixtures.campaigns(run, "hot_domain_8_workers", 1, rate=HOT_RATE, burst=HOT_BURST)
        ledger.campaign_ids = [made[0].pk]
        fixtures.trigger_all(made, "hot", backlog, chunk=backlog)  # one trigger, one commit, one hint: the fan-out does the rest
        triggered = time.time()
        drained = run.drain(ledger.campaign_ids, quiet=HOT_WINDOW)
        workers = [*run.workers, *extra]
        domain = made[0].sending_domain.domain
        ledger.note(f"{backlog} messages of one domain drained by {len(workers)} worker processes in {drained:.1f} s")
        _hot_shared(ledger, workers, domain, triggered)
    _hot_rate(run, ledger, domain)


def _hot_shared(ledger: Ledger, workers: list[Any], domain: str, triggered: float) -> None:
    """Each worker's batches of the domain from its own log ("batch done" lines); enough of them busy early."""
    first: dict[str, float] = {}
    handed: dict[str, int] = {}
    for worker in workers:
        for found in _BATCH_DONE.finditer(worker.log()):
            count = sum(int(n) for _, n in _COUNT.findall(found.group("counts")))
            if found.group("domain") != domain or not count:
                continue
            handed[worker.name] = handed.get(worker.name, 0) + count
            at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as the worker wrote it
            first[worker.name] = min(first.get(worker.name, at), at)
    early = sorted(name for name, at in first.items() if at - triggered <= HOT_WINDOW)
    shares = ", ".join(f"{name} {handed.get(name, 0)}" for name in sorted(w.name for w in workers))
    ledger.note(f"handed over per worker: {shares}; {len(early)} of {len(workers)} had within {HOT_WINDOW:.0f} s of the trigger")
    if len(early) < HOT_SHARED:
        ledger.fail(f"only {len(early)} of {len(workers)} workers handed messages over within {HOT_WINDOW:.0f} s: {early}")


def _hot_rate(run: Any, ledger: Ledger, domain: str) -> None:
    """The bucket's promise as the receiver sees it: never more than rate + burst in any one second."""
    times = sorted(rec.at for rec in run.sink.accepted() if rec.message_id.strip("<>").partition("@")[2] == domain)
    most, lo = 0, 0
    for hi, at in enumerate(times):
        while at - times[lo] >= 1.0:
            lo += 1
        most = max(most, hi - lo + 1)
    ledger.note(f"the sink took at most {most} of its messages in one second (rate {HOT_RATE:g}/s, burst {HOT_BURST})")
    if most > HOT_RATE + HOT_BURST:
        ledger.fail(f"over rate: {most} messages in one second against {HOT_RATE:g}/s + {HOT_BURST}")


SCENARIOS: dict[str, Callable[[Any, Ledger], None]] = {
    "worker_kill9": worker_kill9,
    "broker_restart": broker_restart,
    "database_restart": database_restart,
    "smtp_4xx_storm": smtp_4xx_storm,
    "smtp_drops": smtp_drops,
    "duplicate_triggers": duplicate_triggers,
    "pause_resume_race": pause_resume_race,
    "suppression_mid_campaign": suppression_mid_campaign,
    "suppression_writes_under_load": suppression_writes_under_load,
    "spamd_down_approval": spamd_down_approval,
    "load": load,
    "poison_recipient": poison_recipient,
    "missing_dkim_key": missing_dkim_key,
    "hot_domain_8_workers": hot_domain_8_workers,
}
