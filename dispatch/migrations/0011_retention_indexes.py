"""Partial indexes for retention (dispatch.services.retention): the rows still to blank, by age.

A blanked row leaves its index, so each batch starts at the oldest row still
in clear instead of walking every row already done. On a large outbox run
this migration in a quiet hour: CREATE INDEX locks writes to the table while it builds.
"""

from django.db import migrations, models
from django.db.models import Q

FINAL = ["sent", "failed", "suppressed", "cancelled"]


class Migration(migrations.Migration):
    dependencies = [("dispatch", "0010_campaign_purpose")]

    operations = [
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["created_at"], condition=Q(status__in=FINAL) & ~Q(context={}), name="message_retention_context"),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["created_at"], condition=Q(status__in=FINAL) & ~Q(recipient=""), name="message_retention_address"),
        ),
        migrations.AddIndex(
            model_name="trigger",
            index=models.Index(
                fields=["created_at"],
                condition=(
                    ~Q(idempotency_key__startswith="erased:")
                    | ~Q(response__suppressed_recipients=[])
                    | ~Q(response__rejections=[])
                    | ~Q(response__without_consent_recipients=[])
                ),
                name="trigger_retention",
            ),
        ),
    ]
