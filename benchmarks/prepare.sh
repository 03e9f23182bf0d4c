#!/usr/bin/env bash
# Fill the git-ignored .dev/ folder with what the GPU machine cannot download:
#   .dev/llama_cpp_python-0.3.36-slim.tar.gz  the llama-cpp-python sdist without docs/models (~12 MB)
#   .dev/wheels/*.whl                         cp312 x86_64 wheels of the packages missing there
# Runs on the dev machine (it needs the package registry), once; re-running is cheap.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="$REPO/.dev"
SDIST_VERSION=0.3.36
SDIST_NAME="llama_cpp_python-$SDIST_VERSION"
SDIST_CACHE="${SDIST_CACHE:-/tmp/sdist}"
SLIM="$DEV/$SDIST_NAME-slim.tar.gz"

# One pinned version of each; the closure of their Requires-Dist minus what the GPU machine has
# (numpy, pyyaml, jinja2, httpx, aiohttp). gguf's `requests` is only imported lazily by helpers
# we never call, so it is left out. diskcache is needed by `import llama_cpp` (llama_cache.py).
WHEELS=(
  starlette==1.10.0 anyio==4.16.0 idna==3.20 sse-starlette==3.7.0
  uvicorn==0.54.0 h11==0.16.0 click==8.5.1
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
  typing-extensions==4.16.0 typing-inspection==0.4.5
  gguf==0.19.0 tqdm==4.70.1 diskcache==5.6.3
  # jsonschema (structured output checks answers against the schema) and its imports
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  attrs==26.1.0
  # vllm-router for benchmarks/replicas.sh (its Rust router, abi3: one wheel for every Python) and
  # what `python3 -m vllm_router.launch_router` imports: setproctitle, and fastapi and orjson
  # (its Python fallback balancer, imported at start-up even when unused); fastapi's own imports.
  vllm-router==0.1.17 setproctitle==1.3.8 orjson==3.13.0
  fastapi==0.165.0 annotated-doc==0.0.7 opentelemetry-api==1.45.2
)

mkdir -p "$DEV" "$DEV/wheels"

slim_sdist() {
  local tarball="$SDIST_CACHE/$SDIST_NAME.tar.gz"
  if [[ ! -f "$tarball" ]]; then
    mkdir -p "$SDIST_CACHE"
    python3 -m pip download -q --no-binary :all: --no-deps -d "$SDIST_CACHE" \
      "llama-cpp-python==$SDIST_VERSION"
  fi
  local tmp
  tmp="$(mktemp -d)"
  tar -xzf "$tarball" -C "$tmp"
  local root="$tmp/$SDIST_NAME" vendor="$tmp/$SDIST_NAME/vendor/llama.cpp"
  rm -rf "${root:?}/.git" "${root:?}/docs" "${vendor:?}/.git" \
    "${vendor:?}/docs" "${vendor:?}/benches" "${vendor:?}/media" "${vendor:?}/.github"
  # Keep only the LLaMA SentencePiece vocabulary: the 7B demo model is built on it.
  find "$vendor/models" -mindepth 1 -maxdepth 1 ! -name ggml-vocab-llama-spm.gguf -exec rm -rf {} +
  test -f "$vendor/models/ggml-vocab-llama-spm.gguf"
  tar -czf "$SLIM.tmp" -C "$tmp" "$SDIST_NAME"
  mv "$SLIM.tmp" "$SLIM"
  rm -rf "$tmp"
}

if [[ -f "$SLIM" ]]; then
  echo "slim sdist already there: $SLIM"
else
  slim_sdist
fi

rm -f "$DEV"/wheels/*.whl
python3 -m pip download -q --no-deps --only-binary=:all: -d "$DEV/wheels" \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "${WHEELS[@]}"

count="$(find "$DEV/wheels" -name '*.whl' | wc -l)"
if [[ "$count" -ne "${#WHEELS[@]}" ]]; then
  echo "expected ${#WHEELS[@]} wheels, got $count" >&2
  exit 1
fi
ls -1 "$DEV/wheels"
du -sh "$SLIM" "$DEV/wheels"
echo "total .dev size: $(du -sh "$DEV" | cut -f1)"
# What travels to the GPU machine (the files git tracks or would add, plus the git-ignored .dev/
# carried with them) must stay under 64 MiB.
tree_kib="$(cd "$REPO" && git ls-files -z -co --exclude-standard | du -ck --files0-from=- | tail -n 1 | cut -f1)"
total_kib=$((tree_kib + $(du -sk "$DEV" | cut -f1)))
echo "working tree + .dev/: $((total_kib / 1024)) MiB of the 64 MiB that can travel"
if ((total_kib >= 60 * 1024)); then
  echo "too close to the 64 MiB limit: slim .dev/ down" >&2
  exit 1
fi
