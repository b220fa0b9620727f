-- Sendplane's two PostgreSQL roles and its database; once per installation, as a superuser:
--
--   psql -h db.internal.example -U postgres -v owner=sendplane_owner -v app=sendplane_app -v db=sendplane \
--        -f ops/deploy/roles.sql
--   psql -h db.internal.example -U postgres -c '\password sendplane_owner' -c '\password sendplane_app'
--
-- owner: owns the database, its public schema and (through migrate) every table, sequence, trigger and
--        function. Used only by sendplane-migrate.service (/etc/sendplane/migrate.env, root-only).
-- app:   what web, workers and beat log in as (DATABASE_URL in /etc/sendplane/sendplane.env). Owns nothing:
--        it cannot TRUNCATE the audit trail, disable or drop its append-only trigger, or alter any table.
--        Its table privileges are granted by `manage.py db_roles <app>`, run as the owner after every
--        migrate (sendplane-migrate.service does), which also sets the default privileges for later tables.
-- Neither is a superuser, and the app role is not a member of the owner (it could SET ROLE to it).
\set ON_ERROR_STOP on

CREATE ROLE :"owner" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE ROLE :"app" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE DATABASE :"db" OWNER :"owner" ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app";

\connect :db
-- PostgreSQL 14 lets every role create objects in public (an app-owned table there would be harmless to
-- the audit trail, but "owns nothing" is what db_roles checks): the owner owns the schema, nobody else creates.
ALTER SCHEMA public OWNER TO :"owner";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app";
