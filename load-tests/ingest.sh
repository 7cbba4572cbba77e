#!/usr/bin/env bash
# Ingest throughput: a generated N-page PDF manual (tests/clients/make_manual_pdf.py)
# uploaded over HTTP to a fresh server (embedded stores, default config) and followed to
# `done`; prints pages/s and chunks/s from the upload's start to the job's end.
#
#   load-tests/ingest.sh [PAGES]      (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
pages="${1:-200}"
port="${PORT:-8091}"
bin="$CARGO_TARGET_DIR/debug"
data=$(mktemp -d /tmp/fieldvox-ingest-XXXX)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

"$FIELDVOX_CACHE/venv/bin/python" tests/clients/make_manual_pdf.py "$data/manual.pdf" --pages "$pages"
FIELDVOX__DATA__DIR="$data/db" RUST_LOG=warn "$bin/fieldvox" serve --dev --listen "127.0.0.1:$port" > "$data/server.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do curl -fsS "http://127.0.0.1:$port/readyz" > /dev/null 2>&1 && break; sleep 0.5; done
start=$(date +%s.%N)
"$bin/fieldvox" manuals upload "$data/manual.pdf" --equipment BX-7 --url "http://127.0.0.1:$port" --tenant bench > "$data/manual.json"
end=$(date +%s.%N)
python3 - "$data/manual.json" "$start" "$end" <<'PY'
import json, sys
manual = json.load(open(sys.argv[1]))
secs = float(sys.argv[3]) - float(sys.argv[2])
print(f"{manual['pages']} pages, {manual['chunks']} chunks in {secs:.1f} s: "
      f"{manual['pages'] / secs:.1f} pages/s, {manual['chunks'] / secs:.1f} chunks/s")
PY
