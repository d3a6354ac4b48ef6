#!/usr/bin/env bash
# Starts kviz on this machine and serves it on http://127.0.0.1:${PORT:-8000} until Ctrl-C.
#
# 1. Installs what is missing (scripts/setup.sh); Redis from Debian only when none answers at
#    REDIS_URL (default redis://127.0.0.1:6379/0). No Redis at all: the embedded mode (captures
#    run in the web process, an in-memory channel layer).
# 2. Migrates, creates a first admin user if there is none (password in data/admin-password.txt).
# 3. As root: brings the network-namespace lab up.
# 4. Starts the Celery workers (with Redis: one for captures, one for analyses) and daphne,
#    then loads the demo captures (the shared corpus, and recorded lab scenarios as root).
#    Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
DATA=${KVIZ_DATA_DIR:-data}
mkdir -p "$DATA"
PY=.venv/bin/python
PORT=${PORT:-8000}
# Host captures by non-staff users never record the dashboard's port (captures/access/grants.py).
export KVIZ_WEB_PORTS=${KVIZ_WEB_PORTS:-$PORT}
export REDIS_URL=${REDIS_URL-redis://127.0.0.1:6379/0}
is_root=0; [ "$(id -u)" = 0 ] && is_root=1

started=()
lab_started=0
cleanup() {
  trap - EXIT INT TERM
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$lab_started" = 1 ]; then "$PY" manage.py kviz lab down || true; fi
}
trap cleanup EXIT INT TERM

redis_answers() {  # PING over a plain socket: no redis-cli needed
  [ -n "$REDIS_URL" ] && "$PY" - "$REDIS_URL" <<'PYEOF'
import socket, sys
from urllib.parse import urlparse
url = urlparse(sys.argv[1])
try:
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), timeout=2) as s:
        if url.password:
            s.sendall(f"AUTH {url.password}\r\n".encode()); s.recv(64)
        s.sendall(b"PING\r\n")
        sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PYEOF
}

if [ -n "$REDIS_URL" ] && ! redis_answers; then
  host=$("$PY" -c 'import sys; from urllib.parse import urlparse; print(urlparse(sys.argv[1]).hostname or "")' "$REDIS_URL")
  port=$("$PY" -c 'import sys; from urllib.parse import urlparse; print(urlparse(sys.argv[1]).port or 6379)' "$REDIS_URL")
  if [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; then
    if ! command -v redis-server >/dev/null && [ "$is_root" = 1 ]; then
      echo "start: installing redis-server"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }
    fi
    if command -v redis-server >/dev/null && ! redis_answers; then
      echo "start: starting redis-server on 127.0.0.1:$port"
      # Redis is Celery's broker: queued captures live in it. It persists (append-only file,
      # fsynced every second, in $DATA/redis), so a restart does not lose them; a capture left
      # queued anyway is queued again when a worker (re)connects (captures/jobs/tasks.py).
      mkdir -p "$DATA/redis"
      redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly yes \
        --appendfsync everysec --dir "$(realpath "$DATA")/redis" --daemonize no \
        --logfile "$(realpath "$DATA")/redis.log" &
      started+=("$!")
      for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
    fi
  fi
  if ! redis_answers; then
    echo "start: no Redis at $REDIS_URL; running embedded (captures run in the web process)"
    REDIS_URL=""
  fi
fi

"$PY" manage.py migrate --noinput -v0

# A first admin user, once: the password is printed and kept in data/admin-password.txt.
"$PY" manage.py shell -v0 -c '
import secrets
from django.conf import settings
from django.contrib.auth import get_user_model
User = get_user_model()
if not User.objects.filter(is_superuser=True).exists():
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser("admin", "", password)
    path = settings.DATA_DIR / "admin-password.txt"
    path.write_text(password + "\n")
    path.chmod(0o600)
    print(f"start: created user admin, password {password} (also in {path})")
'
if [ -f "$DATA/admin-password.txt" ]; then
  echo "start: sign in at http://127.0.0.1:$PORT/login/ as admin with the password in $DATA/admin-password.txt"
fi

if [ "$is_root" = 1 ]; then
  # A lab that was already up is left as it was; one we bring up goes down with us.
  if ! "$PY" manage.py kviz lab status 2>/dev/null | head -1 | grep -q ": up$"; then
    if "$PY" manage.py kviz lab up; then lab_started=1
    else echo "start: the lab did not come up; lab targets stay unavailable"; fi
  fi
fi

if [ -n "$REDIS_URL" ]; then
  # Two workers (docs/deploy.md, "Workers"): captures wait on I/O, so one process runs many
  # in threads; analyses are CPU work, in processes of their own on a queue of their own, so
  # an upload never waits behind a live capture. Distinct node names: a worker that starts
  # takes the captures under its own name for dead.
  .venv/bin/celery -A kviz worker --pool=threads --concurrency="${KVIZ_CAPTURE_CONCURRENCY:-16}" \
    -Q "${KVIZ_QUEUE:-kviz}" -n "capture@%h" -l info --logfile "$(realpath "$DATA")/worker.log" &
  started+=("$!")
  .venv/bin/celery -A kviz worker --pool=prefork --concurrency="${KVIZ_ANALYSIS_CONCURRENCY:-2}" \
    -Q "${KVIZ_ANALYSIS_QUEUE:-${KVIZ_QUEUE:-kviz}-analysis}" -n "analysis@%h" -l info \
    --logfile "$(realpath "$DATA")/analysis-worker.log" &
  started+=("$!")
fi
"$PY" -m kviz.serve -b 127.0.0.1 -p "$PORT" kviz.asgi:application &
started+=("$!")

# Demo captures after the services: with Redis the worker analyses them while we go on.
demo_args=()
[ "$is_root" = 1 ] && demo_args+=(--lab)
"$PY" manage.py kviz demo "${demo_args[@]}" || echo "start: demo captures were not all loaded"

echo "start: kviz is at http://127.0.0.1:$PORT/ (Ctrl-C stops it)"
wait -n "${started[@]}"
