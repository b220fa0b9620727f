"""Drop DRF authtoken's table, left behind when ``rest_framework.authtoken`` left INSTALLED_APPS.

Its keys are plaintext at rest and no longer authenticate anything; issue new
tokens with ``manage.py create_token``. Irreversible in effect: the old keys
are gone (reversing is a no-op).
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("access", "0001_api_tokens")]

    operations = [migrations.RunSQL("DROP TABLE IF EXISTS authtoken_token", reverse_sql=migrations.RunSQL.noop)]
