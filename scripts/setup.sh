#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for fieldvox: system packages and the local
# models. Idempotent: a second run installs nothing and downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng: phonemes for Piper and test speech; flite: a second voice for the answer-quality
# benchmark; curl: load-tests/run.sh readiness probe.
packages=(curl espeak-ng flite)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export FIELDVOX_MODELS_DIR="${FIELDVOX_MODELS_DIR:-$HOME/.cache/fieldvox/models}"
python3 models/fetch.py --dir "$FIELDVOX_MODELS_DIR"
