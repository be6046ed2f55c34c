#!/usr/bin/env bash
# One prepared check of galmerge's GPU path, for a machine with an NVIDIA GPU.
#
#   timeout 600 bash benchmarks/gpu_check.sh [options]
#
#   (a) which ONNX Runtime providers really work (galmerge doctor: the CUDA
#       provider must initialise and run a convolution, not just be listed).
#       If it is missing and PyPI is reachable, onnxruntime-gpu (CUDA 12 line,
#       ~255 MB wheel, plus the nvidia-* CUDA/cuDNN wheels) goes into a temporary
#       venv layered over the given Python; otherwise the script says so.
#   (b) classify the bundled example catalogue with --device cuda and compare
#       with --device cpu (|dp| <= 1e-4, same rows and statuses); plus a
#       model-only CPU-vs-CUDA comparison on random images
#   (c) model-only throughput on CUDA (fixed batch; plain run, IO binding, CUDA
#       graph) against the CPU in the same run, and end-to-end classify rows/s
#   (d) one training epoch on CUDA with torch (`galmerge train --device cuda` on
#       a small simulated set once train exists; else a DeepMerge epoch on
#       random images)
#
# Prints a compact report (also written to OUT/report.txt line by line, so a
# run cut short by `timeout` keeps what it measured). Each step has its own
# time limit; the whole script needs about 3-5 minutes (plus the wheel download).
#
# Options:
#   --python PY     interpreter with galmerge's dependencies (default: .venv/bin/python, python3)
#   --model M.onnx  model to measure (default: the installed default model;
#                   without one, a random-weight DeepMerge is exported with torch)
#   --batch N       fixed batch for (c) (default 256)
#   --rows N        catalogue rows for the end-to-end timing (default 20000)
#   --train-n N     images per domain for the `galmerge train` epoch (default 2048)
#   --no-install    never pip-install onnxruntime-gpu
#   --out DIR       work/report directory (default: a new temp dir)
#   --cpu-only      skip everything CUDA (exercises the script on a machine without a GPU)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
PY=""; MODEL=""; BATCH=256; ROWS=20000; INSTALL=1; OUT=""; CPU_ONLY=0; TRAIN_N=2048
while [[ $# -gt 0 ]]; do
    case $1 in
        --python) PY=$2; shift 2 ;;
        --model) MODEL=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --rows) ROWS=$2; shift 2 ;;
        --train-n) TRAIN_N=$2; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        --cpu-only) CPU_ONLY=1; INSTALL=0; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for v in "$BATCH" "$ROWS" "$TRAIN_N"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check: --batch/--rows/--train-n must be positive integers" >&2; exit 2; }
