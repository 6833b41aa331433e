#!/usr/bin/env bash
# TEST-ONLY STAND-IN for the official postgres image's docker-entrypoint.sh (see the Dockerfile
# beside this file): not the official script, and only the part of its documented contract
# that imgfeat's image relies on.
#
# Honours:
#   * CMD `postgres [ARGS...]` (or only ARGS starting with '-'): the server runs as the postgres
#     user with ARGS (e.g. `-c listen_addresses=127.0.0.1`); as root, PGDATA and
#     /var/run/postgresql are given to postgres first. Any other command is executed as is.
#   * PGPORT: the server's port (PostgreSQL's own default variable; 5432 when unset), also for
#     the temporary server of the first start.
#   * First start (PGDATA has no PG_VERSION): initdb with POSTGRES_USER (default postgres) as
#     the superuser, POSTGRES_PASSWORD (required) as its password and POSTGRES_INITDB_ARGS;
#     initdb's own pg_hba.conf (trust on the Unix socket and on loopback, unless
#     POSTGRES_INITDB_ARGS says otherwise, e.g. --auth-host=scram-sha-256) followed by
#     `host all all all scram-sha-256`; then a temporary server on the Unix socket only
#     (listen_addresses=''), POSTGRES_DB (default POSTGRES_USER) created, every
#     /docker-entrypoint-initdb.d/*.sql run in name order by `psql -v ON_ERROR_STOP=1` as
#     POSTGRES_USER in POSTGRES_DB, and the temporary server stopped. A later start with the
#     same data directory skips all of this.
# Omits: *.sh and compressed (*.sql.gz, .xz, .zst) init files, the *_FILE variants of the
# variables, POSTGRES_HOST_AUTH_METHOD, POSTGRES_INITDB_WALDIR, running as an arbitrary --user
# (nss_wrapper), docker-ensure-initdb.sh, and the official script's warnings.
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
	exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	chmod 3777 /var/run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ]; then
		echo 'stand-in entrypoint: the database is uninitialized and POSTGRES_PASSWORD is not set' >&2
		exit 1
	fi
	POSTGRES_USER="${POSTGRES_USER:-postgres}"
	POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
	# shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of arguments, as in the official image
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") ${POSTGRES_INITDB_ARGS:-}
	printf '\nhost all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"

	pg_ctl -D "$PGDATA" -w start \
		-o "$(printf '%q ' "${@:2}" -c "listen_addresses=" -p "${PGPORT:-5432}")"
	psql_run=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [ "$POSTGRES_DB" != postgres ]; then
		PGHOST='' PGHOSTADDR='' "${psql_run[@]}" --dbname postgres --set db="$POSTGRES_DB" \
			<<<'CREATE DATABASE :"db" ;'
	fi
	for f in /docker-entrypoint-initdb.d/*.sql; do
		[ -e "$f" ] || continue
		echo "stand-in entrypoint: running $f"
		PGHOST='' PGHOSTADDR='' "${psql_run[@]}" --dbname "$POSTGRES_DB" -f "$f"
	done
	pg_ctl -D "$PGDATA" -m fast -w stop
	echo 'stand-in entrypoint: init process complete; ready for start up.'
fi

exec "$@"
