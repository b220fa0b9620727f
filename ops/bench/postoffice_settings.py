"""Settings for the django-post-office peer of ``ops/bench/dispatch``.

Sendplane's own settings (so the same database server, SMTP settings and
Django version), plus ``post_office`` and its configuration. The driver points
``DATABASE_URL`` at a database of its own (``bench_postoffice``) and
``EMAIL_HOST``/``EMAIL_PORT`` at the same smtp-sink Sendplane sends to.
Importable as ``postoffice_settings`` with ``ops/bench`` on ``PYTHONPATH``.

The knobs are post-office's own (``BENCH_PO_*`` so Sendplane's settings, which
refuse unknown ``SENDPLANE_*`` names, are not involved).
"""

from __future__ import annotations

import os

from controlplane.settings import *  # noqa: F403 - extends the project settings
from controlplane.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "post_office"]

POST_OFFICE = {
    # Delivery through Django's SMTP backend: EMAIL_HOST / EMAIL_PORT, the same sink.
    "BACKENDS": {"default": "django.core.mail.backends.smtp.EmailBackend"},
    "DEFAULT_PRIORITY": "medium",  # queued, sent by ``send_queued_mail``
    # A stable Message-ID stored with each email, so the sink can spot duplicates.
    "MESSAGE_ID_ENABLED": True,
    "MESSAGE_ID_FQDN": os.environ.get("BENCH_PO_MESSAGE_ID_FQDN", "bench.sendplane.test"),
    # Emails fetched per round of ``send_queued_mail`` (post-office's default is 100)
    # and threads per process (default 5).
    "BATCH_SIZE": int(os.environ.get("BENCH_PO_BATCH_SIZE", "100")),
    "THREADS_PER_PROCESS": int(os.environ.get("BENCH_PO_THREADS", "5")),
    # post-office's default (2) writes a Log row per sent email; kept as shipped.
    "LOG_LEVEL": int(os.environ.get("BENCH_PO_LOG_LEVEL", "2")),
}
