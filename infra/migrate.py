"""Apply orderpipe's migrations to Cloud SQL through the Cloud SQL connector, then grant the functions access.

deploy.sh stages this file next to a copy of shared/ (build/_migrate/) and runs it with the runtime
dependencies (requirements.lock), so the migration runs exactly the code the functions ship with:

    env -u DATABASE_URL CLOUD_SQL_INSTANCE=P:R:I DB_NAME=orderpipe DB_USER=<deployer>@P.iam DB_IAM_AUTH=true \
        DB_IP_TYPE=public GCP_PROJECT=P SECRET_BACKEND=secret_manager \
        python build/_migrate/migrate.py --app-role orderpipe_app --member <api>@P.iam --member ...

With IAM database auth the connector logs in as the caller's own service account (Application Default
Credentials: Cloud Build's service account, or `gcloud auth application-default login
--impersonate-service-account=...`), so DB_USER must be that account's database user. Tables belong
to the migrating user; the functions' IAM users get DML rights through one role (`--app-role`), which
`--bootstrap` creates once, run as the built-in `postgres` user with its password typed at the
terminal (PostgreSQL 15+ lets only the database owner create in schema public).

With password auth (DB_IAM_AUTH=false) the password is the Secret Manager secret `db-password`; the
functions log in as the same user, so no grants are needed.

DATABASE_URL is refused: this tool exists to reach Cloud SQL, never a local database by accident.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def grant_statements(app_role: str, members: list[str]) -> list[str]:
    """What the functions' database users need: DML on every table, the sequences, now and for later tables."""
    role = quote_ident(app_role)
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO {role}",
    ]
    statements += [f"GRANT {role} TO {quote_ident(member)}" for member in members]
    return statements


def bootstrap_statements(app_role: str, deployer: str) -> list[str]:
    """Once, as `postgres`: the app role, and the deployer's right to create tables and hand the role on."""
    return [
        "DO $$ BEGIN CREATE ROLE " + quote_ident(app_role) + " NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {quote_ident(deployer)}",
        f"GRANT {quote_ident(app_role)} TO {quote_ident(deployer)} WITH ADMIN OPTION",
    ]


def missing_roles(conn, names: list[str]) -> list[str]:
    found = {row["rolname"] for row in conn.fetch_all("SELECT rolname FROM pg_roles WHERE rolname = ANY(:names)",
                                                      names=list(names))}
    return [name for name in names if name not in found]


def open_database(settings, password_source=None):
    """The same pool and connection factory the functions use (the Cloud SQL connector branch)."""
    from shared.db.pool import ConnectionFactory, Database
    from shared.secrets import build_secret_source

    if password_source is None and not settings.db_iam_auth:
        secrets = build_secret_source(settings)

        def password_source() -> str:
            return secrets.get("db-password")

    return Database(settings, ConnectionFactory(settings, password_source=password_source))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-role", help="the role the functions' IAM database users get (IAM auth)")
    parser.add_argument("--member", action="append", default=[], help="a function's database user (repeat)")
    parser.add_argument("--bootstrap", action="store_true", help="one-off grants as postgres (asks its password)")
    parser.add_argument("--deployer", help="with --bootstrap: the migrating IAM database user")
    parser.add_argument("--status", action="store_true", help="show migration states; change nothing")
    args = parser.parse_args(argv)

    if os.environ.get("DATABASE_URL"):
        print("error: DATABASE_URL is set; this tool migrates Cloud SQL only (use `orderpipe migrate` locally)",
              file=sys.stderr)
        return 2
    if not os.environ.get("CLOUD_SQL_INSTANCE"):
        print("error: set CLOUD_SQL_INSTANCE=project:region:instance", file=sys.stderr)
        return 2

    import shared
    from shared import errors
    from shared.config import Settings
    from shared.db import migrations

    settings = Settings()
    where = f"{settings.cloud_sql_instance}/{settings.db_name} as {settings.db_user}"
    print(f"orderpipe {shared.__version__} migrations from {os.path.dirname(shared.__file__)}")
    print(f"connecting to {where} ({'IAM' if settings.db_iam_auth else 'password'} auth, "
          f"{settings.db_ip_type} IP)")

    password_source = None
    if args.bootstrap:
        if not (args.app_role and args.deployer):
            parser.error("--bootstrap needs --app-role and --deployer")
        if settings.db_iam_auth:
            parser.error("--bootstrap logs in as postgres with a password: DB_IAM_AUTH=false")

        def password_source() -> str:
            return getpass.getpass(f"password of {settings.db_user} on {settings.cloud_sql_instance}: ")

    db = open_database(settings, password_source)
    try:
        with db.connection() as conn:
            if args.bootstrap:
                missing = missing_roles(conn, [args.deployer])
                if missing:
                    print(f"error: no database user {missing[0]!r}: run terraform apply first", file=sys.stderr)
                    return 1
                with conn.transaction():
                    for statement in bootstrap_statements(args.app_role, args.deployer):
                        conn.execute_script(statement)
                print(f"bootstrap done: role {args.app_role}; {args.deployer} may create tables and grant it")
                return 0
            if args.status:
                for state in migrations.status(conn):
                    print(f"{state.version:04d}_{state.name}: {state.state}")
                return 0
            applied = migrations.migrate(conn)
            for migration in applied:
                print(f"applied {migration.version:04d}_{migration.name}")
            if not applied:
                print("database is up to date")
            if args.app_role:
                missing = missing_roles(conn, [args.app_role, *args.member])
                if missing:
                    print(f"error: database roles missing: {', '.join(missing)} (terraform apply creates the "
                          "IAM users; `deploy.sh --bootstrap-db` creates the app role)", file=sys.stderr)
                    return 1
                with conn.transaction():
                    for statement in grant_statements(args.app_role, args.member):
                        conn.execute_script(statement)
                print(f"granted {args.app_role} to {', '.join(args.member) or 'nobody'}")
    except errors.OrderpipeError as exc:
        details = getattr(exc, "details", None) or {}
        print(f"error: {exc.message} {details or ''}".rstrip(), file=sys.stderr)
        if exc.__cause__ is not None:  # e.g. no application-default credentials, or the instance is unknown
            print(f"cause: {type(exc.__cause__).__name__}: {str(exc.__cause__)[:500]}", file=sys.stderr)
        if details.get("sqlstate") == "42501":  # insufficient_privilege
            print("hint: the migrating user may not create tables in schema public yet: run "
                  "`./deploy.sh --project P --region R --bootstrap-db` once (infra/README.md)", file=sys.stderr)
        return 1
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
