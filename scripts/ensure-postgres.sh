#!/usr/bin/env bash
# Start the machine's PostgreSQL 15 and create the test role and database, if this machine has it.
# In CI (CI=true) a missing or unstartable PostgreSQL is an error: the PostgreSQL tests must run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-env.sh

fail_or_warn() {
  if [[ "${CI:-}" == "true" ]]; then echo "ensure-postgres: $1" >&2; exit 1; fi
  echo "ensure-postgres: $1 (PostgreSQL tests will be skipped outside CI)" >&2; exit 0
}

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && \
   PGPASSWORD=alliance psql -h 127.0.0.1 -U alliance -d alliance_test -Atc 'select 1' >/dev/null 2>&1; then
  exit 0
fi
command -v pg_ctlcluster >/dev/null || fail_or_warn "pg_ctlcluster not found (apt-get install postgresql-15)"
if [[ "$(id -u)" != "0" ]]; then fail_or_warn "must run as root to start the cluster"; fi
pg_ctlcluster --skip-systemctl-redirect 15 main start 2>/dev/null || true
for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
pg_isready -q -h 127.0.0.1 -p 5432 || fail_or_warn "PostgreSQL 15 did not start"
su postgres -c "psql -v ON_ERROR_STOP=1 -q" <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'alliance') THEN
    CREATE ROLE alliance LOGIN PASSWORD 'alliance' CREATEDB;
  END IF;
END $$;
SQL
su postgres -c "psql -Atc \"SELECT 1 FROM pg_database WHERE datname = 'alliance_test'\"" | grep -q 1 || \
  su postgres -c "createdb -O alliance alliance_test"
echo "ensure-postgres: PostgreSQL ready at ${ALLIANCE_TEST_POSTGRES_URL}"
