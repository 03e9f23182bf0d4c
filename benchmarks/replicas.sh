#!/usr/bin/env bash
# Two gateway replicas, one per GPU, behind vllm-router, against one replica alone (see
# benchmarks/README.md, "Replicas behind the router"). For the 2-GPU machine, after
# `benchmarks/gpu.sh build` (the same /tmp: wheels in /tmp/site, the llama.cpp CUDA build, the
# Q4_K_M model). At most 9 minutes; $OUT receives replicas.log and replicas.json.
#   1. fixed 256 in / 128 out at C=128: one replica alone, then both behind the router
#      (round robin, then power of two, which polls each replica's /get_load)
#   2. shared-prefix (8 system prompts as text, so that the router sees them): one replica alone,
#      then both behind the router with round robin and with cache-aware routing; the prefix-cache
#      hit ratio comes from the gateways' own counters (cached / prompt tokens, both replicas)
set -uo pipefail # no -e: every step is time-boxed and its failure logged, and the rest carries on

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-/tmp/gpu-out}"
SITE=/tmp/site
PYLIB=/tmp/pylib
BIN=/tmp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin
MODEL=/tmp/m/vicuna7b-q4_k_m.gguf
ROUTER_SITE=/tmp/router-site # vllm-router and its imports, when /tmp/site predates them
RESULTS=/tmp/replicas-results
NAME=vicuna-7b
PORTS=(8101 8102) # one gateway per GPU: CUDA_VISIBLE_DEVICES 0 and 1
ROUTER_PORT=8100
ROUTER_METRICS_PORT=29100
GATEWAY_FLAGS=(--model "$MODEL" --served-model-name "$NAME" --slots 64 --ctx-size 81920
  --n-gpu-layers 99)
ROUTER_FLAGS=(--host 127.0.0.1 --port "$ROUTER_PORT" --worker-startup-check-interval 1
  --health-check-interval-secs 5 --request-timeout-secs 600 --log-level warning
  --prometheus-host 127.0.0.1 --prometheus-port "$ROUTER_METRICS_PORT")
FIXED=(--workload fixed --prompt-len 256 --output-len 128 --concurrency 128 --num-requests 512
  --warmup 128)
# 600 + 20 words of the load generator's text are 1,013-1,071 tokens with the LLaMA vocabulary
# (seeds 31-33): with 128 out they fit the 1,280 cells of a slot (81,920 / 64)
SHARED=(--workload shared-prefix --prompt-format text --prefix-len 600 --suffix-len 20
  --num-prefixes 8 --output-len 128 --concurrency 128 --num-requests 384 --warmup 128)
DEADLINE=${REPLICAS_DEADLINE:-520}
RESERVE=20
T0=$SECONDS
GATEWAY_PIDS=()
ROUTER_PID=""

# shellcheck source=benchmarks/lib.sh
source "$REPO/benchmarks/lib.sh" # log, left, http_ok, http_get

setup_env() {
  export PYTHONPATH="$REPO:$ROUTER_SITE:$SITE:$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
  export LLAMA_CPP_LIB_PATH="$BIN"
  export LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PYTHONUNBUFFERED=1
}

install_router() { # the wheels prepare.sh put in .dev/wheels, unless an earlier build has them
  if python3 -c 'import vllm_router.router, fastapi, orjson, setproctitle' 2>/dev/null; then return 0; fi
  local wheels=()
  for name in vllm_router setproctitle orjson fastapi annotated_doc opentelemetry_api; do
    wheels+=("$REPO"/.dev/wheels/"$name"-*.whl)
  done
  log "installing vllm-router into $ROUTER_SITE"
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$ROUTER_SITE" "${wheels[@]}" \
    && python3 -c 'import vllm_router.router, fastapi, orjson, setproctitle'
}

