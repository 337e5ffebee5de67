#!/bin/sh
# First start: initdb with the user and password from the environment, the database, and
# password logins from anywhere (the NetworkPolicy decides who reaches the port). Then
# PostgreSQL in the foreground on every address.
set -eu
BIN=/usr/lib/postgresql/15/bin
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "POSTGRES_PASSWORD is empty" >&2; exit 1; }
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    password=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$password"
    "$BIN/initdb" --username="$POSTGRES_USER" --pwfile="$password" --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256
    rm -f "$password"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    "$BIN/pg_ctl" --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait start
    if [ "$POSTGRES_DB" != postgres ]; then
        "$BIN/psql" --username="$POSTGRES_USER" --dbname=postgres --set=ON_ERROR_STOP=1 \
            --command="CREATE DATABASE \"$POSTGRES_DB\""
    fi
    "$BIN/pg_ctl" --pgdata="$PGDATA" --mode=fast --wait stop
fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*'
