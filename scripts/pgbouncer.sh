#!/usr/bin/env bash
# A transaction-mode pooler in front of a test PostgreSQL, as Supabase's on port 6543 is:
# `scripts/pgbouncer.sh start DIR POSTGRES_URL` installs Debian's pgbouncer package when it is missing,
# starts a PgBouncer with pool_mode=transaction (trust auth, loopback, a free port, every database of
# the server behind it, one server connection per database and user, no prepared-statement tracking:
# what one client leaves in a server session, the next one meets) and prints its URL;
# `scripts/pgbouncer.sh stop DIR` stops it. As root, PgBouncer runs as the `postgres` user (it refuses
# to run as root).
set -euo pipefail

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install() {
  # Debian installs it in /usr/sbin, outside a user's PATH.
  PATH="$PATH:/usr/sbin"
  command -v pgbouncer >/dev/null 2>&1 && return
  echo "installing Debian's pgbouncer (the index's pooler test needs one)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null 2>&1; } \
    || true
  command -v pgbouncer >/dev/null 2>&1 && return
  echo "pgbouncer is not installed and apt-get could not install it: install Debian's pgbouncer package" >&2
  exit 1
}

# `host port user` of a postgresql:// URL.
url_parts() {
  python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(p.hostname, p.port or 5432, p.username or "postgres")' "$1"
}

# True when this PgBouncer knows max_prepared_statements (1.21 and later).
tracks_prepared() {
  local v
  v=$(pgbouncer --version | awk 'NR == 1 { print $2 }')
  [ "$(printf '%s\n1.21\n' "$v" | sort -V | head -1)" = 1.21 ]
}

cmd=${1:?usage: pgbouncer.sh start DIR POSTGRES_URL | stop DIR}
dir=${2:?usage: pgbouncer.sh start DIR POSTGRES_URL | stop DIR}

case "$cmd" in
  start)
    url=${3:?usage: pgbouncer.sh start DIR POSTGRES_URL}
    install
    read -r host pgport user < <(url_parts "$url")
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(free_port)
    printf '"%s" ""\n' "$user" >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<EOF
[databases]
* = host=$host port=$pgport

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 1
max_client_conn = 500
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
    # Newer PgBouncers can track named prepared statements; Supabase's pooler (Supavisor) in
    # transaction mode does not, nor does this one.
    if tracks_prepared; then echo "max_prepared_statements = 0" >>"$dir/pgbouncer.ini"; fi
    as_owner "$(command -v pgbouncer)" -d -q "$dir/pgbouncer.ini" || { cat "$dir/pgbouncer.log" >&2 2>/dev/null; exit 1; }
    for _ in $(seq 1 100); do
      python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" \
        2>/dev/null && break
      sleep 0.1
    done
    echo "postgresql://$user@127.0.0.1:$port/postgres"
    ;;
  stop)
    if [ -f "$dir/pgbouncer.pid" ]; then
      kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
    fi
    ;;
  *)
    echo "usage: pgbouncer.sh start DIR POSTGRES_URL | stop DIR" >&2
    exit 2
    ;;
esac
