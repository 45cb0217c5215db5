#!/usr/bin/env bash
# The GPU path in one run, under 8 minutes on one H100/H200:
#   1. the GPU-marked tests (pytest -m gpu);
#   2. training throughput and MFU of paper-4m, paper-20m and paper-275m in bf16, with and
#      without torch.compile (bench/gpu_throughput.py -> bench/results/gpu_throughput.json);
#   3. a two-grammar, three-shape nested-data mini sweep on the GPU, and its fit.
# Each part has its own time limit and the script goes on when one fails; the summary at
# the end says which passed, and bench/results/gpu_check.json records it.
#
#   bash bench/gpu_check.sh               # on a machine with a CUDA GPU
#   bash bench/gpu_check.sh --cpu-dry-run # here: checks that every part runs, tiny sizes
set -uo pipefail
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED=0
DRY=0
[[ "${1:-}" == "--cpu-dry-run" ]] && DRY=1
WORK=$(mktemp -d -t gpu-check-XXXXXX)
declare -A STATUS SECONDS_TAKEN

part() {  # part NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    STATUS[$name]=$rc
    SECONDS_TAKEN[$name]=$((SECONDS - start))
    echo "== $name: exit $rc after ${SECONDS_TAKEN[$name]}s"
}

if [[ $DRY == 1 ]]; then
    part tests 120 python -m pytest -q -m gpu tests/test_train.py
    part throughput 120 python -m bench.gpu_throughput --cpu-dry-run
    SHAPES='["tiny-1", "tiny-2", "tiny-3"]'; SIZES='[16384, 32768, 65536]'; EXTRA='compile = "off"'
    GPU='"no"'; FIT_LIMIT=240
else
    part tests 120 python -m pytest -q -m gpu
    part throughput 150 python -m bench.gpu_throughput --shapes paper-4m,paper-20m,paper-275m
    SHAPES='["paper-4m", "paper-9m", "paper-20m"]'; SIZES='["1M", "2M", "4M", "8M"]'; EXTRA=''
    GPU='"yes"'; FIT_LIMIT=200
fi

cat > "$WORK/mini.toml" <<TOML
name = "gpu-mini"
shapes = $SHAPES
data_sizes = $SIZES
eval_tokens = 65536
nested = true

[[grammars]]
grammar = "20,300,5,10"
[[grammars]]
grammar = "50,300,10,20"

[train]
preset = "cpu"
schedule = "wsd"
vocab_size = 301
$EXTRA

[resources]
gpu = $GPU
TOML
part mini_sweep "$FIT_LIMIT" gzipscale sweep --spec "$WORK/mini.toml" --storage "$WORK"
part mini_fit 60 gzipscale fit "$WORK/gpu-mini" --bootstrap 50

echo "== summary"
python - "$DRY" "$WORK" <<PY
import json, sys, time
dry, work = sys.argv[1] == "1", sys.argv[2]
status = {$(for k in "${!STATUS[@]}"; do printf '"%s": [%s, %s], ' "$k" "${STATUS[$k]}" "${SECONDS_TAKEN[$k]}"; done)}
for name, (rc, s) in status.items():
    print(f"  {name:<11} {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {s} s")
if not dry:
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "parts": {k: {"exit": v[0], "seconds": v[1]} for k, v in status.items()}}
    with open("bench/results/gpu_check.json", "w") as f:
        json.dump(out, f, indent=2)
    print("wrote bench/results/gpu_check.json (the sweep and fit stay in", work + ")")
PY
for k in "${!STATUS[@]}"; do [[ ${STATUS[$k]} == 0 ]] || exit 1; done
