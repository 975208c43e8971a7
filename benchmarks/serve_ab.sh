#!/bin/bash
# The service's settings side by side, in one run, with wrk as the load (apt install wrk):
#   A = batching off, without uvloop and httptools (the service as issue 37 found it)
#   B = the defaults (batching 2 ms; uvloop and httptools, the `serve` extra)
#   C = B with `serve --workers 2`
# at 1 and 32 clients, 10 s each, ROUNDS rounds. A uninstalls uvloop and httptools from
# the virtual environment for its runs and installs them again after.
#   bash benchmarks/serve_ab.sh EXPORT_DIR OUT_DIR [ROUNDS]
# Each run's figures: OUT_DIR/SETTING-cCLIENTS-rROUND.json (load_test.py --json).
set -euo pipefail
EXPORT=$1; OUT=$2; ROUNDS=${3:-2}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
versions=$($PY -m pip list --format=freeze 2>/dev/null | grep -iE "^(uvloop|httptools)==" | tr '\n' ' ')
restore() { [ -n "$versions" ] && $PY -m pip install -q $versions; }
trap restore EXIT
run() {  # SETTING CLIENTS [load_test args...]
  local name=$1 c=$2; shift 2
  echo -n "$name, $c clients, round $r: "
  $PY benchmarks/load_test.py "$EXPORT" --generator wrk --clients "$c" --duration 10 \
    --json "$OUT/$name-c$c-r$r.json" "$@" 2>&1 | tail -1
}
for r in $(seq 1 "$ROUNDS"); do
  $PY -m pip uninstall -q -y uvloop httptools
  for c in 1 32; do run A "$c" --batch-wait-ms -1; done
  restore
  for c in 1 32; do run B "$c"; run C "$c" --server-workers 2; done
done
