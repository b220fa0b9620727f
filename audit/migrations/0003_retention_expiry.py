"""Retention may delete audit entries past SENDPLANE_RETENTION_AUDIT_DAYS, and nothing else may.

The trail stays append-only against the application (ops/security.md, "The
audit trail against the application itself"): the app role still has no
DELETE on ``audit_auditentry``. Expiry goes through one function,
``audit_entries_expire(before, max_rows)``, owned by the migrating role and run
with its rights (SECURITY DEFINER). It refuses a cutoff younger than the
floor below, so a compromised web or worker process can never delete recent
entries (its own tracks); it marks the transaction, and the append-only
trigger lets a DELETE through only under that mark and only for an entry
older than the floor. ``audit.services.audit_entries_expire`` is its one
caller; settings refuse a retention under the floor (SENDPLANE_RETENTION_AUDIT_DAYS).
"""

from django.db import migrations

FLOOR = "365 days"  # keep in step with AUDIT_RETENTION_FLOOR_DAYS in controlplane/settings.py

TRIGGER = f"""
CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.actor_id IS NOT NULL AND NEW.actor_id IS NULL
       AND to_jsonb(NEW) - 'actor_id' = to_jsonb(OLD) - 'actor_id' THEN
        RETURN NEW;  -- the user was deleted: ON DELETE SET NULL, done by Django
    END IF;
    IF TG_OP = 'DELETE' AND current_setting('sendplane.audit_expiring', true) = 'on'
       AND OLD.created_at < now() - interval '{FLOOR}' THEN
        RETURN OLD;  -- retention, inside audit_entries_expire
    END IF;
    RAISE EXCEPTION 'audit_auditentry is append-only: % of entry % refused', TG_OP, OLD.id
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
"""

EXPIRE = f"""
CREATE OR REPLACE FUNCTION audit_entries_expire(p_before timestamptz, p_max_rows integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $$
DECLARE
    deleted integer;
BEGIN
    IF p_before > now() - interval '{FLOOR}' THEN
        RAISE EXCEPTION 'audit entries are kept at least {FLOOR}: cutoff % refused', p_before
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('sendplane.audit_expiring', 'on', true);
    DELETE FROM audit_auditentry WHERE id IN (
        SELECT id FROM audit_auditentry WHERE created_at < p_before ORDER BY created_at, id LIMIT p_max_rows
    );
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('sendplane.audit_expiring', 'off', true);
    RETURN deleted;
END;
$$;
"""

# 0002's trigger function, as it was.
APPEND_ONLY = """
CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.actor_id IS NOT NULL AND NEW.actor_id IS NULL
       AND to_jsonb(NEW) - 'actor_id' = to_jsonb(OLD) - 'actor_id' THEN
        RETURN NEW;  -- the user was deleted: ON DELETE SET NULL, done by Django
    END IF;
    RAISE EXCEPTION 'audit_auditentry is append-only: % of entry % refused', TG_OP, OLD.id
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
DROP FUNCTION IF EXISTS audit_entries_expire(timestamptz, integer);
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite has no trigger: audit.services.audit_entries_expire deletes directly
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        schema = schema_editor.connection.ops.quote_name(cursor.fetchone()[0])
    schema_editor.execute(TRIGGER, params=None)  # None: the % in RAISE is not a placeholder
    schema_editor.execute(EXPIRE.format(schema=schema), params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPEND_ONLY, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
