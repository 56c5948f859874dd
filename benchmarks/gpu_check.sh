#!/usr/bin/env bash
# One prepared check of every CUDA path of trainset, under 8 minutes on one GPU:
#   1. benchmarks/gpu_checks.py   device D4, pinned ring (ThreadedLoader to the device), both
#                                 datamodules with device=cuda, a Lightning fit on the GPU,
#                                 layered renderer on CUDA vs CPU, VDA fp16 autocast vs fp32
#                                 on random weights; PASS/FAIL with figures
#   2. benchmarks/patch_loader.py --device cuda (1 GB set, 5 rounds): the loader figures
#   3. benchmarks/render.py --device cuda (256, 512, 1024)
#   4. benchmarks/vda.py --device cuda (vits and vitl, 518, fp32 and fp16)
#
# Usage: bash benchmarks/gpu_check.sh [--dry-run | --cpu-smoke]
#   --dry-run    print the steps and their time limits, run nothing
#   --cpu-smoke  run step 1 on the CPU with tiny sizes and step 2 with a tiny set (checks this
#                script where no GPU is present; the figures then mean nothing)
# Python: $PYTHON, else .venv/bin/python, else python3; run from the repository root.
# Exit: 0 every step passed, 1 a step failed or ran out of time, 2 no CUDA GPU.
set -uo pipefail

cd "$(dirname "$0")/.."
MODE=gpu
case "${1:-}" in
    --dry-run) MODE=dry ;;
    --cpu-smoke) MODE=cpu ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run | --cpu-smoke]" >&2; exit 2 ;;
esac
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
BENCH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/trainset-gpu-check-XXXXXX")
trap 'rm -rf "$BENCH_DIR"' EXIT

# name | time limit (s) | command; the limits add up to 450 s (7.5 minutes)
if [[ $MODE == cpu ]]; then
    STEPS=(
        "checks|300|$PY benchmarks/gpu_checks.py --device cpu --small"
        "patch_loader|300|$PY benchmarks/patch_loader.py --device cpu --size-gb 0.1 --rounds 1 --seconds 0.2 --no-warmup --dir $BENCH_DIR/patches"
    )
else
    STEPS=(
        "checks|120|$PY benchmarks/gpu_checks.py --device cuda"
        "patch_loader|180|$PY benchmarks/patch_loader.py --device cuda --size-gb 1 --rounds 5 --seconds 1 --dir $BENCH_DIR/patches"
        "render|60|$PY benchmarks/render.py --device cuda --sizes 256 512 1024"
        "vda|90|$PY benchmarks/vda.py --device cuda"
    )
fi

if [[ $MODE == dry ]]; then
    for step in "${STEPS[@]}"; do
        IFS='|' read -r name limit cmd <<< "$step"
        printf '%-13s %4s s  %s\n' "$name" "$limit" "$cmd"
    done
    exit 0
fi

if [[ $MODE == gpu ]]; then
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu_check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False);" \
             "this check needs one (bash benchmarks/gpu_check.sh --cpu-smoke checks the script)" >&2
        exit 2
    fi
    "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")'
fi

declare -a RESULTS=()
FAILED=0
START=$SECONDS
for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<< "$step"
    echo "== $name (limit ${limit} s): $cmd"
    t0=$SECONDS
    timeout --signal=TERM --kill-after=10 "$limit" $cmd
    rc=$?
    took=$((SECONDS - t0))
    if [[ $rc -eq 0 ]]; then
        RESULTS+=("PASS $name (${took} s)")
    elif [[ $rc -eq 124 || $rc -eq 137 ]]; then
        RESULTS+=("FAIL $name: ran out of its ${limit} s")
        FAILED=1
    else
        RESULTS+=("FAIL $name: exit $rc (${took} s)")
        FAILED=1
    fi
done
echo "== summary ($((SECONDS - START)) s)"
printf '%s\n' "${RESULTS[@]}"
exit $FAILED
