#!/usr/bin/env bash
# The GPU benchmark in two calls on the lent H200 machine (see benchmarks/README.md):
#   benchmarks/gpu.sh build   wheels -> /tmp/site, llama.cpp CUDA build, 7B demo model, Q4_K_M  (<= 9 min)
#   benchmarks/gpu.sh bench   step profile, batched-bench, gateway and llama-server -np 64 over the
#                             standard workloads (greedy, sampled chat, mixed and long-tailed
#                             lengths, C=1/16, shared prefix, Poisson)                     (<= 9.5 min)
#   PROFILE=ab GATEWAY_ARGS=... GATEWAY_B_ARGS=... [SWEEP_BATCHES=1024:512,2048:2048] gpu.sh bench
#                             the step profile over batch/ubatch sizes and sampler threads (with
#                             SWEEP_BATCHES), then
#                             the quick rows for two gateways (flags A on GPU 0, B on GPU 1 after
#                             llama-server)                                              (<= 8 min)
#   PROFILE=rate BENCH_DEADLINE=300 benchmarks/gpu.sh bench
#                             mixed and long-tailed lengths at the same Poisson rates (3 and 5
#                             requests/s) for the gateway and llama-server: TTFT at equal load
#                                                                                          (<= 5 min)
#   PROFILE=ceiling BENCH_DEADLINE=120 SERVE_NEED=40 GATEWAY_ARGS=... GATEWAY_B_ARGS=... gpu.sh bench
#                             c64 for two gateways (A on GPU 0, B on GPU 1 after
#                             llama-batched-bench -npl 64, the ceiling)                   (<= 3 min)
#   PROFILE=cache BENCH_DEADLINE=330 benchmarks/gpu.sh bench
#                             the conversations workload (chats that grow) at 64 clients and at
#                             96 (more conversations than slots), gateway and llama-server side
#                             by side: how long each keeps a conversation's prompt cached
#                                                                       (<= 5 min, not run yet)
#   PROFILE=mixed BENCH_DEADLINE=450 benchmarks/gpu.sh bench
#                             the mixed-length row only, for the gateway and llama-server side by
#                             side: three seeds of 256 requests and one run of 1,024, so that a
#                             TTFT p50 difference of 10% is not one call's noise  (378 s in run 21)
#   PROFILE=mixedab BENCH_DEADLINE=300 GATEWAY_ARGS=... GATEWAY_B_ARGS=... gpu.sh bench
#                             two gateways side by side (A on GPU 0, B on GPU 1), no llama.cpp:
#                             the mixed row with three seeds, then c64 and sampled chat (rows
#                             where prompts come in waves)   (the B lane took 181 s in run 23)
#   PROFILE=quick BENCH_DEADLINE=330 benchmarks/gpu.sh bench
#                             the rows that matter most (greedy and sampled chat, mixed and
#                             long-tailed lengths), batch invariance, the step profile     (<= 5.5 min)
# On a machine with two GPUs (nvidia-h200-x2) `bench` runs two lanes at once: ours on GPU 0 and
# llama-server on GPU 1 (the same model of card in the same host), with the same requests.
# Needs benchmarks/prepare.sh to have filled .dev/ on the dev machine. Everything that must outlive
# a call lives under /tmp; $OUT receives build.log, or bench.log and results.json.
set -uo pipefail # no -e: every step is time-boxed and its failure logged, and the rest carries on

MODE="${1:-}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-/tmp/gpu-out}"
SDIST=llama_cpp_python-0.3.36
SRC=/tmp/$SDIST
LLAMA=$SRC/vendor/llama.cpp
BIN=$LLAMA/build/bin # libllama.so, libggml*.so and the tools all land here
SITE=/tmp/site
PYLIB=/tmp/pylib # holds only a llama_cpp -> $SRC/llama_cpp link, so the sdist's tests/ never shadow ours
MODELS=/tmp/m
F16=$MODELS/vicuna7b-f16.gguf
MODEL=$MODELS/vicuna7b-q4_k_m.gguf
BUILD_LOG=/tmp/llama-build.log
BUILD_RC=/tmp/llama-build.rc
BUILD_PID=/tmp/llama-build.pid
RESULTS=/tmp/bench-results # one JSON per server x workload; only the combined file goes to $OUT
# 64 slots x 1,280 tokens: the shared-prefix workload needs 1,000 + 32 + 128 tokens per slot, and
# llama-server with an explicit -np splits -c evenly between slots (40,960 would give 640 each).
CTX=81920
RESERVE=25 # seconds kept at the end of `bench` for stopping the server and combining
T0=$SECONDS
SERVER_PID=""
SERVER_NAME=""
MODEL_ID=default

