# Sourced by the scripts: one cache outside the clone for build output and models,
# so repeated runs on one machine are incremental.
export FIELDVOX_CACHE="${FIELDVOX_CACHE:-$HOME/.cache/fieldvox}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FIELDVOX_CACHE/target}"
export FIELDVOX_MODELS_DIR="${FIELDVOX_MODELS_DIR:-$FIELDVOX_CACHE/models}"
# Candle's CPU kernels use rayon; keep them to the machine's cores, not more.
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
# The llama-cpp feature compiles llama.cpp: optimised, not the debug profile's -O2 -g.
export LLAMA_LIB_PROFILE="${LLAMA_LIB_PROFILE:-Release}"
