"""Hash stored addresses by their matching form (controlplane.addresses) instead of lower case alone.

Only addresses that are not plain ASCII, or whose domain is in punycode, hash
differently; the rest are left as they are. Two suppressions that now name one
person in one scope (``ana@bücher.example`` and ``ana@xn--bcher-kva.example``)
are one: the row already under the new hash is kept. Rows erased before this migration keep their hash
(there is no address left to recompute it from).
"""

from django.db import migrations
from django.db.models import Q

from controlplane.addresses import address_hash

# Addresses whose key differs from their lower case: non-ASCII anywhere, or a domain in A-labels or with a final dot.
_CHANGED = r"[^\x01-\x7f]|@.*xn--|\.$"


def rehash(apps, schema_editor):
    Suppression = apps.get_model("deliverability", "Suppression")
    FeedbackEvent = apps.get_model("deliverability", "FeedbackEvent")
    for row in Suppression.objects.filter(Q(address__iregex=_CHANGED)).order_by("created_at", "pk"):
        digest = address_hash(row.address)
        if digest == row.address_hash:
            continue
        if Suppression.objects.filter(address_hash=digest, sending_domain_id=row.sending_domain_id).exists():
            row.delete()  # the same person, same scope, suppressed twice under two spellings
        else:
            Suppression.objects.filter(pk=row.pk).update(address_hash=digest)
    for event in FeedbackEvent.objects.filter(recipient__iregex=_CHANGED).only("pk", "recipient").iterator():
        FeedbackEvent.objects.filter(pk=event.pk).update(recipient_hash=address_hash(event.recipient))


class Migration(migrations.Migration):

    dependencies = [
        ("deliverability", "0007_feedbackevent_verified"),
    ]

    operations = [
        migrations.RunPython(rehash, migrations.RunPython.noop),
    ]
