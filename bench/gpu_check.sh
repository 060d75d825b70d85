#!/usr/bin/env bash
# The accelerator checks, as one prepared script: under 10 minutes in all (every step has a hard
# time limit; never run on a GPU yet). Issue 16 first: the search's CPU side around a free score
# (bench/pipeline.py, no-op score, 2,000 cells) and, with the real EPE score, the whole NB201 space
# extrapolated from 2,000 cells (goal <= 120 s); then issue 6's fast-path tests and accuracy run.
#
#   bash bench/gpu_check.sh
#
# Run from anywhere; it works in the repository root. Nothing is downloaded: the package runs
# from the tree (PYTHONPATH), with the python3 that holds torch (PYTHON=... to choose another).
# Device-agnostic: DEVICE=cuda when torch sees a GPU (any CUDA/ROCm build), else cpu (a dry run
# of the same steps). Results: $OUT if set (the device tool's folder), else results/gpu_check/
# (git-ignored): gpu_check.log, pipeline_noop.json, pipeline_epe.json and gpu_speed.json.
#
# Sizes: PIPELINE_CELLS (2,000), CELLS (accuracy, 30), PAIRS (official vs ours, 100), SPACE_CELLS
# (1,000); BENCH_ARGS is appended to speed.py (a dry run here: DEVICE=cpu PIPELINE_CELLS=20 CELLS=2
# PAIRS=2 SPACE_CELLS=4 BENCH_ARGS="--C 4 --N 1").
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

  echo "== tests: the NB201 builder, fast path (CUDA tests run when a GPU is present), the EPE score"
  timeout 150 $PY -m pytest -q -p no:cacheprovider -m "not slow" -rs tests/spaces/test_nb201_builder.py \
      tests/scores/test_fast_path.py tests/scores/test_epe.py tests/scores/test_fused.py
  echo "tests exit status: $?"

  echo "== pipeline: the search's CPU side per candidate, no-op score (issue 16)"
  timeout 150 $PY bench/pipeline.py --device "$DEVICE" --data "$DATA" --cells "${PIPELINE_CELLS:-2000}" \
      --repeats 1 --json "$OUT_DIR/pipeline_noop.json"
  echo "pipeline exit status: $?"

  echo "== pipeline: the EPE score, the whole space extrapolated (goal <= 120 s)"
  timeout 120 $PY bench/pipeline.py --device "$DEVICE" --data "$DATA" --cells "${PIPELINE_CELLS:-2000}" \
      --repeats 1 --score epe --rows search --extrapolate --json "$OUT_DIR/pipeline_epe.json"
  echo "pipeline (epe) exit status: $?"

  echo "== benchmark: accuracy on the device, official vs ours, 1,000 cells built and scored"
  timeout 150 $PY bench/speed.py --accelerator-run --device "$DEVICE" --data "$DATA" --cells "${CELLS:-30}" \
      --device-pairs "${PAIRS:-100}" --space-cells "${SPACE_CELLS:-1000}" ${BENCH_ARGS:-} \
      --json "$OUT_DIR/gpu_speed.json"
  echo "benchmark exit status: $?"
} 2>&1 | tee "$OUT_DIR/gpu_check.log"
