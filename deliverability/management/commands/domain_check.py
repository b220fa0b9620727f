"""``domain_check DOMAIN [--json]``: the providers' sender rules for one sending domain, each with what to fix.

One line per rule (status, rule, required or optional, message, fix), then a
summary line; ``--json`` prints one JSON document instead. The check is stored
as the domain's last (the admin and ``GET /api/v1/domains/{domain}/check`` show
it). Exit 0 when every required rule passes, 1 otherwise; bad input (a
malformed or unknown domain): one line on stderr, exit 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandParser

from controlplane.addresses import own_address_problem
from deliverability.models import SendingDomain
from deliverability.services.sender_rules import DomainCheckReport, RuleResult, domain_check

BAD_INPUT = 2


class Command(BaseCommand):
    help = "Check a sending domain against the mailbox providers' sender rules (SPF, DKIM, DMARC, reverse DNS, unsubscribe)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("domain")
        parser.add_argument("--json", action="store_true", help="one JSON document instead of a line per rule")

    def handle(self, *args: Any, **options: Any) -> None:
        report = domain_check(self._domain(options["domain"]))
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict()))
        else:
            for result in report.results:
                self.stdout.write(_line(result))
            self.stdout.write(_summary(report))
        sys.exit(0 if report.passed else 1)

    def _domain(self, given: str) -> SendingDomain:
        name = given.strip().lower()
        problem = own_address_problem(f"postmaster@{name}") if name and "@" not in name else "not a domain name"
        if problem:
            self._fail(f"{given!r} is not a domain name ({problem.removeprefix('invalid address: ')})")
        found = SendingDomain.objects.filter(domain=name).first()
        if found is None:
            self._fail(f"no sending domain {name} (see manage.py shell, the admin's sending domains, or GET /api/v1/domains/)")
        return found

    def _fail(self, line: str) -> NoReturn:
        self.stderr.write(" ".join(line.split()))
        sys.exit(BAD_INPUT)


def _line(result: RuleResult) -> str:
    fix = f" -- fix: {result.fix}" if result.fix else ""
    return f"{result.status.upper():7} {result.rule:12} {'required' if result.required else 'optional':8} {result.message}{fix}"


def _summary(report: DomainCheckReport) -> str:
    bulk = f"{report.org_domain} is a Gmail bulk sender" if report.bulk_sender else f"{report.org_domain} is not a Gmail bulk sender"
    failing = ", ".join(result.rule for result in report.failing())
    verdict = "every required rule passes" if report.passed else f"required rules not passing: {failing}"
    return f"{report.domain}: {verdict} ({bulk})"
