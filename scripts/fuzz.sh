#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/) with cargo fuzz on stable Rust (no sanitizer) and runs
# each for a bounded time, starting from its seed corpus in fuzz/corpus/<target>.
#
#   scripts/fuzz.sh                       every target for 20 s (what the test command runs)
#   scripts/fuzz.sh --seconds 600 token   one target for ten minutes
#
# New inputs that libFuzzer finds go to a scratch corpus, so the one in git stays small.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the run. Prints, per
# target, how many inputs ran without a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

seconds=20
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_event pcm_frames token document ct2_model gguf_header)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
cd fuzz
cargo fuzz build -s none
scratch="$(mktemp -d "${TMPDIR:-/tmp}/fieldvox-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
status=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  log="$scratch/$t.log"
  if cargo fuzz run -s none "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    printf 'fuzz %-13s %10s inputs in %ss, no crash\n' "$t" "$runs" "$seconds"
  else
    status=1
    echo "fuzz $t FAILED; the crashing input is in fuzz/artifacts/$t/ (log follows)" >&2
    tail -40 "$log" >&2
  fi
done
exit $status
