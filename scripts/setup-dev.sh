#!/usr/bin/env bash
# Sets up what `make test`, `make bench` (mode `dev`, the default) or `make demo` (mode `demo`)
# need on a Debian/Ubuntu host: Debian packages (PostgreSQL server, PL/Python, PGXS headers,
# pip for the system Python; for `dev` also Java and the JDBC driver for the Spark tests),
# a virtualenv in .venv with the project (`demo`: the project alone, no torch, no pyspark;
# `dev`: with the test and spark extras), and `make install` (the extension and the
# server-side library). Idempotent: repeated runs do little.
#   usage: scripts/setup-dev.sh [dev|demo]
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-dev}"
case "$MODE" in dev|demo) ;; *) echo "setup: unknown mode '$MODE' (dev or demo)" >&2; exit 2 ;; esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

pg_major() { pg_config --version 2>/dev/null | sed -E 's/^PostgreSQL ([0-9]+).*/\1/'; }

apt_install() {
  echo "setup: installing Debian packages: $*"
  if [ -z "${apt_updated:-}" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The server first (the distribution's default major version), then the packages named
# after the major version pg_config reports: on Debian 12 that is 15, on Debian 13 17.
if ! command -v pg_config >/dev/null 2>&1 || [ ! -x "/usr/lib/postgresql/$(pg_major)/bin/postgres" ]; then
  apt_install postgresql postgresql-common libpq-dev
fi
PGV="$(pg_major)"
if [ -z "$PGV" ]; then echo "setup: pg_config reports no PostgreSQL version" >&2; exit 1; fi
need=()
[ -f "/usr/lib/postgresql/$PGV/lib/plpython3.so" ] || need+=("postgresql-plpython3-$PGV")
[ -f "/usr/lib/postgresql/$PGV/lib/pgxs/src/makefiles/pgxs.mk" ] || need+=("postgresql-server-dev-$PGV")
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v make >/dev/null 2>&1 || need+=(make)
if [ "$MODE" = dev ]; then
  command -v java >/dev/null 2>&1 || need+=(default-jre-headless)           # Spark (tests of the Spark path)
  [ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)  # Spark's JDBC reader
fi
if [ "${#need[@]}" -gt 0 ]; then
  apt_install "${need[@]}"
fi

# The client-side virtualenv (the Python on PATH; not the server's).
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# A dev venv serves the demo too; a demo venv gets the extras when `make dev` runs.
stamp=.venv/.imgfeat-installed-$MODE
if ! cmp -s pyproject.toml "$stamp" && ! cmp -s pyproject.toml .venv/.imgfeat-installed-dev; then
  if [ "$MODE" = dev ]; then target=".[test,spark]"; else target="."; fi
  echo "setup: installing the project into .venv ($MODE: $target)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
  cp pyproject.toml "$stamp"
fi

# The extension and the server-side library (root: it writes into PostgreSQL's share dir).
$SUDO make --no-print-directory install >/dev/null
echo "setup: ready (PostgreSQL $PGV, extension and library installed)"