done
if [[ -z $PY ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/galmerge-gpu-check.XXXXXX")}
mkdir -p "$OUT"
REPORT=$OUT/report.txt
: > "$REPORT"
T0=$(date +%s)

say() { echo "$*" | tee -a "$REPORT"; }
# run LIMIT_S CMD...: run with a time limit; its `key: value` lines go to the report.
run() {
    local limit=$1; shift
    local log
    log=$OUT/step-$(date +%s%N).log
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    local rc=$?
    grep -E '^[a-z_]+(\[[^]]*\])?: ' "$log" | tee -a "$REPORT"
    if [[ $rc == 124 || $rc == 137 ]]; then say "  (step timed out after ${limit}s: $*)"; fi
    if [[ $rc != 0 ]]; then tail -n 3 "$log" | sed 's/^/  | /'; fi
    return $rc
}
gm() { "$PY" -m galmerge "$@"; }   # run from the checkout root: this checkout's galmerge
# timed LIMIT LOG CMD...: run with a time limit, output to LOG; sets ELAPSED (seconds).
ELAPSED=0
timed() {
    local limit=$1 log=$2 t1 t2 rc
    shift 2
    t1=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    t2=$(date +%s.%N)
    ELAPSED=$("$PY" -c "print($t2 - $t1)")
    if [[ $rc != 0 ]]; then tail -n 2 "$log" | sed 's/^/  | /'; fi
    return $rc
}

say "galmerge GPU check — $(date -u +%Y-%m-%dT%H:%MZ) — $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
if command -v nvidia-smi >/dev/null; then
    say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 4 | paste -sd ';')"
else
    say "gpu: nvidia-smi not found"
fi
say "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores"
say "python: $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)' 2>&1)"

# ------------------------------------------------------------------ (a) providers
say "== (a) ONNX Runtime providers"
doctor_summary() {  # prints CUDA_OK=0/1 and report lines from doctor --json
    "$PY" - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["cuda"]
print(f"onnxruntime: {d['ort_version']} ({', '.join(f'{k} {v}' for k, v in d['ort_distributions'].items()) or 'none'})")
print(f"providers_listed: {', '.join(d['available_providers'])}")
print(f"cuda_provider: {'works (ran a probe convolution)' if c['initialised'] else 'NOT usable - ' + (c['detail'] or 'not checked')}")
for w in d["warnings"]:
    print(f"doctor_warning: {w}")
print(f"CUDA_OK={int(bool(c['initialised']))}")
EOF
}
CUDA_OK=0
if [[ $CPU_ONLY == 1 ]]; then
    gm doctor --device cpu --json > "$OUT/doctor.json" 2>/dev/null
    doctor_summary "$OUT/doctor.json" | grep -v '^CUDA_OK=' | tee -a "$REPORT"
    say "cuda: skipped (--cpu-only)"
else
    gm doctor --json > "$OUT/doctor.json" 2>/dev/null
    summary=$(doctor_summary "$OUT/doctor.json")
    echo "$summary" | grep -v '^CUDA_OK=' | tee -a "$REPORT"
    CUDA_OK=$(echo "$summary" | sed -n 's/^CUDA_OK=//p')
    if [[ $CUDA_OK != 1 ]]; then
        if [[ $INSTALL == 1 ]] && timeout 20 "$PY" -m pip index versions onnxruntime-gpu >/dev/null 2>&1; then
            # The plain wheel first (~255 MB): it uses CUDA 12 / cuDNN 9 libraries already on the
            # machine (system, or nvidia-* wheels beside torch). Only if those are missing, the
            # [cuda,cudnn] extras (nvidia-* wheels, over 1 GB).
            "$PY" -m venv --system-site-packages "$OUT/venv"
            for spec in 'onnxruntime-gpu>=1.20,<1.27' 'onnxruntime-gpu[cuda,cudnn]>=1.20,<1.27'; do
                say "installing $spec into $OUT/venv (layered over $PY's packages) ..."
                if ! timeout 900 "$OUT/venv/bin/python" -m pip install -q "$spec" > "$OUT/pip.log" 2>&1; then
                    say "pip install failed: $(tail -n 1 "$OUT/pip.log")"
                    break
                fi
                PY=$OUT/venv/bin/python
                # CUDA/cuDNN libraries of nvidia-* wheels (venv or base), for the provider's dlopen.
                libs=$("$PY" -c 'import site; print("\n".join(site.getsitepackages()))' \
                       | while read -r d; do find "$d/nvidia" -maxdepth 2 -name lib -type d 2>/dev/null; done \
                       | paste -sd ':')
                export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
                gm doctor --json > "$OUT/doctor.json" 2>/dev/null
                summary=$(doctor_summary "$OUT/doctor.json")
                echo "$summary" | grep -v '^CUDA_OK=' | sed 's/^/after install: /' | tee -a "$REPORT"
                CUDA_OK=$(echo "$summary" | sed -n 's/^CUDA_OK=//p')
                [[ $CUDA_OK == 1 ]] && break
                echo "$summary" | grep -q 'cannot open shared object' || break
            done
        elif [[ $INSTALL == 1 ]]; then
            say "cuda: PyPI not reachable from here; cannot install onnxruntime-gpu (~255 MB)."
            say "      Use an image built with GALMERGE_EXTRA=gpu, or pip install 'galmerge[gpu]'."
        else
            say "cuda: not usable and --no-install given"
        fi
    fi
fi

# ------------------------------------------------------------------ model
MODEL_LINES=$(timeout 300 "$PY" benchmarks/gpu_check.py model ${MODEL:+--model "$MODEL"} --out "$OUT" 2>"$OUT/model.log" \
              | grep -E '^model(_note)?: ')
echo "$MODEL_LINES" | tee -a "$REPORT"
MODEL=$(echo "$MODEL_LINES" | sed -n 's/^model: //p')
[[ -n $MODEL && -f $MODEL ]] || { say "no model to measure (see $OUT/model.log)"; MODEL=""; }

HAVE_CLASSIFY=0
gm classify --help 2>/dev/null | grep -q -- '--catalog' && HAVE_CLASSIFY=1

# ------------------------------------------------------------------ (b) parity
say "== (b) CUDA vs CPU results"
if [[ $CUDA_OK == 1 && -n $MODEL ]]; then
    run 120 "$PY" benchmarks/gpu_check.py parity --model "$MODEL" --tol 1e-4
    if [[ $HAVE_CLASSIFY == 1 ]]; then
        ex=catalogs/sdss_example/sdss_example.csv
        if run 180 gm classify --catalog "$ex" --model "$MODEL" --device cpu --output "$OUT/ex-cpu.csv" \
           && run 180 gm classify --catalog "$ex" --model "$MODEL" --device cuda --output "$OUT/ex-cuda.csv"; then
            echo "classify_parity: $("$PY" docker/compare_classify.py "$OUT/ex-cpu.csv" "$OUT/ex-cuda.csv" --tol 1e-4)" | tee -a "$REPORT"
        fi
    else
        say "classify_parity: skipped (this checkout has no galmerge classify yet)"
    fi
else
    say "parity: skipped ($([[ $CUDA_OK == 1 ]] && echo 'no model' || echo 'CUDA provider not usable'))"
fi

# ------------------------------------------------------------------ (c) throughput
say "== (c) throughput (batch $BATCH)"
if [[ -n $MODEL ]]; then
    run 60 "$PY" benchmarks/gpu_check.py speed --model "$MODEL" --provider cpu --batch "$BATCH" --seconds 3
    [[ $CUDA_OK == 1 ]] && run 120 "$PY" benchmarks/gpu_check.py speed --model "$MODEL" --provider cuda --batch "$BATCH" --seconds 3
fi
if [[ $HAVE_CLASSIFY == 1 && -n $MODEL ]]; then
    run 60 "$PY" benchmarks/gpu_check.py catalogue --rows "$ROWS" --out "$OUT/cat.csv" >/dev/null
    for dev in cpu cuda; do
        [[ $dev == cuda && $CUDA_OK != 1 ]] && continue
        if timed 300 "$OUT/e2e-$dev.log" "$PY" -m galmerge classify --catalog "$OUT/cat.csv" \
               --model "$MODEL" --device "$dev" --batch-size "$BATCH" --output "$OUT/cat-$dev.parquet"; then
            say "speed_end_to_end[$dev, batch $BATCH]: $("$PY" -c "print(f'{$ROWS / $ELAPSED:,.0f}')") rows/s ($ROWS rows from JPEG files, process start included)"
        else
            say "speed_end_to_end[$dev]: failed (see $OUT/e2e-$dev.log)"
        fi
    done
else
    say "speed_end_to_end: skipped ($([[ -n $MODEL ]] && echo 'no classify in this checkout' || echo 'no model'))"
fi

# ------------------------------------------------------------------ (d) training
say "== (d) one training epoch"
TORCH=$("$PY" -c 'import torch; print(torch.__version__, int(torch.cuda.is_available()))' 2>/dev/null)
if [[ -z $TORCH ]]; then
    say "train_epoch: skipped (torch not importable from $PY)"
else
    say "torch: ${TORCH% *} (cuda available: ${TORCH#* })"
    # The training hot loop alone: DeepMerge, random images, cross-entropy, Adam.
    run 120 "$PY" benchmarks/gpu_check.py train --device cpu --n 256 --batch 64
    devices=(cpu)
    if [[ $CPU_ONLY != 1 && ${TORCH#* } == 1 ]]; then
        run 180 "$PY" benchmarks/gpu_check.py train --device cuda --n 4096 --batch 64
        devices+=(cuda)
    elif [[ $CPU_ONLY != 1 ]]; then
        say "train_epoch[cuda]: skipped (torch has no CUDA here)"
    fi
    # One epoch of the real `galmerge train` (MMD, DeepMerge) on a small set.
    if gm train --help 2>/dev/null | grep -q -- '--device'; then
        n=$TRAIN_N
        if ! timeout 300 "$PY" -m galmerge simulate --n "$n" --out "$OUT/sim" > "$OUT/sim.log" 2>&1; then
            run 300 "$PY" benchmarks/gpu_check.py dataset --n "$n" --out "$OUT/sim"
        else
            say "dataset: galmerge simulate --n $n"
        fi
        for dev in "${devices[@]}"; do
            if timed 600 "$OUT/train-$dev.log" "$PY" -m galmerge train --source "$OUT/sim/source.h5" \
                   --target "$OUT/sim/target.h5" --method mmd --arch deepmerge --epochs 1 \
                   --device "$dev" --quiet --overwrite --out "$OUT/train-$dev"; then
                say "galmerge_train_1_epoch[$dev, mmd, $n+$n images]: $("$PY" -c "print(f'{$ELAPSED:.1f}')") s wall (process start, data, validation included)"
            else
                say "galmerge_train_1_epoch[$dev]: failed (see $OUT/train-$dev.log)"
            fi
        done
    else
        say "galmerge_train: skipped (no galmerge train --device in this checkout)"
    fi
fi

say "== done in $(( $(date +%s) - T0 )) s; report: $REPORT"
