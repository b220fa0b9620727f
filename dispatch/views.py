"""The recipient-facing unsubscribe page: GET shows a button, POST unsubscribes (RFC 8058)."""

from __future__ import annotations

import time

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from access.throttling import throttle_per_address
from dispatch.services.unsubscribe import message_for_token, unsubscribe_one_click

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title>
<meta name="viewport" content="width=device-width"></head>
<body style="font-family:sans-serif;max-width:32rem;margin:4rem auto">{body}</body></html>"""


@csrf_exempt  # mailbox providers POST with no session or CSRF token (RFC 8058)
@require_http_methods(["GET", "POST"])
@throttle_per_address("unsubscribe")  # public and unauthenticated: SENDPLANE_UNSUBSCRIBE_THROTTLE per client address
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET never unsubscribes: link scanners and previews fetch URLs on their own."""
    if request.method == "POST":
        message = unsubscribe_one_click(token=token, arrived=time.monotonic())
        if message is None:
            return HttpResponse(_PAGE.format(body="<p>This unsubscribe link is not valid.</p>"), status=404)
        return HttpResponse(_PAGE.format(body="<p>You are unsubscribed. You will get no more of these emails.</p>"))
    if message_for_token(token) is None:
        return HttpResponse(_PAGE.format(body="<p>This unsubscribe link is not valid.</p>"), status=404)
    form = '<form method="post"><button type="submit" style="font-size:1.2rem">Unsubscribe</button></form>'
    return HttpResponse(_PAGE.format(body=f"<p>Stop receiving these emails?</p>{form}"))
