"""ops/deploy/roles.sql + ``manage.py db_roles``: web and workers log in as a role that owns nothing.

Against the real PostgreSQL, in a database of its own: roles.sql creates an
owner and an app role (unique names), ``migrate`` runs as the owner, then
``db_roles`` grants the app role. Connected as the app role, the audit trail
takes INSERTs and refuses UPDATE, DELETE, TRUNCATE, DISABLE TRIGGER and DROP
TRIGGER on privilege grounds (not only the trigger's), while ordinary tables,
tables created by later migrations and the Django app itself work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from psycopg import errors

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ROLES_SQL = ROOT / "ops" / "deploy" / "roles.sql"


def _admin() -> dict[str, Any]:
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL")
    return {"host": db["HOST"] or "127.0.0.1", "port": int(db["PORT"] or 5432), "user": db["USER"], "password": db["PASSWORD"] or ""}


def _url(admin: dict[str, Any], user: str, dbname: str) -> str:
    return f"postgres://{user}@{admin['host']}:{admin['port']}/{dbname}"  # the tests' server trusts local roles


def _manage(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installation() -> Iterator[dict[str, str]]:
    admin = _admin()
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("needs psql (roles.sql is a psql script)")
    suffix = uuid.uuid4().hex[:10]
    names = {"owner": f"sp_owner_{suffix}", "app": f"sp_app_{suffix}", "db": f"sp_roles_{suffix}"}
    env = {**os.environ, "PGPASSWORD": admin["password"]}
    try:
        subprocess.run(
            [psql, "-X", "-q", "-h", admin["host"], "-p", str(admin["port"]), "-U", admin["user"], "-d", "postgres",
             *(f"-v{k}={v}" for k, v in names.items()), "-f", str(ROLES_SQL)],
            env=env, check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        owner_url = _url(admin, names["owner"], names["db"])
        migrated = _manage(owner_url, "migrate", "--noinput")
        assert migrated.returncode == 0, migrated.stderr
        granted = _manage(owner_url, "db_roles", names["app"])
        assert granted.returncode == 0, granted.stderr
        assert "owns nothing" in granted.stdout
        yield {**names, "owner_url": owner_url, "app_url": _url(admin, names["app"], names["db"])}
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{names["db"]}" WITH (FORCE)')
            for role in (names["app"], names["owner"]):
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def app(installation: dict[str, str]) -> Iterator[psycopg.Connection]:
    with psycopg.connect(installation["app_url"], autocommit=True) as conn:
        yield conn


def _refused(conn: psycopg.Connection, sql: str, why: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege) as refused:
        conn.execute(sql)
    assert why in str(refused.value), str(refused.value)  # the privilege system's refusal, not the trigger's


def _audit_row(conn: psycopg.Connection, actor_id: int | None = None) -> int:
    row = conn.execute(
        "INSERT INTO audit_auditentry (created_at, actor_id, actor_label, action, target_type, target_id, target_label, reason, data)"
        " VALUES (now(), %s, 'tester', 'test.action', 'test', '1', 'one', '', '{}') RETURNING id",
        [actor_id],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_app_role_appends_to_the_audit_trail_and_cannot_rewrite_it(app: psycopg.Connection) -> None:
    entry = _audit_row(app)
    assert app.execute("SELECT action FROM audit_auditentry WHERE id = %s", [entry]).fetchone() == ("test.action",)

    _refused(app, f"UPDATE audit_auditentry SET reason = 'rewritten' WHERE id = {entry}", "permission denied")
    _refused(app, f"DELETE FROM audit_auditentry WHERE id = {entry}", "permission denied")
    _refused(app, "TRUNCATE audit_auditentry", "permission denied")
    _refused(app, "ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entry_append_only", "must be owner")
    _refused(app, "ALTER TABLE audit_auditentry DISABLE TRIGGER ALL", "must be owner")
    _refused(app, "DROP TRIGGER audit_entry_append_only ON audit_auditentry", "must be owner")
    _refused(app, "DROP FUNCTION audit_entry_append_only()", "must be owner")
    _refused(app, "DROP TABLE audit_auditentry", "must be owner")
    _refused(app, "CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
             "permission denied")  # fmt: skip
    _refused(app, "CREATE TABLE sneaky (id int)", "permission denied")
    assert app.execute("SELECT count(*) FROM audit_auditentry WHERE id = %s AND reason = ''", [entry]).fetchone() == (1,)
    # Still enforced, and both layers present: the trigger is enabled.
    assert app.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_entry_append_only'").fetchone() == ("O",)


def test_deleting_a_user_may_still_null_the_actor_and_nothing_more(app: psycopg.Connection) -> None:
    row = app.execute(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)"
        " VALUES ('!', false, %s, '', '', '', false, true, now()) RETURNING id",
        [f"leaver-{uuid.uuid4().hex[:8]}"],
    ).fetchone()
    assert row is not None
    user_id = int(row[0])
    entry = _audit_row(app, user_id)
    # The trigger refuses any other actor_id change, even the granted column.
    with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
        app.execute("UPDATE audit_auditentry SET actor_id = actor_id WHERE id = %s", [entry])
    _refused(app, f"UPDATE audit_auditentry SET actor_id = NULL, actor_label = 'x' WHERE id = {entry}", "permission denied")
    # What Django's SET_NULL collector issues, then the user's own DELETE.
    app.execute("UPDATE audit_auditentry SET actor_id = NULL WHERE actor_id = %s", [user_id])
    app.execute("DELETE FROM auth_user WHERE id = %s", [user_id])
    assert app.execute("SELECT actor_id, actor_label FROM audit_auditentry WHERE id = %s", [entry]).fetchone() == (None, "tester")


def test_the_app_role_reads_and_writes_the_other_tables(app: psycopg.Connection, installation: dict[str, str]) -> None:
    for table in ("dispatch_message", "auth_group", "django_session"):
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            assert app.execute("SELECT has_table_privilege(%s, %s)", [table, privilege]).fetchone() == (True,), (table, privilege)
        for privilege in ("TRUNCATE", "TRIGGER", "REFERENCES"):
            assert app.execute("SELECT has_table_privilege(%s, %s)", [table, privilege]).fetchone() == (False,), (table, privilege)
    app.execute("SELECT count(*) FROM dispatch_message").fetchone()
    app.execute("UPDATE dispatch_message SET attempts = attempts WHERE false")
    name = f"g-{uuid.uuid4().hex[:8]}"
    app.execute("INSERT INTO auth_group (name) VALUES (%s)", [name])  # identity column: no sequence grant needed, granted anyway
    app.execute("UPDATE auth_group SET name = %s WHERE name = %s", [name + "x", name])
    app.execute("DELETE FROM auth_group WHERE name = %s", [name + "x"])
    # Nothing in the database is the app role's.
    owned = app.execute("SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)")
    assert owned.fetchone() == (0,)
    _refused(app, f'SET ROLE "{installation["owner"]}"', "permission denied")


def test_tables_of_later_migrations_are_granted_by_default(app: psycopg.Connection, installation: dict[str, str]) -> None:
    with psycopg.connect(installation["owner_url"], autocommit=True) as owner:
        owner.execute("CREATE TABLE later_migration (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, note text)")
        owner.execute("CREATE TABLE later_serial (id serial PRIMARY KEY)")
    app.execute("INSERT INTO later_migration (note) VALUES ('hello')")
    app.execute("INSERT INTO later_serial DEFAULT VALUES")
    assert app.execute("SELECT note FROM later_migration").fetchone() == ("hello",)
    _refused(app, "TRUNCATE later_migration", "permission denied")


def test_the_django_app_runs_as_the_app_role(installation: dict[str, str]) -> None:
    script = (
        "from django.contrib.auth.models import User; from audit.services import audit_record; from audit.models import AuditEntry;"
        "u = User.objects.create_user('roles-check'); e = audit_record(action='test.run', target=u, actor=u); u.delete();"
        "e.refresh_from_db(); print(e.actor_id, e.actor_label, AuditEntry.objects.count() >= 1)"
    )
    ran = _manage(installation["app_url"], "shell", "-c", script)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1].split() == ["None", "roles-check", "True"]
    checked = _manage(installation["owner_url"], "db_roles", "--check", installation["app"])
    assert checked.returncode == 0, checked.stderr


def test_db_roles_refuses_an_unsafe_app_role(installation: dict[str, str]) -> None:
    as_owner = _manage(installation["owner_url"], "db_roles", installation["owner"])
    assert as_owner.returncode == 1 and "the role this command runs as" in as_owner.stderr
    missing = _manage(installation["owner_url"], "db_roles", "sp_no_such_role_" + uuid.uuid4().hex[:8])
    assert missing.returncode == 1 and "does not exist" in missing.stderr
