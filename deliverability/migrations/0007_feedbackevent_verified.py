"""FeedbackEvent.verified (issue 15): only verified reports suppress and feed the detector.

Rows written before it: those from our own SMTP session or an unsubscribe token
are verified by construction; every other report was never checked against its
message's recipient, so it stays unverified (history is not rewritten as trusted).
"""

from django.db import migrations, models


def mark_self_evident(apps, schema_editor):
    FeedbackEvent = apps.get_model("deliverability", "FeedbackEvent")
    FeedbackEvent.objects.filter(matched_by__in=["smtp", "token"]).update(verified=True)


class Migration(migrations.Migration):

    dependencies = [
        ("deliverability", "0006_domain_smtp_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="feedbackevent",
            name="verified",
            field=models.BooleanField(default=False, help_text="Tied to our message and its recipient: it suppressed and counted"),
        ),
        migrations.RunPython(mark_self_evident, migrations.RunPython.noop),
    ]
