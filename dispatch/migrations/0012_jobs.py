"""Long work with its progress (dispatch.services.jobs): a job, and its items still to do (deleted as done)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('dispatch', '0011_retention_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Job',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('rescore', 'Version re-scoring'), ('suppression_import', 'Suppression import'), ('erasure', 'Erasure')], max_length=24)),
                ('state', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('done', 'Done'), ('failed', 'Failed')], default='queued', max_length=8)),
                ('total', models.PositiveIntegerField(help_text="Items to do: the input's good lines, or the versions")),
                ('done', models.PositiveIntegerField(default=0)),
                ('counts', models.JSONField(blank=True, default=dict, help_text='Outcomes by name (added, already suppressed, ...)')),
                ('summary', models.CharField(blank=True, max_length=300)),
                ('problems', models.JSONField(blank=True, default=list, help_text='One line each, the first 100')),
                ('problem_count', models.PositiveIntegerField(default=0)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('runner', models.UUIDField(blank=True, null=True)),
                ('lease_until', models.DateTimeField(blank=True, null=True)),
                ('claims', models.PositiveIntegerField(default=0, help_text='Runs that took the job up (more than one: it was resumed)')),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-created_at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='JobItem',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('position', models.PositiveIntegerField()),
                ('line', models.PositiveIntegerField(default=0, help_text="The input's line, for problems; 0: not from a list")),
                ('data', models.JSONField()),
                ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='items', to='dispatch.job')),
            ],
            options={
                'ordering': ['job_id', 'position'],
            },
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('state__in', ['queued', 'running'])), fields=['lease_until'], name='job_unfinished_lease'),
        ),
        migrations.AddConstraint(
            model_name='jobitem',
            constraint=models.UniqueConstraint(fields=('job', 'position'), name='job_item_position'),
        ),
    ]