CMAKE_FLAGS=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_SHARED_LIBS=ON
  -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release)
BUILD_TARGETS=(llama llama-server llama-batched-bench llama-quantize)
# Host prompt cache off (--cache-ram 0): with all-distinct prompts it only copies every finished
# sequence's KV to host RAM. Each slot still reuses its own previous prompt (cache_prompt).
LLAMA_SERVER_FLAGS=(-ngl 99 -fa on -b 2048 -ub 512 --cache-ram 0 --no-webui --host 127.0.0.1)

# shellcheck source=benchmarks/lib.sh
source "$REPO/benchmarks/lib.sh" # log, left, http_ok, http_get

# step NAME LIMIT CMD...: run CMD under `timeout`, then print how long it took and its status.
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  log "start $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  log "end   $name: rc=$rc after $((SECONDS - start))s"
  return "$rc"
}

# quiet_step NAME LIMIT LOGFILE CMD...: like step, with CMD's output in LOGFILE and its tail shown.
quiet_step() {
  local name=$1 limit=$2 file=$3 start=$SECONDS rc
  shift 3
  log "start $name (limit ${limit}s, output in $file)"
  timeout --kill-after=10 "$limit" "$@" >"$file" 2>&1
  rc=$?
  tail -n "${QUIET_TAIL:-6}" "$file" | cut -c1-200
  log "end   $name: rc=$rc after $((SECONDS - start))s"
  return "$rc"
}

setup_env() {
  export PYTHONPATH="$REPO:$SITE:$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
  export LLAMA_CPP_LIB_PATH="$BIN"
  export LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PYTHONUNBUFFERED=1
}

