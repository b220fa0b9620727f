"""The Celery app. Configuration comes from Django settings (``CELERY_*``)."""

from __future__ import annotations

import logging.config
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun

from controlplane.correlation import on_task_postrun, on_task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("sendplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Every task runs under its publisher's correlation id (controlplane/correlation.py).
task_prerun.connect(on_task_prerun, weak=False)
task_postrun.connect(on_task_postrun, weak=False)


@setup_logging.connect(weak=False)
def _django_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Workers and beat log as the web process does (SENDPLANE_LOG_FORMAT), at the level of ``-l``."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)
