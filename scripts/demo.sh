#!/usr/bin/env bash
# make demo: the main job on a fresh machine. Installs what is missing (scripts/setup-dev.sh demo:
# the project's own dependencies only, no torch, no pyspark),
# starts a throwaway PostgreSQL cluster kept under .imgfeat/cluster (or uses IMGFEAT_DSN),
# then runs the CMU faces job: load, featurize, train, evaluate, report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-dev.sh demo
if [ -n "${IMGFEAT_DSN:-}" ]; then
  exec .venv/bin/python -m imgfeat_loader.demo --dsn "$IMGFEAT_DSN" "$@"
fi
DSN=$(.venv/bin/python - <<'PY'
from pathlib import Path
from imgfeat_loader.cluster import LocalCluster
c = LocalCluster(base_dir=Path(".imgfeat/cluster").resolve(), keep=True).start()
print(c.dsn())
PY
)
echo "demo: PostgreSQL running at: $DSN"
.venv/bin/python -m imgfeat_loader.demo --dsn "$DSN" "$@"
echo
echo "The cluster keeps running for you: psql \"$DSN\""
echo "The imgfeat command: source .venv/bin/activate && export IMGFEAT_DSN=\"$DSN\" && imgfeat models list"
echo "Stop it with: make demo-stop"
