#!/usr/bin/env bash
# Start or stop a throw-away MariaDB server on 127.0.0.1 for edgeact's MySQL backend tests.
#
#   scripts/ci-mariadb.sh start   # installs mariadb-server if missing, starts mariadbd, creates the test user
#   scripts/ci-mariadb.sh stop    # stops it and deletes its data directory
#
# No systemd: mariadbd runs in the background with a data directory under /tmp. After `start`,
#   export EDGEACT_TEST_MYSQL=mysql://edgeact:edgeact@127.0.0.1:3306
# The `edgeact` user may only touch databases named edgeact_* (each task creates one), so a
# model's SQL cannot read or drop anything else on the server.
# Environment: EDGEACT_MARIADB_PORT (3306), EDGEACT_MARIADB_DIR (/tmp/edgeact-mariadb).
set -euo pipefail

PORT="${EDGEACT_MARIADB_PORT:-3306}"
BASE="${EDGEACT_MARIADB_DIR:-/tmp/edgeact-mariadb}"
DATA="$BASE/data"
SOCK="$BASE/mysqld.sock"
PIDFILE="$BASE/mysqld.pid"
LOG="$BASE/mysqld.log"

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "ci-mariadb.sh: run as root (installs packages, starts mariadbd as the mysql user)" >&2
        exit 1
    fi
}

client() {
    local c
    c="$(command -v mariadb || command -v mysql)"
    "$c" --protocol=socket -S "$SOCK" -uroot "$@"
}

start() {
    need_root
    if ! command -v mariadbd >/dev/null 2>&1 && ! command -v mysqld >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
    fi
    local server
    server="$(command -v mariadbd || command -v mysqld)"
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        echo "mariadb already running (pid $(cat "$PIDFILE"))"
    else
        mkdir -p "$BASE"
        if [ ! -d "$DATA/mysql" ]; then
            local installer
            installer="$(command -v mariadb-install-db || command -v mysql_install_db)"
            "$installer" --no-defaults --user=mysql --datadir="$DATA" --auth-root-authentication-method=socket \
                --skip-test-db >"$BASE/install.log" 2>&1
        fi
        chown -R mysql:mysql "$BASE"
        "$server" --no-defaults --user=mysql --datadir="$DATA" --socket="$SOCK" --pid-file="$PIDFILE" \
            --bind-address=127.0.0.1 --port="$PORT" --skip-name-resolve --log-error="$LOG" \
            --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
        for _ in $(seq 1 60); do
            if client -e 'SELECT 1' >/dev/null 2>&1; then
                break
            fi
            sleep 0.5
        done
        if ! client -e 'SELECT 1' >/dev/null 2>&1; then
            echo "mariadb did not start; log:" >&2
            tail -20 "$LOG" >&2 || true
            exit 1
        fi
    fi
    client <<'SQL'
CREATE USER IF NOT EXISTS 'edgeact'@'127.0.0.1' IDENTIFIED BY 'edgeact';
CREATE USER IF NOT EXISTS 'edgeact'@'localhost' IDENTIFIED BY 'edgeact';
GRANT ALL PRIVILEGES ON `edgeact\_%`.* TO 'edgeact'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `edgeact\_%`.* TO 'edgeact'@'localhost';
FLUSH PRIVILEGES;
SQL
    echo "mariadb listening on 127.0.0.1:$PORT"
    echo "export EDGEACT_TEST_MYSQL=mysql://edgeact:edgeact@127.0.0.1:$PORT"
}

stop() {
    if [ -f "$PIDFILE" ]; then
        local pid
        pid="$(cat "$PIDFILE")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
    fi
    rm -rf "$BASE"
    echo "mariadb stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
