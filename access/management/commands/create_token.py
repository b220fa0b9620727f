"""``create_token USERNAME [--name NAME]``: issue an API token and print it, once, on one line.

Only the token goes to stdout, so ``TOKEN=$(manage.py create_token ana)`` works.
Unknown user or bad name: one line on stderr, exit 1.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from access.services import TokenError, token_create


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it once (only its hash is kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="what the token is for (default: cli)")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        try:
            user = users.objects.get_by_natural_key(options["username"])
            _, plaintext = token_create(user=user, name=options["name"], created_by=None)
        except users.DoesNotExist:
            self._fail(f"no user named {options['username']!r}")
        except TokenError as exc:
            self._fail(str(exc))
        self.stdout.write(plaintext)

    def _fail(self, line: str) -> NoReturn:
        self.stderr.write(line)
        sys.exit(1)
