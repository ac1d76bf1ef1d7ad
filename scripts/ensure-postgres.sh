#!/usr/bin/env bash
# Start the machine's PostgreSQL cluster if it is installed but not accepting connections.
# The gallery tests run against it (127.0.0.1:5432); without a server they skip, or fail in CI.
set -u
if ! command -v pg_isready >/dev/null 2>&1; then
  echo "ensure-postgres: PostgreSQL client tools not installed; PostgreSQL tests will skip" >&2
  exit 0
fi
pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
  sleep 1
done
echo "ensure-postgres: PostgreSQL is not reachable on 127.0.0.1:5432" >&2
exit 0
