#!/usr/bin/env bash
# The accelerator check of issue 6 (fast path), as one prepared script: under 8 minutes in all
# (tests <= 150 s, benchmark <= 270 s, both hard time limits; a few minutes on one H100 by
# estimate: never run on one yet).
#
#   bash bench/gpu_check.sh
#
# Run from anywhere; it works in the repository root. Nothing is downloaded: the package runs
# from the tree (PYTHONPATH), with the python3 that holds torch (PYTHON=... to choose another).
# Device-agnostic: DEVICE=cuda when torch sees a GPU (any CUDA/ROCm build), else cpu (a dry run
# of the same steps). Results: $OUT if set (the device tool's folder), else results/gpu_check/
# (git-ignored): gpu_check.log and gpu_speed.json.
#
# Sizes: CELLS (accuracy, 30), PAIRS (official vs ours, 100), SPACE_CELLS (1,000); BENCH_ARGS is
# appended (a dry run here: DEVICE=cpu CELLS=2 PAIRS=2 SPACE_CELLS=4 BENCH_ARGS="--C 4 --N 1").
#
# Data: $EPE_DATA, else ../shared/data/cifar10/cifar10_sample.npz, else
# .gpu_data/cifar10_sample.npz in the tree, else a standard-normal batch (said in the output).
# ../shared does not travel to a device machine: copy the 2.9 MB sample into an ignored folder of
# the tree and carry it (see bench/README.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-results/gpu_check}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-$($PY -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
DATA=${EPE_DATA:-}
for candidate in ../shared/data/cifar10/cifar10_sample.npz .gpu_data/cifar10_sample.npz; do
  if [ -z "$DATA" ] && [ -f "$candidate" ]; then DATA=$candidate; fi
done
DATA=${DATA:-none}

{
  echo "== machine ($(date -u +%FT%TZ))"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  nproc
  $PY - <<'EOF'
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| cudnn", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
      "| gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
EOF
  echo "== install check (device $DEVICE, data $DATA)"
  $PY -c 'import lightning_epe.scores, lightning_epe.spaces; print("lightning_epe imports from", lightning_epe.__file__)' || exit 1

  echo "== tests: fast path (CUDA tests run when a GPU is present) and the EPE score"
  timeout 150 $PY -m pytest -q -p no:cacheprovider -m "not slow" -rs tests/scores/test_fast_path.py tests/scores/test_epe.py tests/scores/test_fused.py
  echo "tests exit status: $?"

  echo "== benchmark: accuracy on the device, official vs ours, 1,000 cells built and scored"
  timeout 270 $PY bench/speed.py --accelerator-run --device "$DEVICE" --data "$DATA" --cells "${CELLS:-30}" \
      --device-pairs "${PAIRS:-100}" --space-cells "${SPACE_CELLS:-1000}" ${BENCH_ARGS:-} \
      --json "$OUT_DIR/gpu_speed.json"
  echo "benchmark exit status: $?"
} 2>&1 | tee "$OUT_DIR/gpu_check.log"
