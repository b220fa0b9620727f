from django.db import migrations, models


class Migration(migrations.Migration):
    """Triggers keep their request's correlation id (issue 8: structured logs); older rows have none."""

    dependencies = [
        ("dispatch", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="trigger",
            name="correlation_id",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
    ]
