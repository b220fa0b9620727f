"""Partial indexes for retention (dispatch.services.retention): feedback events and withdrawn consents still in clear."""

from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):
    dependencies = [("deliverability", "0014_consent_sender_rules")]

    operations = [
        migrations.AddIndex(
            model_name="feedbackevent",
            index=models.Index(
                fields=["received_at"], condition=~Q(recipient="") | ~Q(smtp_reply="") | ~Q(detail={}), name="event_retention"
            ),
        ),
        migrations.AddIndex(
            model_name="consentrecord",
            index=models.Index(
                fields=["withdrawn_at"],
                condition=Q(withdrawn_at__isnull=False) & (~Q(address="") | ~Q(evidence={})),
                name="consent_retention",
            ),
        ),
    ]
