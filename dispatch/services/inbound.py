"""The mailbox's and the upload's one entry: a mail to the List-Unsubscribe mailto, else a bounce or a complaint."""

from __future__ import annotations

import time

from django.conf import settings

from dispatch.services.feedback import Ingested, bounce_ingest, ingested
from dispatch.services.unsubscribe import mailto_token, unsubscribe_by_token


def mail_ingest(*, raw: bytes, source: str) -> list[Ingested]:
    """An unsubscribe when ``raw`` was sent to a signed ``unsubscribe+<token>@`` address; else ``bounce_ingest``.

    A mail to that address with a token that does not verify is no unsubscribe:
    it goes on as any other mail (recorded as evidence, tied to nothing).
    """
    arrived = time.monotonic()
    token = mailto_token(raw) if len(raw) <= settings.SENDPLANE_BOUNCE_MAX_BYTES else None  # else bounce_ingest refuses it
    done = unsubscribe_by_token(token=token, via="mailto", arrived=arrived) if token else None
    if done is None:
        return bounce_ingest(raw=raw, source=source)
    message, event, created = done
    return [ingested(event, created, message=message)]
