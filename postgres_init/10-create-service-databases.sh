#!/usr/bin/env bash
# Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d): one database
# and one login role per service, each owning its database. Passwords come from the environment
# (compose passes them from .env); psql variables quote them, so any character is safe.
set -euo pipefail

create() {  # create <role and database name> <password>
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v name="$1" -v password="$2" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
SQL
}

create airflow "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD}"
create mlflow "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}"
create warehouse "${WAREHOUSE_DB_PASSWORD:?set WAREHOUSE_DB_PASSWORD}"
