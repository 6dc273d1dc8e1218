#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the tests use, when they are installed but down.
# Tests read TEST_POSTGRES_DSN / TEST_REDIS_HOST; point those elsewhere to skip this.
set -u
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }

if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
fi
if ! redis_up && command -v redis-server >/dev/null 2>&1; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
for _ in $(seq 1 50); do
  pg_up && redis_up && exit 0
  sleep 0.2
done
pg_up || echo "PostgreSQL is not reachable on 127.0.0.1:5432 (tests that need it will say how to start it)"
redis_up || echo "Redis is not reachable on 127.0.0.1:6379 (tests that need it will say how to start it)"
exit 0
