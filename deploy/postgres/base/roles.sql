-- Roles and grants of the connector's database, run once by CloudNativePG after initdb
-- (postInitApplicationSQLRefs) in the application database, as the superuser.
--
-- "connector" owns the schema and is used only by the migration Job (DDL). "connector_app" is
-- the services' role: rows only (SELECT, INSERT, UPDATE, DELETE), no DDL, no ownership. The
-- four services share every table (the outbox, leases, tokens), so they share this role.
-- CloudNativePG's managed roles give connector_app its password and LOGIN (cluster.yaml).
-- tests/deploy/test_postgres_roles.py runs this file and the pipeline as connector_app.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'connector_app') THEN
    CREATE ROLE connector_app NOLOGIN;
  END IF;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO connector_app', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO connector_app;
-- Tables and sequences the migrations create from now on...
ALTER DEFAULT PRIVILEGES FOR ROLE connector IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO connector_app;
ALTER DEFAULT PRIVILEGES FOR ROLE connector IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO connector_app;
-- ... and those that already exist (when this runs on a database migrated earlier).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO connector_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO connector_app;
