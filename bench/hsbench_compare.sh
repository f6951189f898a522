#!/usr/bin/env bash
# Run ../shared/bench/hsbench.py against Synapse and then against us, one after the other
# in the same session with the same preset, and write both JSON results plus a ratio table
# to bench/results/. Usage: bench/hsbench_compare.sh [--quick]   (needs ../shared/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET="${1:---quick}"
SHARED="$(cd .. && pwd)/shared/bench"
OUT=bench/results
PY=.venv/bin/python
mkdir -p "$OUT"

# Synapse, as the anchor, with a registration token like ours.
eval "$(REGISTRATION_TOKEN=hsbench-token "$SHARED/run_synapse.sh" start)"
"$PY" "$SHARED/hsbench.py" "$BASE_URL" $PRESET --registration-token hsbench-token \
    --pid "$SYNAPSE_PID" --out "$OUT/hsbench-synapse.json" || true
"$SHARED/run_synapse.sh" stop

# Us, on a fresh database.
WORK=$(mktemp -d)
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CONDUWUIT_PORT=$PORT CONDUWUIT_ADDRESS=127.0.0.1 CONDUWUIT_LOG=warn \
CONDUWUIT_DATABASE_PATH="$WORK/db" CONDUWUIT_ALLOW_REGISTRATION=true \
CONDUWUIT_REGISTRATION_TOKEN=hsbench-token .venv/bin/conduwuit >"$WORK/server.log" 2>&1 &
OUR_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/_matrix/client/versions" >/dev/null && break; sleep 0.2; done
"$PY" "$SHARED/hsbench.py" "http://127.0.0.1:$PORT" $PRESET --registration-token hsbench-token \
    --pid "$OUR_PID" --out "$OUT/hsbench-ours.json" || true
kill -TERM "$OUR_PID"; wait "$OUR_PID" || true
rm -rf "$WORK"

"$PY" -m bench.hsbench_ratios "$OUT/hsbench-synapse.json" "$OUT/hsbench-ours.json" \
    | tee "$OUT/hsbench-ratios.md"