wait_ok() { # wait_ok URL PID LIMIT: until URL answers 200, the process dies, or LIMIT seconds
  local start=$SECONDS
  until http_ok "$1"; do
    kill -0 "$2" 2>/dev/null || { log "process $2 exited before $1 was ready"; return 1; }
    ((SECONDS - start < $3)) || { log "$1 not ready after $3 s"; return 1; }
    sleep 1
  done
  log "$1 ready after $((SECONDS - start)) s"
}

start_gateways() {
  local i
  for i in 0 1; do
    CUDA_VISIBLE_DEVICES=$i setsid python3 -m gateway serve "${GATEWAY_FLAGS[@]}" \
      --port "${PORTS[$i]}" >"/tmp/replica-$i.log" 2>&1 </dev/null &
    GATEWAY_PIDS+=($!)
  done
  for i in 0 1; do
    wait_ok "http://127.0.0.1:${PORTS[$i]}/health" "${GATEWAY_PIDS[$i]}" 180 \
      || { tail -n 30 "/tmp/replica-$i.log"; return 1; }
  done
}

start_router() { # start_router POLICY
  stop_router
  log "vllm-router --policy $1"
  setsid python3 -m vllm_router.launch_router "${ROUTER_FLAGS[@]}" --policy "$1" \
    --worker-urls "http://127.0.0.1:${PORTS[0]}" "http://127.0.0.1:${PORTS[1]}" \
    >>/tmp/router.log 2>&1 </dev/null &
  ROUTER_PID=$!
  wait_ok "http://127.0.0.1:$ROUTER_PORT/health" "$ROUTER_PID" 60 || { tail -n 20 /tmp/router.log; return 1; }
}