# ---------------------------------------------------------------- build
install_wheels() {
  if [[ -f $SITE/.done ]]; then log "wheels already in $SITE"; return 0; fi
  rm -rf "$SITE"
  if ! step wheels 120 python3 -m pip install -q --no-index --no-deps --no-compile \
    --target "$SITE" "$REPO"/.dev/wheels/*.whl; then
    log "pip failed; unzipping the wheels instead"
    rm -rf "$SITE" && mkdir -p "$SITE"
    for wheel in "$REPO"/.dev/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$SITE" || return 1; done
  fi
  touch "$SITE/.done"
}

unpack_sdist() {
  if [[ ! -d $SRC ]]; then
    rm -rf "$SRC.partial" && mkdir -p "$SRC.partial"
    tar -xzf "$REPO/.dev/$SDIST-slim.tar.gz" -C "$SRC.partial" || return 1
    mv "$SRC.partial/$SDIST" "$SRC" && rm -rf "$SRC.partial"
    log "unpacked the slim sdist into $SRC"
  fi
  mkdir -p "$PYLIB" && ln -sfn "$SRC/llama_cpp" "$PYLIB/llama_cpp"
}

build_done() {
  [[ -f $BUILD_RC && "$(cat "$BUILD_RC")" == 0 && -x $BIN/llama-server && -e $BIN/libllama.so ]]
}

start_build() {
  if build_done; then log "llama.cpp build already done"; return 0; fi
  if [[ -f $BUILD_PID ]] && kill -0 "$(cat "$BUILD_PID")" 2>/dev/null; then
    log "llama.cpp build already running (pid $(cat "$BUILD_PID"))"
    return 0
  fi
  rm -f "$BUILD_RC"
  log "starting the llama.cpp CUDA build in the background: ${BUILD_TARGETS[*]} (log $BUILD_LOG)"
  # setsid: the build is its own session, so it survives this call if the call runs out of time.
  # shellcheck disable=SC2016 # $1.. expand inside the child shell
  setsid bash -c 'cd "$1" && cmake -S . -B build -G Ninja "${@:4}" \
      && cmake --build build -j "$(nproc)" --target $3; echo $? > "$2"' \
    _ "$LLAMA" "$BUILD_RC" "${BUILD_TARGETS[*]}" "${CMAKE_FLAGS[@]}" \
    >"$BUILD_LOG" 2>&1 </dev/null &
  echo $! >"$BUILD_PID"
}

write_f16() {
  if [[ -f $MODEL || -f $F16.done ]]; then log "demo model already written"; return 0; fi
  mkdir -p "$MODELS" && rm -f "$F16"
  step demo-model 300 python3 -m batching.demo_model "$F16" --size 7b \
    --vocab "$LLAMA/models/ggml-vocab-llama-spm.gguf" && touch "$F16.done"
  ls -la "$MODELS"
}

wait_build() {
  local last=$SECONDS pid
  until [[ -f $BUILD_RC ]]; do
    if (($(left) <= 0)); then
      log "build still running at this call's deadline: run 'gpu.sh build' again (machine warm)"
      return 1
    fi
    pid=$(cat "$BUILD_PID" 2>/dev/null)
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null && [[ ! -f $BUILD_RC ]]; then
      log "the build process is gone without a status"; tail -n 30 "$BUILD_LOG"; return 1
    fi
    if ((SECONDS - last >= 30)); then log "building: $(tail -n 1 "$BUILD_LOG" | cut -c1-140)"; last=$SECONDS; fi
    sleep 2
  done
  if ! build_done; then log "llama.cpp build FAILED"; tail -n 60 "$BUILD_LOG"; return 1; fi
  log "llama.cpp build done"
  grep -iE 'CUDA Toolkit|CUDA architectures|Using CUDA' "$BUILD_LOG" | head -n 4
  ls "$BIN"
}

quantize() {
  if [[ -f $MODEL ]]; then log "Q4_K_M model already there"; return 0; fi
  if [[ ! -f $F16.done || ! -x $BIN/llama-quantize ]]; then log "cannot quantize: no F16 model or no llama-quantize"; return 1; fi
  if (($(left) < 75)); then log "no time left to quantize here; 'gpu.sh bench' does it first"; return 0; fi
  quiet_step quantize "$(left)" /tmp/quantize.log "$BIN/llama-quantize" "$F16" "$MODEL.partial" Q4_K_M 16 \
    && mv "$MODEL.partial" "$MODEL" && rm -f "$F16" "$F16.done" && ls -la "$MODELS"
}

build_kernels() { # our C sampling kernels, as setup.py builds them (no Python headers needed)
  local so
  so="$REPO/batching/_sampling$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
  [[ -f $so ]] && return 0
  gcc -O3 -std=c11 -fno-trapping-math -fno-math-errno -pthread -shared -fPIC -o "$so" \
    "$REPO"/batching/_{sampling,parallel,pool}.c -lm \
    && log "built $so"
}

check_python() {
  step llama-cpp-python 60 python3 -c 'import llama_cpp
print("llama_cpp", llama_cpp.__version__, "from", llama_cpp.__file__)
print("gpu offload:", llama_cpp.llama_supports_gpu_offload())
raise SystemExit(0 if llama_cpp.llama_supports_gpu_offload() else 1)'
  step python-deps 60 python3 -c 'import aiohttp, gguf, pydantic, sse_starlette, starlette, tqdm, uvicorn
print("starlette", starlette.__version__, "pydantic", pydantic.VERSION, "uvicorn", uvicorn.__version__)'
  step gateway-cli 60 python3 -m gateway --help
}

do_build() {
  DEADLINE=${BUILD_DEADLINE:-530}
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader
  setup_env
  install_wheels || return 1
  unpack_sdist || return 1
  start_build
  write_f16 # the F16 model is written while the build runs
  wait_build || return 1
  quantize || return 1
  build_kernels || return 1
  check_python
  df -h /tmp | tail -n 1
}

# ---------------------------------------------------------------- bench
model_id() { # model_id PORT: first id of /v1/models, or "default"
  python3 -c 'import json, sys, urllib.request
try:
    print(json.load(urllib.request.urlopen(sys.argv[1], timeout=5))["data"][0]["id"])
except Exception:
    print("default")' "http://127.0.0.1:$1/v1/models"
}

start_server() { # start_server NAME PORT CMD...: start, then wait for GET /health == 200
  local name=$1 port=$2 start=$SECONDS
  shift 2
  SERVER_NAME=$name
  log "starting $name: $*"
  setsid "$@" >"/tmp/server-$name.log" 2>&1 </dev/null &
  SERVER_PID=$!
  until http_ok "http://127.0.0.1:$port/health"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "$name exited before it was ready"; tail -n 40 "/tmp/server-$name.log"; SERVER_PID=""; return 1
    fi
    if ((SECONDS - start > 150 || $(left) < RESERVE + 30)); then
      log "$name not ready after $((SECONDS - start))s"; stop_server; return 1
    fi
    sleep 1
  done
  MODEL_ID=$(model_id "$port")
  log "$name ready after $((SECONDS - start))s (model id: $MODEL_ID)"
}

stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill -TERM -- "-$SERVER_PID" "$SERVER_PID" 2>/dev/null
  for _ in $(seq 40); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$SERVER_PID" "$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null
  log "stopped $SERVER_NAME; $(grep -c 'making room for prompt cache' "/tmp/server-$SERVER_NAME.log") 'making room for prompt cache' lines; log tail:"
  tail -n 12 "/tmp/server-$SERVER_NAME.log" | cut -c1-200
  SERVER_PID=""
}

# bench SERVER PORT WORKLOAD LIMIT ARGS...: one `gateway.bench` run, skipped when time is short
bench() {
  local server=$1 port=$2 name=$3 limit=$4 budget
  shift 4
  budget=$(($(left) - RESERVE))
  if ((budget < 15)); then
    log "SKIP $server:$name (no time left)"; echo "$server:$name (no time left)" >>"$RESULTS/skipped.txt"; return 0
  fi
  ((limit > budget)) && limit=$budget
  # `python3 -m gateway.bench` is `python3 -m gateway bench` without going through the CLI module.
  step "$server:$name" "$limit" python3 -m gateway.bench --base-url "http://127.0.0.1:$port" \
    --model "$MODEL_ID" --label "$server:$name" --out "$RESULTS/${server}__${name}.json" \
    --no-progress --timeout 120 "$@" \
    || echo "$server:$name (failed, timed out or every request failed)" >>"$RESULTS/skipped.txt"
  [[ $server == gateway* ]] && scrape_metrics "$port" "$OUT/metrics/${server}__${name}.txt"
  return 0
}

scrape_metrics() { # scrape_metrics PORT FILE: the gateway's /metrics after a workload (cumulative)
  mkdir -p "$(dirname "$2")"
  http_get "http://127.0.0.1:$1/metrics" \
    | grep -E '^gateway_(time_to_first_token|request_queue|step_(duration|ubatches|sample)|time_per_output)' >"$2"
}

mixed_seeds() { # mixed_seeds SERVER PORT LIMIT: the c64 mixed row with seeds 23, 33 and 43
  local seed
  for seed in 23 33 43; do
    bench "$1" "$2" mixed-c64-s$seed "$3" --workload mixed --prompt-len-range 64 1000 \
      --output-len-range 16 256 --concurrency 64 --num-requests 256 --warmup 64 --seed $seed
  done
}

# workloads SERVER PORT PROFILE: the same workloads and seeds for every server, most telling
# first; "short" runs only the rows that compare our batch sizes.
workloads() {
  local s=$1 p=$2 profile=$3 c64=(--concurrency 64 --num-requests 256 --warmup 64)
  local chat=(--endpoint chat --prompt-format text --prompt-len 200 --output-len 128)
  if [[ $profile == rate ]]; then # both servers at the same request rates, below saturation
    local r
    for r in 3 5; do
      bench "$s" "$p" mixed-r$r 70 --workload mixed --prompt-len-range 64 1000 --output-len-range 16 256 \
        --request-rate $r --num-requests 150 --warmup 16 --concurrency 16 --seed 23
      bench "$s" "$p" lognormal-r$r-t0.7-p0.9 100 --workload lognormal --temperature 0.7 --top-p 0.9 \
        --request-rate $r --num-requests 150 --warmup 16 --concurrency 16 --seed 24
    done
    return 0
  fi
  if [[ $profile == mixedab ]]; then # two gateways: the mixed row three times, then two waves
    mixed_seeds "$s" "$p" 90
    bench "$s" "$p" c64 60 "${c64[@]}" --seed 13
    bench "$s" "$p" chat-c64-t0.7-p0.9 60 "${chat[@]}" "${c64[@]}" --temperature 0.7 --top-p 0.9 --seed 21
    return 0
  fi
  if [[ $profile == mixed ]]; then # the mixed row, often enough to tell a 10% TTFT difference
    mixed_seeds "$s" "$p" 120
    bench "$s" "$p" mixed-c64-n1024 300 --workload mixed --prompt-len-range 64 1000 \
      --output-len-range 16 256 --concurrency 64 --num-requests 1024 --warmup 64 --seed 53
    return 0
  fi
  if [[ $profile == cache ]]; then # chats that grow; then more conversations than slots
    local conv=(--workload conversations --prefix-len 300 --suffix-len 32 --output-len 64 --turns 4)
    bench "$s" "$p" conversations-c64 120 "${conv[@]}" --concurrency 64 --num-requests 256 \
      --warmup 64 --seed 31
    bench "$s" "$p" conversations-c96 150 "${conv[@]}" --concurrency 96 --num-requests 384 \
      --warmup 96 --seed 32
    if [[ $s == gateway ]]; then
      log "gateway prompt cache: $(http_get "http://127.0.0.1:$p/metrics" \
        | grep -E '^gateway_prompt_(cached_)?tokens_total' | tr '\n' ' ')"
    fi
    return 0
  fi
  bench "$s" "$p" c64 100 "${c64[@]}" --seed 13
  [[ $profile == ceiling ]] && return 0
  [[ $profile == quick ]] && bench "$s" "$p" chat-c64-t0 100 "${chat[@]}" "${c64[@]}" --seed 21
  bench "$s" "$p" chat-c64-t0.7-p0.9 100 "${chat[@]}" "${c64[@]}" --temperature 0.7 --top-p 0.9 --seed 21
  bench "$s" "$p" mixed-c64 120 --workload mixed --prompt-len-range 64 1000 --output-len-range 16 256 \
    "${c64[@]}" --seed 23
  [[ $profile == short ]] && return 0
  if [[ $profile == quick ]]; then
    bench "$s" "$p" lognormal-c64-t0.7-p0.9 120 --workload lognormal "${c64[@]}" --temperature 0.7 \
      --top-p 0.9 --seed 24
    return 0
  fi
  bench "$s" "$p" chat-c64-t1.0-p1.0 100 "${chat[@]}" "${c64[@]}" --temperature 1.0 --top-p 1.0 --seed 22
  bench "$s" "$p" lognormal-c64-t0.7-p0.9 120 --workload lognormal "${c64[@]}" --temperature 0.7 \
    --top-p 0.9 --seed 24
  bench "$s" "$p" chat-c64-k40-p0.95-t0.8 100 "${chat[@]}" "${c64[@]}" --temperature 0.8 --top-k 40 \
    --top-p 0.95 --seed 25
  bench "$s" "$p" c1 60 --concurrency 1 --num-requests 8 --warmup 2 --seed 11
  bench "$s" "$p" c16 90 --concurrency 16 --num-requests 64 --warmup 16 --seed 12
  bench "$s" "$p" shared-prefix-c64 120 --workload shared-prefix --prefix-len 1000 --suffix-len 32 \
    --concurrency 64 --num-requests 128 --warmup 64 --seed 14
  if [[ $s == gateway ]]; then
    log "gateway prompt cache so far: $(http_get "http://127.0.0.1:$p/metrics" \
      | grep -E '^gateway_(prompt_(cached_)?tokens_total|step_ubatches_(sum|count))' | tr '\n' ' ')"
  fi
  # open loop just under the saturation of both servers (about 10-12 requests/s at C=64)
  bench "$s" "$p" poisson-r9 90 --request-rate 9 --num-requests 200 --seed 15
}

batched_bench() { # batched_bench NAME EXTRA...: llama.cpp's own batched decode, no HTTP
  local name=$1
  shift
  if (($(left) < ${BATCHED_BENCH_NEED:-240})); then echo "$name (no time left)" >>"$RESULTS/skipped.txt"; return 0; fi
  QUIET_TAIL=0 quiet_step "$name" 90 "$RESULTS/$name.txt" "$BIN/llama-batched-bench" -m "$MODEL" -c 40960 -b 2048 \
    -ub 512 -ngl 99 -fa on -npp 256 -ntg 128 -npl 1,8,16,32,64 "$@"
  grep '^|' "$RESULTS/$name.txt"
}

serve_and_bench() { # serve_and_bench NAME PORT PROFILE CMD...
  local name=$1 port=$2 profile=$3
  shift 3
  if (($(left) < RESERVE + ${SERVE_NEED:-90})); then
    log "SKIP $name (no time left)"; echo "$name (all workloads: no time left)" >>"$RESULTS/skipped.txt"; return 0
  fi
  if start_server "$name" "$port" "$@"; then
    workloads "$name" "$port" "$profile"
    stop_server
  else
    echo "$name (server did not start)" >>"$RESULTS/skipped.txt"
  fi
}

preflight() {
  setup_env
  build_kernels || return 1
  [[ -x $BIN/llama-server && -e $BIN/libllama.so ]] || { log "no llama.cpp build: run 'gpu.sh build' first"; return 1; }
  if [[ ! -f $MODEL ]]; then
    log "no Q4_K_M model yet: quantizing first"
    quiet_step quantize 150 /tmp/quantize.log "$BIN/llama-quantize" "$F16" "$MODEL.partial" Q4_K_M 16 \
      && mv "$MODEL.partial" "$MODEL" && rm -f "$F16" "$F16.done" || return 1
  fi
  python3 -c 'import aiohttp, tqdm, gateway.bench' || { log "gateway.bench does not import"; return 1; }
}

# lane GPU NAME...: run the rest of the command with only that GPU visible
lane() {
  local gpu=$1
  shift
  CUDA_VISIBLE_DEVICES=$gpu "$@"
}

http_rows_only() { [[ $PROFILE =~ ^(rate|ceiling|cache|mixed|mixedab)$ ]]; } # no profiles
llama_server_only() { [[ $PROFILE =~ ^(quick|rate|cache|mixed)$ ]]; } # on lane 2

ours_lane() { # step profile, then our gateway over every workload
  if [[ $PROFILE == ab ]]; then # the engine's settings side by side, then the HTTP rows
    [[ -n ${SWEEP_BATCHES:-} ]] && step step-profile 240 python3 "$REPO/benchmarks/step_profile.py" --model "$MODEL" --slots 64 \
      --ctx-size "$CTX" --n-gpu-layers 99 --threads 0 --sampler-threads 4,8 --mixed-steps 200 \
      --batches "$SWEEP_BATCHES" --out "$OUT/step_profile.json"
  elif http_rows_only; then
    : # the HTTP rows only
  elif [[ $PROFILE == quick ]]; then
    step invariance 90 python3 "$REPO/benchmarks/invariance.py" --model "$MODEL" --out "$OUT/invariance.json"
    step step-profile 120 python3 "$REPO/benchmarks/step_profile.py" --model "$MODEL" --slots 64 \
      --ctx-size "$CTX" --n-gpu-layers 99 --threads 0 --sampler-threads 4 --mixed-steps 200 \
      --out "$OUT/step_profile.json"
  else
    step step-profile 150 python3 "$REPO/benchmarks/step_profile.py" --model "$MODEL" --slots 64 \
      --ctx-size "$CTX" --n-gpu-layers 99 --threads 4,16 --sampler-threads 4 --mixed-steps 300 \
      --out "$OUT/step_profile.json"
  fi
  http_rows_only || step sampler-bench-4 40 python3 "$REPO/benchmarks/sampler_bench.py" --threads 4
  http_rows_only || step sampler-bench-8 40 python3 "$REPO/benchmarks/sampler_bench.py" --threads 8
  local profile=$PROFILE
  [[ $profile == ab ]] && profile=quick # the quick rows for both gateways
  serve_and_bench gateway 8001 "$profile" python3 -m gateway serve --model "$MODEL" --slots 64 \
    --ctx-size "$CTX" --n-gpu-layers 99 --port 8001 "${GATEWAY_EXTRA[@]}"
}

reference_lane() { # llama.cpp's own ceiling and server, then our gateway at the other batch size
  if [[ $PROFILE == ceiling ]]; then # the ceiling, then our gateway with the B flags: c64 only
    BATCHED_BENCH_NEED=60 batched_bench batched-bench -npl 64
    serve_and_bench gateway-b 8003 ceiling python3 -m gateway serve --model "$MODEL" --slots 64 \
      --ctx-size "$CTX" --n-gpu-layers 99 --port 8003 "${GATEWAY_B_EXTRA[@]}"
    return 0
  fi
  if [[ $PROFILE == mixedab ]]; then # our gateway with the B flags: no llama.cpp on this lane
    serve_and_bench gateway-b 8003 mixedab python3 -m gateway serve --model "$MODEL" --slots 64 \
      --ctx-size "$CTX" --n-gpu-layers 99 --port 8003 "${GATEWAY_B_EXTRA[@]}"
    return 0
  fi
  llama_server_only || batched_bench batched-bench
  local profile=$PROFILE
  [[ $profile == ab ]] && profile=quick
  serve_and_bench llama-server-np64 8002 "$profile" "$BIN/llama-server" -m "$MODEL" -np 64 \
    -c "$CTX" "${LLAMA_SERVER_FLAGS[@]}" --port 8002
  if [[ $PROFILE == ab ]]; then # our gateway with other flags, over the same rows
    serve_and_bench gateway-b 8003 quick python3 -m gateway serve --model "$MODEL" --slots 64 \
      --ctx-size "$CTX" --n-gpu-layers 99 --port 8003 "${GATEWAY_B_EXTRA[@]}"
    return 0
  fi
  llama_server_only && return 0
  serve_and_bench gateway-b2048 8003 short python3 -m gateway serve --model "$MODEL" --slots 64 \
    --ctx-size "$CTX" --n-gpu-layers 99 --port 8003 --batch-size 2048
}

do_bench() {
  DEADLINE=${BENCH_DEADLINE:-555}
  PROFILE=${PROFILE:-full} # quick: the rows that matter most, invariance, one thread count
  GATEWAY_EXTRA=()
  read -ra GATEWAY_EXTRA <<<"${GATEWAY_ARGS:-}" # extra `gateway serve` flags, e.g. "--batch-size 2048"
  GATEWAY_B_EXTRA=()
  read -ra GATEWAY_B_EXTRA <<<"${GATEWAY_B_ARGS:-}" # PROFILE=ab: the other gateway's flags
  rm -rf "$RESULTS" && mkdir -p "$RESULTS"
  preflight || return 1
  nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv,noheader
  local gpus
  gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
  if ((gpus >= 2)); then
    log "two GPUs: our lane on GPU 0, llama.cpp's on GPU 1, side by side"
    (trap stop_server EXIT; lane 0 ours_lane) >"$OUT/lane-ours.log" 2>&1 &
    local ours=$!
    (trap stop_server EXIT; lane 1 reference_lane) >"$OUT/lane-reference.log" 2>&1 &
    wait "$ours" $!
    cat "$OUT/lane-ours.log" "$OUT/lane-reference.log"
  else
    trap stop_server EXIT
    trap 'stop_server; exit 143' TERM INT
    ours_lane
    reference_lane
  fi
  python3 "$REPO/benchmarks/plot.py" combine --dir "$RESULTS" --out "$OUT/results.json" \
    --meta "model=$(basename "$MODEL")" --meta "ctx=$CTX" \
    --meta "gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1) x$gpus" \
    --meta "llama_server_flags=${LLAMA_SERVER_FLAGS[*]}" --meta "gateway_args=${GATEWAY_ARGS:-}" --meta "gateway_b_args=${GATEWAY_B_ARGS:-}" \
    --meta "elapsed_s=$((SECONDS - T0))"
  python3 "$REPO/benchmarks/plot.py" table "$OUT/results.json"
  [[ -d $OUT/metrics ]] && tar -czf "$OUT/metrics.tar.gz" -C "$OUT" metrics && rm -rf "$OUT/metrics"
  log "bench done: $OUT/results.json"
}

case "$MODE" in
  build | bench) ;;
  *) echo "usage: $0 build|bench" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
if [[ $MODE == build ]]; then do_build; else do_bench; fi 2>&1 | tee -a "$OUT/$MODE.log"
rc=${PIPESTATUS[0]}
echo "[$((SECONDS - T0))s] exit $rc" | tee -a "$OUT/$MODE.log"
exit "$rc"
