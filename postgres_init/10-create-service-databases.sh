#!/usr/bin/env bash
# Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d): one database
# and one login role per service, each owning its database, and the serving API's own login on the
# warehouse, which owns nothing. Passwords come from the environment (compose passes them from
# .env); psql variables quote them, so any character is safe. Safe to re-run, e.g. on an existing
# volume (docs/deployment.md): it creates what is missing and changes no password.
set -euo pipefail
# Every password first: a script failing half-way leaves a volume PostgreSQL never initialises again.
: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD}" "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}"
: "${WAREHOUSE_DB_PASSWORD:?set WAREHOUSE_DB_PASSWORD}"
: "${WAREHOUSE_API_PASSWORD:?set WAREHOUSE_API_PASSWORD}"

create() {  # create <role and database name> <password>
  # Only its owner may connect to a database: by default PUBLIC may connect to every database
  # and create temporary tables there, so the API's login could open Airflow's and MLflow's.
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v name="$1" -v password="$2" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

login() {  # login <role> <password> <database>: may connect to <database>, owns nothing
  # Its rights on tables are granted by the tables' owner when it creates them (they do not exist
  # yet): readmission.data.database.grant_api_privileges. PostgreSQL 15+ lets only the database owner
  # create in the schema public, so this login cannot create tables.
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v name="$1" -v password="$2" -v database="$3" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
GRANT CONNECT ON DATABASE :"database" TO :"name";
SQL
}

create airflow "$AIRFLOW_DB_PASSWORD"
create mlflow "$MLFLOW_DB_PASSWORD"
create warehouse "$WAREHOUSE_DB_PASSWORD"
# The API (compose profile serving, k3d): logs predictions, reads realized performance and the
# promotion ledger, adds the production changes it notices. readmission.data.tables.API_ROLE.
login readmission_api "$WAREHOUSE_API_PASSWORD" warehouse
