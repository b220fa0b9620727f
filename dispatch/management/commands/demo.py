"""``demo``: the README's main job on the embedded default.

Loads the example templates, approves them, and sends a campaign of thousands
of recipients through the real path: trigger (one transaction) -> SQLite ->
filesystem broker -> Celery worker processes -> a local SMTP sink, smoothed to
the sending domain's rate, with a progress bar and a summary at the end.

Then a second domain sends to a bad imported list: the sink refuses its
unknown users (550 5.1.1), the workers record them as hard bounces, and the
anomaly detector, run here on the beat's one-minute schedule, pauses that
domain and says why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from controlplane.progress import bar_line
from deliverability.assessments import version_assess
from deliverability.models import PauseEvidence, SendingDomain
from deliverability.services import domain_create, domain_resume, domain_update
from deliverability.services.detection import detector_run
from dispatch.models import TERMINAL, Campaign
from dispatch.selectors import campaign_progress
from dispatch.services.campaigns import campaign_create
from dispatch.services.sweeper import sweep
from dispatch.services.triggers import trigger_accept
from templates_registry import services as registry
from templates_registry.examples import example_variables, examples_load
from templates_registry.rendering import RenderError
from templates_registry.services import RegistryError

DEMO_DOMAIN = "demo.sendplane.test"
IMPORT_DOMAIN = "imports{n}.sendplane.test"  # a new one each run: a fresh domain the detector has never seen
GONE = "gone"  # local parts the demo's receiving server does not know


class _CountingSink:
    """The demo's SMTP server: counts arrivals per second, keeps nothing, refuses unknown users."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:  # noqa: N802
        if address.startswith(GONE):
            return "550 5.1.1 The email account that you tried to reach does not exist"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.arrivals.extend(time.time() for _ in envelope.rcpt_tos)
        return "250 OK"


