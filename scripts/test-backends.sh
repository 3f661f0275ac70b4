# The PostgreSQL and Redis servers the tests use. Sourced by scripts/test, not run.
#
# `test_backends_packages` names the Debian packages missing for them (the server binaries:
# tests that stop, kill or flush a server start a private one of their own; psql, to check a
# server). `start_test_backends` then exports, for the tests (tests/src/backends.rs):
#   GATEWAY_TEST_POSTGRES_URL  a PostgreSQL server where tests may CREATE DATABASE
#   GATEWAY_TEST_REDIS_URL     a Redis server (tests write under key prefixes of their own)
# Each is, in order: the variable as the user set it; the local server (127.0.0.1:5432 as
# `postgres` or the current user, if that role may create databases; 127.0.0.1:6379 if it
# answers PING); else a private server in a temp dir on a free port, stopped and removed when
# the shell exits (trap), also when the tests fail. GATEWAY_TEST_PRIVATE_BACKENDS=1 starts
# private servers whatever is set or running (to exercise that path).
#
# Tests name their databases and key prefixes gw_t_<pid>_…; leftovers of test processes that
# were killed (their pid no longer runs) are removed from the local servers first.

# The directory holding initdb, postgres and pg_ctl: PATH, else the newest Debian one.
test_backends_pg_bin() {
  local dir
  dir="$(dirname "$(command -v postgres 2>/dev/null || echo /nonexistent/postgres)")"
  if [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
    return
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return
    fi
  done
}

test_backends_packages() {
  [ -n "$(test_backends_pg_bin)" ] || echo postgresql
  command -v psql >/dev/null 2>&1 || echo postgresql-client
  command -v redis-server >/dev/null 2>&1 || echo redis-server
}

# Whether the PostgreSQL at URL $1 answers as a role that may create databases.
test_backends_pg_usable() {
  [ "$(PGCONNECT_TIMEOUT=5 psql "$1" -XAtqw \
    -c 'SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user' \
    2>/dev/null)" = t ]
}

# Whether a Redis at host $1, port $2 answers PING (plain bash: no client needed).
test_backends_redis_answers() {
  (
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 5 reply <&3 || exit 1
    [ "${reply%$'\r'}" = "+PONG" ]
  ) 2>/dev/null
}

test_backends_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The temp dir holding the private servers; their pids; how to run a command as the server
# user (PostgreSQL refuses to run as root).
test_backends_dir=""
test_backends_redis_pid=""
test_backends_pg_started=""
test_backends_as_server=()

test_backends_tmp() {
  if [ -z "$test_backends_dir" ]; then
    test_backends_dir="$(mktemp -d "${TMPDIR:-/tmp}/gw-test-backends-XXXXXX")"
    if [ "$(id -u)" -eq 0 ]; then
      id postgres >/dev/null 2>&1 ||
        test_backends_fail "as root, a private PostgreSQL runs as the postgres user (it refuses root), and there is none: apt-get install postgresql creates it"
      chown postgres: "$test_backends_dir"
      test_backends_as_server=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    fi
  fi
}

stop_test_backends() {
  if [ -n "$test_backends_redis_pid" ]; then
    kill "$test_backends_redis_pid" 2>/dev/null || true
    wait "$test_backends_redis_pid" 2>/dev/null || true
  fi
  if [ -n "$test_backends_pg_started" ]; then
    # Immediate: the data is thrown away next.
    (cd / && "${test_backends_as_server[@]}" "$test_backends_pg_started/pg_ctl" \
      -D "$test_backends_dir/pg" -m immediate -w stop >/dev/null 2>&1) || true
  fi
  if [ -n "$test_backends_dir" ]; then
    rm -rf "$test_backends_dir"
  fi
}

test_backends_fail() {
  echo "scripts/test: $1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    echo "--- $2 (tail) ---" >&2
    tail -n 30 "$2" >&2
  fi
  exit 1
}

start_private_postgres() {
  local bin port attempt
  bin="$(test_backends_pg_bin)"
  [ -n "$bin" ] || test_backends_fail "PostgreSQL's server binaries (initdb, postgres, pg_ctl) are not installed"
  test_backends_tmp
  # The server user may not be allowed into the checkout: work from the temp dir.
  (cd "$test_backends_dir" && "${test_backends_as_server[@]}" "$bin/initdb" -D "$test_backends_dir/pg" \
    -U postgres --auth=trust --no-sync -E UTF8 --locale=C >"$test_backends_dir/initdb.log" 2>&1) ||
    test_backends_fail "initdb failed for a private PostgreSQL" "$test_backends_dir/initdb.log"
  for attempt in 1 2 3 4 5; do
    port="$(test_backends_free_port)"
    test_backends_pg_started="$bin"
    if (cd "$test_backends_dir" && "${test_backends_as_server[@]}" "$bin/pg_ctl" -D "$test_backends_dir/pg" \
      -l "$test_backends_dir/postgres.log" -w -t 60 \
      -o "-p $port -h 127.0.0.1 -k $test_backends_dir -c fsync=off" start >/dev/null 2>&1); then
      GATEWAY_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
      test_backends_pg_usable "$GATEWAY_TEST_POSTGRES_URL" ||
        test_backends_fail "the private PostgreSQL on port $port does not answer" "$test_backends_dir/postgres.log"
      return
    fi
    test_backends_pg_started=""
    # Another process may have taken the free port before the server bound it: try another.
    grep -q "could not bind\|already in use" "$test_backends_dir/postgres.log" 2>/dev/null ||
      test_backends_fail "a private PostgreSQL did not start" "$test_backends_dir/postgres.log"
  done
  test_backends_fail "a private PostgreSQL found no free port in 5 tries" "$test_backends_dir/postgres.log"
}

start_private_redis() {
  local port attempt waited
  test_backends_tmp
  for attempt in 1 2 3 4 5; do
    port="$(test_backends_free_port)"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
      --dir "$test_backends_dir" --logfile "$test_backends_dir/redis.log" &
    test_backends_redis_pid=$!
    for waited in $(seq 300); do
      if test_backends_redis_answers 127.0.0.1 "$port"; then
        GATEWAY_TEST_REDIS_URL="redis://127.0.0.1:$port"
        return
      fi
      kill -0 "$test_backends_redis_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$test_backends_redis_pid" 2>/dev/null || true
    wait "$test_backends_redis_pid" 2>/dev/null || true
    test_backends_redis_pid=""
    grep -q "already in use" "$test_backends_dir/redis.log" 2>/dev/null ||
      test_backends_fail "a private Redis did not start within 30 s" "$test_backends_dir/redis.log"
  done
  test_backends_fail "a private Redis found no free port in 5 tries" "$test_backends_dir/redis.log"
}

# The local PostgreSQL's URL, as `postgres` or else the current user, if that role may create
# databases; nothing otherwise.
test_backends_local_pg() {
  local user
  for user in postgres "$(id -un)"; do
    if test_backends_pg_usable "postgres://$user@127.0.0.1:5432/postgres"; then
      echo "postgres://$user@127.0.0.1:5432/postgres"
      return
    fi
  done
}

# Databases and key prefixes gw_t_<pid>_… on the local servers whose test process no longer
# runs (killed before its Drop ran). /proc, not kill -0: as an ordinary user, kill -0 fails
# for the live pids of other users.
test_backends_sweep_pg() {
  local name pid
  for name in $(psql "$1" -XAtqw \
    -c "SELECT datname FROM pg_database WHERE datname ~ '^gw_t_[0-9]+_'" 2>/dev/null); do
    pid="${name#gw_t_}"
    pid="${pid%%_*}"
    [ -d "/proc/$pid" ] ||
      psql "$1" -XAtqw -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
}

test_backends_sweep_redis() {
  local pid
  command -v redis-cli >/dev/null 2>&1 || return 0
  for pid in $(redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'gw_t_*' 2>/dev/null |
    sed -n 's/^gw_t_\([0-9]\+\)_.*/\1/p' | sort -u); do
    [ -d "/proc/$pid" ] ||
      redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "gw_t_${pid}_*" 2>/dev/null |
      xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 unlink >/dev/null 2>&1 || true
  done
}

start_test_backends() {
  local started local_pg=""
  started="$(date +%s%N)"
  trap stop_test_backends EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local private="${GATEWAY_TEST_PRIVATE_BACKENDS:-}"
  if [ "$private" = 1 ]; then
    unset GATEWAY_TEST_POSTGRES_URL GATEWAY_TEST_REDIS_URL
  fi

  if [ -n "${GATEWAY_TEST_POSTGRES_URL:-}" ]; then
    test_backends_pg_usable "$GATEWAY_TEST_POSTGRES_URL" ||
      test_backends_fail "GATEWAY_TEST_POSTGRES_URL is set, but psql cannot connect with it as a role that may CREATE DATABASE"
    echo "scripts/test: PostgreSQL: GATEWAY_TEST_POSTGRES_URL as set" >&2
  elif [ "$private" != 1 ] && local_pg="$(test_backends_local_pg)" && [ -n "$local_pg" ]; then
    GATEWAY_TEST_POSTGRES_URL="$local_pg"
    echo "scripts/test: PostgreSQL: the local server at 127.0.0.1:5432" >&2
    test_backends_sweep_pg "$local_pg"
  else
    start_private_postgres
    echo "scripts/test: PostgreSQL: a private server, $GATEWAY_TEST_POSTGRES_URL" >&2
  fi

  if [ -n "${GATEWAY_TEST_REDIS_URL:-}" ]; then
    echo "scripts/test: Redis: GATEWAY_TEST_REDIS_URL as set" >&2
  elif [ "$private" != 1 ] && test_backends_redis_answers 127.0.0.1 6379; then
    GATEWAY_TEST_REDIS_URL="redis://127.0.0.1:6379"
    echo "scripts/test: Redis: the local server at 127.0.0.1:6379" >&2
    test_backends_sweep_redis
  else
    start_private_redis
    echo "scripts/test: Redis: a private server, $GATEWAY_TEST_REDIS_URL" >&2
  fi

  export GATEWAY_TEST_POSTGRES_URL GATEWAY_TEST_REDIS_URL
  echo "scripts/test: backends ready in $((($(date +%s%N) - started) / 1000000)) ms" >&2
}
