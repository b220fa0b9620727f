"""``resolve_unknown CAMPAIGN (--sent | --requeue) [--message UUID ...]``: settle unknown rows.

See ops/runbooks/unknown-messages.md: read the relay's log for each Message-ID first.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dispatch.models import Campaign, Message, MessageStatus
from dispatch.services.campaigns import messages_resolve_unknown


class Command(BaseCommand):
    help = "List or settle a campaign's messages in the unknown state."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign", type=int)
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--sent", action="store_true", help="the relay accepted them: mark sent")
        action.add_argument("--requeue", action="store_true", help="the relay never accepted them: send again")
        parser.add_argument("--message", action="append", dest="uuids", help="only this message (uuid); repeatable")

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = Campaign.objects.filter(pk=options["campaign"]).first()
        if campaign is None:
            raise CommandError(f"no campaign {options['campaign']}")
        if not (options["sent"] or options["requeue"]):
            self._list(campaign)
            return
        changed = messages_resolve_unknown(
            campaign=campaign, outcome="sent" if options["sent"] else "requeue", uuids=options["uuids"], actor="command:resolve_unknown"
        )
        self.stdout.write(f"{changed} unknown message(s) of campaign {campaign.pk} marked {'sent' if options['sent'] else 'queued again'}.")

    def _list(self, campaign: Campaign) -> None:
        rows = Message.objects.filter(campaign=campaign, status=MessageStatus.UNKNOWN).select_related("sending_domain")
        for message in rows:
            self.stdout.write(f"{message.message_id()}\t{message.recipient}\t{message.last_reply}")
        self.stdout.write(f"{rows.count()} unknown message(s) in campaign {campaign.pk}.")