class Command(BaseCommand):
    help = "Run the Sendplane demo on the embedded default: templates, a campaign, workers, a local SMTP sink."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--recipients", type=int, default=3000)
        parser.add_argument("--rate", type=float, default=150.0, help="the demo domain's messages per second")
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--smtp-port", type=int, default=2525)
        parser.add_argument("--no-incident", action="store_true", help="skip the bad-list act (the detector pausing a domain)")

    def handle(self, *args: Any, **options: Any) -> None:
        versions = self._templates()
        sink, controller = self._start_sink(options["smtp_port"])
        workers = self._start_workers(options["workers"], options["smtp_port"])
        try:
            template = versions[0].variant.template
            campaign = self._campaign(template, DEMO_DOMAIN, options["rate"])
            started = time.time()
            self._trigger(campaign, options["recipients"], bad_share=0)
            self._watch(campaign, started)
            self._summary(campaign, sink.arrivals, started, campaign.sending_domain)
            if not options["no_incident"]:
                self._incident(template)
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(timeout=30)
            controller.stop()

    def _templates(self) -> list[Any]:
        marketer = _demo_marketer()
        try:
            versions = examples_load()
            for version in versions:
                assessment = version_assess(version_id=version.pk)
                if assessment is None:  # only a version deleted meanwhile has none
                    raise CommandError(f"example version {version.pk} was deleted while it was scored")
                failures = len(assessment.blocking_failures)
                self.stdout.write(f"  {version}: spam score {assessment.score} ({assessment.state}), {failures} blocking check failures")
                registry.version_approve(version=version, approved_by=marketer)
        except (RenderError, RegistryError) as exc:
            raise CommandError(f"an example template is invalid: {exc}") from None
        slug = versions[0].variant.template.slug
        self.stdout.write(f"Loaded, scored and approved {len(versions)} example variants of template {slug!r}.")
        return versions

    def _start_sink(self, port: int) -> tuple[_CountingSink, Controller]:
        sink = _CountingSink()
        controller = Controller(sink, hostname="127.0.0.1", port=port)
        try:
            controller.start()
        except (OSError, RuntimeError) as exc:
            raise CommandError(f"cannot start the demo SMTP sink on 127.0.0.1:{port}: {exc}; try --smtp-port") from None
        self.stdout.write(f"SMTP sink listening on 127.0.0.1:{port}.")
        return sink, controller

    def _start_workers(self, count: int, smtp_port: int) -> list[subprocess.Popen[bytes]]:
        env = {**os.environ, "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(smtp_port)}
        log = open(Path(settings.DATA_DIR) / "demo-workers.log", "ab")  # noqa: SIM115 - lives as long as the workers
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "--pool=solo", "-n", f"demo{i}@%h", "--loglevel=WARNING"],
                env=env, stdout=log, stderr=log, cwd=settings.BASE_DIR,
            )
            for i in range(count)
        ]
        self.stdout.write(f"Started {count} Celery worker processes (log: {log.name}).")
        return workers

    def _campaign(self, template: Any, name: str, rate: float) -> Campaign:
        domain = SendingDomain.objects.filter(domain=name).first()
        if domain is None:
            domain = domain_create(
                domain=name, default_sender=f"news@{name}", rate_per_second=rate, burst=max(1, int(rate / 5)), actor="command:demo"
            )
        else:  # a demo run again: start the domain fresh (a person resuming it, with no ramp)
            if domain.paused:
                domain_resume(domain=domain, actor=None, ramp_minutes=0, force=True, reason="demo run again")
            domain = domain_update(domain=domain, actor="command:demo", rate_per_second=rate, burst=max(1, int(rate / 5)))
        campaign = campaign_create(name=f"Demo {time.strftime('%H:%M:%S')}", template=template, sending_domain=domain)
        self.stdout.write(f"Campaign {campaign.pk} from {name} at {domain.rate_per_second:g} msg/s (burst {domain.burst}).")
        return campaign

    def _trigger(self, campaign: Campaign, count: int, *, bad_share: float) -> None:
        """Recipients, of whom ``bad_share`` are addresses the receiving server does not know."""
        every = round(1 / bad_share) if bad_share else 0
        people = [
            {"address": _address(i, gone=bool(every) and i % every == 0, run=campaign.pk), "context": _context(i)}
            for i in range(count)
        ]
        response, _ = trigger_accept(campaign=campaign, idempotency_key=f"demo-{campaign.pk}", recipients=people)
        self.stdout.write(f"Trigger accepted {response['accepted']}, suppressed {response['suppressed']}, rejected {response['rejected']}.")

    def _incident(self, template: Any) -> None:
        """A bad list import on a second domain, until the detector pauses it."""
        name = IMPORT_DOMAIN.format(n=SendingDomain.objects.filter(domain__startswith="imports").count() + 1)
        self.stdout.write(self.style.WARNING(
            f"\nNow a bad list: {name} sends to an imported list where one address in three does not exist."
        ))
        self.stdout.write(
            "The workers judge its bounces after every batch that hears refusals, and the anomaly detector every minute "
            "(as the beat would): it should be paused within a few dozen messages."
        )
        campaign = self._campaign(template, name, 25.0)
        self._trigger(campaign, 4000, bad_share=1 / 3)
        started = time.time()
        evidence = self._watch(campaign, started, detect=True)
        progress = campaign_progress(campaign=campaign)
        if evidence is None:
            self.stdout.write(self.style.ERROR("The campaign finished before the detector acted."))
            return
        handed_over = progress["sent"] + progress["failed"]
        self.stdout.write(self.style.SUCCESS(f"{name} was paused after {time.time() - started:.0f} s and {handed_over} messages:"))
        self.stdout.write(f"  {evidence.summary()}")
        self.stdout.write(f"  {progress['queued']} messages wait, unsent; {progress['failed']} unknown users were suppressed.")
        self.stdout.write("  See the evidence and the chart in the admin (Sending domains); resuming a detector pause needs force.")

    def _watch(self, campaign: Campaign, started: float, *, detect: bool = False) -> PauseEvidence | None:
        """The beat, run here: the sweeper every tick, the detector once a minute; a progress bar until done or paused."""
        last_detect = timezone.now().replace(second=0, microsecond=0)
        while True:
            sweep()
            if detect and timezone.now() >= last_detect + timedelta(minutes=1):
                last_detect = timezone.now().replace(second=0, microsecond=0)
                detector_run()
            evidence = self._pause_evidence(campaign) if detect else None
            if evidence is not None:  # by a worker between minutes, or by the minute pass just now
                self.stdout.write("")
                return evidence
            progress = campaign_progress(campaign=campaign)
            done = sum(progress[s] for s in TERMINAL)
            self._bar(progress, done, time.time() - started)
            if done >= progress["total"]:
                break
            time.sleep(0.5)  # the demo's own beat interval, not a delivery mechanism
        self.stdout.write("")
        return None

    @staticmethod
    def _pause_evidence(campaign: Campaign) -> PauseEvidence | None:
        if not SendingDomain.objects.filter(pk=campaign.sending_domain_id, paused=True).exists():
            return None
        return PauseEvidence.objects.filter(sending_domain_id=campaign.sending_domain_id).first()

    def _bar(self, progress: dict[str, int], done: int, elapsed: float) -> None:
        rate = progress["sent"] / elapsed if elapsed > 0 else 0.0
        detail = f"sent {progress['sent']} ({rate:5.0f}/s) queued {progress['queued']} failed {progress['failed']}"
        self.stdout.write("\r" + bar_line(done, max(1, progress["total"]), detail=detail), ending="")
        self.stdout.flush()

    def _summary(self, campaign: Campaign, arrivals: list[float], started: float, domain: SendingDomain) -> None:
        progress = campaign_progress(campaign=campaign)
        elapsed = time.time() - started
        per_second = Counter(int(t) for t in arrivals)
        peak = max(per_second.values(), default=0)
        self.stdout.write(self.style.SUCCESS(
            f"Done in {elapsed:.1f} s: {progress['sent']} sent, {progress['failed']} failed, {progress['unknown']} unknown, "
            f"{progress['suppressed']} suppressed; the sink received {len(arrivals)}."
        ))
        self.stdout.write(
            f"Smoothing: busiest second at the sink {peak} messages; the domain allows {domain.rate_per_second:g}/s + burst {domain.burst}."
        )
        self.stdout.write(f"Open the admin to look around: .venv/bin/python manage.py runserver (data in {settings.DATA_DIR}).")


def _demo_marketer() -> User:
    user, _ = User.objects.get_or_create(username="demo-marketer")
    user.groups.add(Group.objects.get_or_create(name="marketer")[0])
    return user


def _address(i: int, *, gone: bool, run: int) -> str:
    # Unknown users are suppressed once they bounce: each run imports new ones.
    return f"{GONE}{i}.{run}@example.net" if gone else f"reader{i}@{'gmail.com' if i % 3 == 0 else 'example.org'}"


def _context(i: int) -> dict[str, Any]:
    return example_variables() | {"first_name": f"Reader {i}", "email": f"reader{i}@example.org"}
