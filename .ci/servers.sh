# Sourced by .ci/run (and by hand: `source .ci/servers.sh; start_servers`):
# a throwaway PostgreSQL cluster and an S3-compatible server (moto), both
# on 127.0.0.1 with free ports, in a temporary folder. `stop_servers`
# stops both by PID; .ci/run calls it on every exit path.
#
# Exports INTAKE_TEST_PG (a postgresql:// address with no password) and,
# for the object store, INTAKE_TEST_S3 (s3://BUCKET) plus the AWS_*
# variables intake reads.

SERVERS_DIR=""
PG_DATA=""
MOTO_PID=""

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_postgres() {
  local pgbin
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [[ -z "$pgbin" || ! -x "$pgbin/initdb" ]]; then
    echo "servers: installing PostgreSQL"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) ||
      { echo "servers: PostgreSQL could not be installed" >&2; return 1; }
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  local port; port=$(free_port)
  PG_DATA="$SERVERS_DIR/pg"
  mkdir -p "$PG_DATA"
  local run=()
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres "$SERVERS_DIR" "$PG_DATA"
    run=(su postgres -s /bin/sh -c)
  else
    run=(sh -c)
  fi
  "${run[@]}" "$pgbin/initdb -D $PG_DATA/data -A trust -U postgres --no-sync" >"$SERVERS_DIR/initdb.log" 2>&1 ||
    { cat "$SERVERS_DIR/initdb.log" >&2; return 1; }
  "${run[@]}" "$pgbin/pg_ctl -D $PG_DATA/data -l $PG_DATA/log -w -o '-c listen_addresses=127.0.0.1 -p $port -k $PG_DATA -c max_connections=300 -c fsync=on' start" >/dev/null ||
    { cat "$PG_DATA/log" >&2; return 1; }
  PG_CTL="$pgbin/pg_ctl"
  export INTAKE_TEST_PG="postgresql://postgres@127.0.0.1:$port/postgres"
  echo "servers: PostgreSQL at $INTAKE_TEST_PG"
}

start_moto() {
  local venv="${MOTO_VENV:-$PWD/target/moto-venv}"
  if [[ ! -x "$venv/bin/moto_server" ]]; then
    echo "servers: installing moto[server] from PyPI into $venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q 'moto[server]==5.2.5' ||
      { echo "servers: moto could not be installed" >&2; return 1; }
  fi
  local port; port=$(free_port)
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$SERVERS_DIR/moto.log" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
  curl -s -f -o /dev/null -X PUT "http://127.0.0.1:$port/intake-test" ||
    { echo "servers: moto did not start" >&2; cat "$SERVERS_DIR/moto.log" >&2; return 1; }
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  export INTAKE_TEST_S3="s3://intake-test"
  echo "servers: S3 (moto) at $AWS_ENDPOINT_URL, bucket intake-test"
}

start_servers() {
  SERVERS_DIR=$(mktemp -d /tmp/intake-servers.XXXXXX)
  chmod 755 "$SERVERS_DIR"
  start_postgres && start_moto
}

stop_servers() {
  if [[ -n "$MOTO_PID" ]]; then
    kill "$MOTO_PID" 2>/dev/null; wait "$MOTO_PID" 2>/dev/null
    MOTO_PID=""
  fi
  if [[ -n "$PG_DATA" && -f "$PG_DATA/data/postmaster.pid" ]]; then
    local pid; pid=$(head -1 "$PG_DATA/data/postmaster.pid")
    if [[ $(id -u) -eq 0 ]]; then
      su postgres -s /bin/sh -c "$PG_CTL -D $PG_DATA/data -m fast -w stop" >/dev/null 2>&1 || kill "$pid" 2>/dev/null
    else
      "$PG_CTL" -D "$PG_DATA/data" -m fast -w stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null
    fi
  fi
  PG_DATA=""
  [[ -n "$SERVERS_DIR" ]] && rm -rf "$SERVERS_DIR"
  SERVERS_DIR=""
}
