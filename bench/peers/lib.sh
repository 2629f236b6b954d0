# Shared by bench/peers/*_drain (sourced, from the checkout's root).
# Sets: PEER_SERVER (the server part of DATABASE_URL), PEERS (target/bench-peers),
# and fresh_db NAME → DB_URL of a new, empty database NAME on that server, and
# PG_POSTMASTER_PID when that server runs on this machine (for PostgreSQL CPU per job).
PEERS="$PWD/target/bench-peers"
JOBS="${JOBS:-100000}"
# Default: the bench's own cluster (bench/pg start starts it). Only the server of the URL is
# used: each peer gets its own database, peers_<name>, dropped and made anew on every run.
DATABASE_URL="${DATABASE_URL:-$(bench/pg url)/postgres}"
PEER_SERVER="$(sed -E 's#^(postgres(ql)?://[^/?]+).*#\1#' <<<"$DATABASE_URL")"
export JOBS

fresh_db() { # name
  DB_URL="$PEER_SERVER/$1"
  psql "$PEER_SERVER/postgres" -qX -v ON_ERROR_STOP=1 \
    -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
  local dir pid
  dir="$(psql "$DB_URL" -qXAtc 'SHOW data_directory' 2>/dev/null || true)"
  pid="$(head -n1 "$dir/postmaster.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ]; then
    export PG_POSTMASTER_PID="$pid"
  else
    unset PG_POSTMASTER_PID
  fi
}
