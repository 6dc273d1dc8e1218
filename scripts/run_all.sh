#!/usr/bin/env bash
# make run-all: a local cluster without Docker. Starts the local Redis and PostgreSQL when they
# are installed but down, creates the database when missing, migrates, then runs the Procfile
# (the relay, gateways on 8081 and 8082) under honcho: one log, each line prefixed with its
# process; one Ctrl-C stops them all. `python` and `honcho` are taken from PATH (make puts .venv/bin first).
# Environment: REDIS_HOST (default 127.0.0.1:6379), POSTGRES_DSN (default
# postgresql://127.0.0.1:5432/tornado_gw), GATEWAY1_PORT / GATEWAY2_PORT, and every setting.
set -euo pipefail
cd "$(dirname "$0")/.."
export REDIS_HOST="${REDIS_HOST:-127.0.0.1:6379}"
export POSTGRES_DSN="${POSTGRES_DSN:-postgresql://127.0.0.1:5432/tornado_gw}"
./scripts/ensure_services.sh
python - <<'PY'
"""Create the database POSTGRES_DSN names when it does not exist yet (migrate creates tables only)."""
import os

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

dsn = os.environ["POSTGRES_DSN"]
name = conninfo_to_dict(dsn).get("dbname") or "postgres"
with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, connect_timeout=5) as admin:
    if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"run-all: created database {name}")
PY
python -m tornado_gw migrate
exec honcho start --procfile Procfile
