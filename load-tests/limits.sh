#!/usr/bin/env bash
# Rate-limit decisions per second and p99 of one decision, in this process and on a
# redis-server over loopback (started here on a free port, stopped at the end).
#
#   load-tests/limits.sh [fieldvox-limits-bench args...]   e.g. --decisions 200000 --concurrency 16
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/build.sh
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d /tmp/fieldvox-limits-XXXX)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" > "$dir/redis.log" 2>&1 &
redis=$!
trap 'kill $redis 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.1; done
"$CARGO_TARGET_DIR/debug/fieldvox-limits-bench" --redis-url "redis://127.0.0.1:$port" "$@"
