#!/usr/bin/env bash
# Sets up (packages, models) and runs every test: unit tests, the end-to-end tests against
# a real server with the real models, the load-test smoke runs and the answer-quality floor,
# then each fuzz target for 20 seconds (scripts/fuzz.sh).
#
#   scripts/test.sh                 run the suite once
#   scripts/test.sh --repeat 3      run it three times in a row, stopping at the first failure
#   scripts/test.sh -- <args>       extra arguments for `cargo test` (e.g. a test name filter)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

repeat=1
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) repeat="${2:?--repeat needs a count}"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done

scripts/setup.sh
scripts/build.sh
for i in $(seq 1 "$repeat"); do
  [ "$repeat" -gt 1 ] && echo "test run $i of $repeat"
  cargo test --workspace "$@"
done
# A filtered run (extra cargo arguments) skips fuzzing.
if [ $# -eq 0 ]; then
  scripts/fuzz.sh --seconds 20
fi
