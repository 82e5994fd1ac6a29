#!/bin/bash
# Stand-in for edoburu/pgbouncer's entrypoint (deploy/local-images.sh), the variables
# compose.yaml relies on: one database DB_NAME on DB_HOST:DB_PORT, reached as DB_USER with
# DB_PASSWORD; AUTH_TYPE, POOL_MODE, DEFAULT_POOL_SIZE, MAX_CLIENT_CONN; listening on
# LISTEN_PORT (5432) on every interface.
set -euo pipefail

: "${DB_HOST:?set DB_HOST}" "${DB_USER:?set DB_USER}" "${DB_PASSWORD:?set DB_PASSWORD}"
config=/etc/pgbouncer
printf '"%s" "%s"\n' "$DB_USER" "$DB_PASSWORD" >"$config/userlist.txt"
cat >"$config/pgbouncer.ini" <<INI
[databases]
${DB_NAME:-*} = host=$DB_HOST port=${DB_PORT:-5432}${DB_NAME:+ dbname=$DB_NAME}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = ${LISTEN_PORT:-5432}
unix_socket_dir =
auth_type = ${AUTH_TYPE:-md5}
auth_file = $config/userlist.txt
pool_mode = ${POOL_MODE:-session}
default_pool_size = ${DEFAULT_POOL_SIZE:-20}
max_client_conn = ${MAX_CLIENT_CONN:-100}
ignore_startup_parameters = extra_float_digits
INI
exec "$@"
