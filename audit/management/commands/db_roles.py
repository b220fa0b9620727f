"""``db_roles APP_ROLE``: grant the web and worker role what it needs, and nothing it could use to rewrite history.

Run it as the role that owns the tables (the one ``migrate`` runs as), after
every ``migrate``: ``sendplane-migrate.service`` does. It is idempotent.

The app role (``sendplane_app`` in ops/deploy/roles.sql) owns nothing, so it
cannot TRUNCATE the audit trail, ALTER TABLE ... DISABLE TRIGGER or DROP
TRIGGER: those need ownership (or the TRUNCATE/TRIGGER privilege, never
granted). It gets SELECT, INSERT, UPDATE, DELETE on every table and USAGE,
SELECT on every sequence, now and (ALTER DEFAULT PRIVILEGES) for tables later
migrations create; on ``audit_auditentry`` only SELECT, INSERT and UPDATE of
``actor_id`` (Django sets it to NULL when a user is deleted; the append-only
trigger allows exactly that UPDATE and nothing else).

Refuses (exit 1) when the app role is missing, is the current role, is a
superuser or may become the owner (member of it), or owns anything in the
database. ``--check`` only runs those checks.
"""

from __future__ import annotations

import re
import sys
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandParser
from django.db import connection, transaction

from audit.models import AuditEntry

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_statements(app_role: str, schema: str, audit_table: str) -> list[str]:
    """The statements, in order; names are validated identifiers, quoted."""
    q = connection.ops.quote_name
    app, sch, audit = q(app_role), q(schema), f"{q(schema)}.{q(audit_table)}"
    return [
        f"GRANT USAGE ON SCHEMA {sch} TO {app}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {sch} TO {app}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {sch} TO {app}",
        # Tables and sequences the current role (the owner) creates later, i.e. by the next migrations.
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {sch} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {sch} GRANT USAGE, SELECT ON SEQUENCES TO {app}",
        # The audit trail: read and append; UPDATE of actor_id only (user deletion, SET_NULL).
        f"REVOKE ALL ON {audit} FROM {app}",
        f"GRANT SELECT, INSERT ON {audit} TO {app}",
        f"GRANT UPDATE ({q('actor_id')}) ON {audit} TO {app}",
    ]


class Command(BaseCommand):
    help = "Grant APP_ROLE (the web and worker database role) its privileges; run as the tables' owner after migrate."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("app_role", help="the role web and workers log in as, e.g. sendplane_app")
        parser.add_argument("--check", action="store_true", help="only check that APP_ROLE is safe (owns nothing, is not the owner)")

    def handle(self, *args: Any, **options: Any) -> None:
        app_role: str = options["app_role"]
        if connection.vendor != "postgresql":
            self._fail("db_roles needs PostgreSQL (DATABASE_URL is not postgres://)")
        if not _ROLE_NAME.match(app_role):
            self._fail(f"{app_role!r} is not a plain role name ([a-z_][a-z0-9_]*)")
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_schema()")
            owner, schema = cursor.fetchone()
            cursor.execute(
                "SELECT rolsuper, pg_has_role(oid, %s, 'MEMBER') FROM pg_roles WHERE rolname = %s",
                [owner, app_role],
            )
            row = cursor.fetchone()
            if row is None:
                self._fail(f"role {app_role} does not exist (create it: ops/deploy/roles.sql)")
            superuser, member_of_owner = row
            if app_role == owner:
                self._fail(f"{app_role} is the role this command runs as: run it as the owner, with the app role as argument")
            if superuser:
                self._fail(f"{app_role} is a superuser: it could do anything to the audit trail")
            if member_of_owner:
                self._fail(f"{app_role} is a member of {owner}: it could SET ROLE {owner} and act as the owner")
            if not options["check"]:
                for statement in grant_statements(app_role, schema, AuditEntry._meta.db_table):
                    cursor.execute(statement)
            owned = self._owned_by(cursor, app_role)
        if owned:
            self._fail(f"{app_role} owns {', '.join(owned[:10])}: ALTER ... OWNER TO {owner} (web and workers must own nothing)")
        verb = "checked" if options["check"] else "granted"
        self.stdout.write(
            f"{verb} {app_role}: owns nothing; DML on the tables of schema {schema} owned by {owner}; "
            f"{AuditEntry._meta.db_table}: SELECT, INSERT, UPDATE (actor_id) only"
        )

    @staticmethod
    def _owned_by(cursor: Any, role: str) -> list[str]:
        cursor.execute(
            """
            SELECT 'relation ' || c.oid::regclass::text FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = %s
            UNION ALL
            SELECT 'schema ' || n.nspname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE r.rolname = %s
            UNION ALL
            SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE r.rolname = %s
            UNION ALL
            SELECT 'database ' || d.datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
             WHERE r.rolname = %s AND d.datname = current_database()
            """,
            [role, role, role, role],
        )
        return [name for (name,) in cursor.fetchall()]

    def _fail(self, message: str) -> NoReturn:
        self.stderr.write(message)
        sys.exit(1)
