# Sourced by the Makefile and scripts: where the tests find the PostgreSQL started for them.
export ALLIANCE_TEST_POSTGRES_URL="${ALLIANCE_TEST_POSTGRES_URL:-postgresql+psycopg://alliance:alliance@127.0.0.1:5432/alliance_test}"