stop_pid() { # stop_pid PID: SIGTERM its process group, then SIGKILL after 20 s
  [[ -n $1 ]] || return 0
  kill -TERM -- "-$1" "$1" 2>/dev/null
  for _ in $(seq 40); do kill -0 "$1" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$1" "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

stop_router() { stop_pid "$ROUTER_PID"; ROUTER_PID=""; }

stop_all() {
  stop_router
  local pid
  for pid in "${GATEWAY_PIDS[@]}"; do stop_pid "$pid"; done
  GATEWAY_PIDS=()
}

prefix_counters() { # prefix_counters: "cached prompt" tokens, summed over both gateways
  python3 - "${PORTS[@]}" <<'EOF'
import re, sys, urllib.request
cached = prompt = 0.0
for port in sys.argv[1:]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name, value in re.findall(r"^(gateway_prompt(?:_cached)?_tokens_total)\{[^}]*\} (\S+)$", text, re.M):
        if name == "gateway_prompt_cached_tokens_total":
            cached += float(value)
        else:
            prompt += float(value)
print(f"{cached:.0f} {prompt:.0f}")
EOF
}

bench() { # bench LABEL URL LIMIT ARGS...: one gateway.bench run, with the hit ratio of its tokens
  local label=$1 url=$2 limit=$3 budget before after start=$SECONDS rc
  shift 3
  budget=$(($(left) - RESERVE))
  if ((budget < 20)); then log "SKIP $label (no time left)"; echo "$label" >>"$RESULTS/skipped.txt"; return 0; fi
  ((limit > budget)) && limit=$budget
  before=$(prefix_counters)
  log "start $label (limit ${limit}s)"
  timeout --kill-after=10 "$limit" python3 -m gateway.bench --base-url "$url" --model "$NAME" \
    --label "$label" --out "$RESULTS/$label.json" --no-progress --timeout 300 "$@"
  rc=$?
  after=$(prefix_counters)
  echo "$label $before $after" >>"$RESULTS/prefix-counters.txt"
  log "end   $label: rc=$rc after $((SECONDS - start))s; cached/prompt tokens before: $before, after: $after"
  ((rc == 0)) || echo "$label (rc=$rc)" >>"$RESULTS/skipped.txt"
}

summarize() { # one JSON for BENCHMARKS.md, and a table in the log
  python3 - "$RESULTS" "$OUT/replicas.json" "$((SECONDS - T0))" <<'EOF'
import json, sys
from pathlib import Path
results, out, elapsed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
counters = {}
lines = (results / "prefix-counters.txt").read_text().split("\n") if (results / "prefix-counters.txt").exists() else []
for line in filter(None, lines):
    label, c0, p0, c1, p1 = line.split()
    tokens = float(p1) - float(p0)
    counters[label] = (float(c1) - float(c0)) / tokens if tokens > 0 else None
runs = {}
for path in sorted(results.glob("*.json")):
    report = json.loads(path.read_text())
    s = report["summary"]
    runs[report["label"]] = {
        "output_tok_s": s["output_tok_s"], "requests_s": s["requests_s"], "num_ok": s["num_ok"],
        "num_errors": s["num_errors"], "ttft_ms": s["ttft_ms"], "tpot_ms": s["tpot_ms"],
        "prefix_hit_ratio": counters.get(report["label"]), "config": report["config"],
    }
def speedup(two, one):
    if two in runs and one in runs and runs[one]["output_tok_s"]:
        return runs[two]["output_tok_s"] / runs[one]["output_tok_s"]
    return None
skipped = (results / "skipped.txt").read_text().split("\n") if (results / "skipped.txt").exists() else []
doc = {
    "elapsed_s": elapsed, "runs": runs, "skipped": [s for s in skipped if s],
    "speedup_round_robin": speedup("two-rr-c128", "one-c128"),
    "speedup_power_of_two": speedup("two-p2-c128", "one-c128"),
}
out.write_text(json.dumps(doc, indent=2) + "\n")
print("| run | output tok/s | TTFT p50 ms | TTFT p99 ms | errors | prefix hit ratio |")
print("|---|---|---|---|---|---|")
for label, r in runs.items():
    ratio = r["prefix_hit_ratio"]
    print(f"| {label} | {r['output_tok_s']:.0f} | {r['ttft_ms']['p50'] or 0:.0f} | "
          f"{r['ttft_ms']['p99'] or 0:.0f} | {r['num_errors']} | "
          f"{'-' if ratio is None else f'{ratio:.3f}'} |")
for key in ("speedup_round_robin", "speedup_power_of_two"):
    print(f"{key}: {doc[key] and round(doc[key], 2)}")
EOF
}

main() {
  rm -rf "$RESULTS" && mkdir -p "$RESULTS" "$OUT" && : >/tmp/router.log
  setup_env
  [[ -f $MODEL && -e $BIN/libllama.so ]] || { log "no model or llama.cpp build: run 'gpu.sh build' first"; return 1; }
  install_router || { log "vllm-router does not import"; return 1; }
  nvidia-smi --query-gpu=index,name,memory.used --format=csv,noheader
  trap stop_all EXIT
  trap 'stop_all; exit 143' TERM INT
  start_gateways || return 1
  local a="http://127.0.0.1:${PORTS[0]}" router="http://127.0.0.1:$ROUTER_PORT"
  # a new seed for every run: no run finds its prompts in the slots an earlier run left behind
  bench one-c128 "$a" 100 "${FIXED[@]}" --seed 21
  bench one-shared "$a" 90 "${SHARED[@]}" --seed 31
  if start_router round_robin; then
    bench two-rr-c128 "$router" 70 "${FIXED[@]}" --seed 22
    bench two-rr-shared "$router" 70 "${SHARED[@]}" --seed 32
  fi
  if start_router power_of_two; then
    bench two-p2-c128 "$router" 70 "${FIXED[@]}" --seed 23
  fi
  if start_router cache_aware; then
    bench two-ca-shared "$router" 70 "${SHARED[@]}" --seed 33
  fi
  stop_all
  grep -ciE 'error|panic' /tmp/router.log | sed 's/^/router log lines with error or panic: /'
  summarize
  log "replicas done: $OUT/replicas.json"
}

mkdir -p "$OUT"
main 2>&1 | tee -a "$OUT/replicas.log"
rc=${PIPESTATUS[0]}
echo "[$((SECONDS - T0))s] exit $rc" | tee -a "$OUT/replicas.log"
exit "$rc"
