"""``revoke_token PREFIX``: revoke the API token with that prefix (the 8 characters after ``sp_``).

Prints one line saying what happened; revoking a revoked token is not an
error. Unknown prefix: one line on stderr, exit 1.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from access.selectors import token_by_prefix
from access.services import token_revoke


class Command(BaseCommand):
    help = "Revoke the API token with PREFIX; requests carrying it are refused from now on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        token = token_by_prefix(options["prefix"])
        if token is None:
            self.stderr.write(f"no token with prefix {options['prefix']!r}")
            sys.exit(1)
        owner = token.user.get_username()
        if token_revoke(token=token, revoked_by=None):
            self.stdout.write(f"revoked token {token.prefix} ({token.name}) of {owner}")
        else:
            revoked_at = f"{token.revoked_at:%Y-%m-%d %H:%M:%S %Z}"
            self.stdout.write(f"token {token.prefix} ({token.name}) of {owner} was already revoked at {revoked_at}")
