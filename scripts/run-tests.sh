#!/usr/bin/env bash
# Runs the test suite (pytest: Python-level, integration against a real PostgreSQL with the
# extension installed, and the pg_regress suite). Extra arguments go to pytest.
# pytest's exit code 5 ("no tests collected") is a failure here, never a green run.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run-tests: pytest collected no tests: failing" >&2
fi
exit "$rc"
