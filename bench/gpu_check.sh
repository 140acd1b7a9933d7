#!/usr/bin/env bash
# The project's GPU check: one short script (about 7 minutes on one H100/H200) that prints
#   1. the GPU-marked tests (tests/test_gpu.py: CUDA fit, no host sync in a training epoch, compile);
#   2. fractional GPUs: sweeps/gpu_share.yaml with 4 trials per GPU vs 1 (bench/gpu_sharing.py);
#   3. images/s of hier-tl's trainer vs the paper-style reference (8 loader workers), resnet18 at batch 128
#      and 512, same run;
#   4. a 10-epoch resnet18 full fine-tune of nndl64 (`hier-tl train`): training time and start-up apart;
#   5. the same trainer comparison for efficientnet_b0 (bf16, and hier-tl in fp32), resnet18 with torch.compile.
# Each step has its own time limit and the script goes on after a failure; everything is logged to
# $OUT (or ./gpu_check_out). Needs nndl64's train images and CSVs inside the repo:
#   mkdir -p .data/nndl64 && cp -r ../shared/data/nndl64/{train_images,*.csv} .data/nndl64/
# and, where the GPU machine's Python lacks Ray / Optuna, their unpacked site folder as SITE_TAR (a .tar.xz).
set -uo pipefail
DATA=${DATA:-.data/nndl64}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
OUTDIR=${OUT:-gpu_check_out}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 HIER_TL_CACHE=/tmp/hier_tl_cache RAY_USAGE_STATS_ENABLED=0
if [ -n "${SITE_TAR:-}" ]; then  # plus any wheels beside it (pure-Python extras, e.g. pydantic for ray.train)
  mkdir -p /tmp/site && tar -xJf "$SITE_TAR" -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD
  ls "$(dirname "$SITE_TAR")"/*.whl >/dev/null 2>&1 && $PY -m pip install -q --no-index --no-deps --no-compile \
    --target /tmp/site "$(dirname "$SITE_TAR")"/*.whl
else
  export PYTHONPATH=$PWD
fi
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo; echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, torchvision, pandas, pyarrow, ray, optuna; print('torch', torch.__version__, '| torchvision', \
torchvision.__version__, '| pandas', pandas.__version__, '| pyarrow', pyarrow.__version__, '| ray', ray.__version__, \
'| optuna', optuna.__version__, '|', torch.cuda.get_device_name())"
step gpu-tests 120 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
step gpu-sharing 230 $PY bench/gpu_sharing.py --data "$DATA" --storage /tmp/gpu_share --set base.epochs=3
for s in share4 share1; do
  $PY -c "from hier_tl.results import load_results as L; r = L('/tmp/gpu_share/$s'); \
r.trials.to_parquet('$OUTDIR/${s}_trials.parquet'); r.epochs.to_parquet('$OUTDIR/${s}_epochs.parquet')" || true
done
step bench-resnet18 100 $PY bench/trainer.py --data "$DATA" --backbone resnet18 --epochs 10 --workers 8 \
  --device "$DEVICE" --batch-size 128
step bench-resnet18-b512 100 $PY bench/trainer.py --data "$DATA" --backbone resnet18 --epochs 10 --workers 8 \
  --device "$DEVICE" --batch-size 512 --lr 0.002
t0=$(date +%s.%N)
step train-resnet18-10ep 60 $PY -m hier_tl.cli train --data "$DATA" --out /tmp/gpu_r18 --set backbone=resnet18 \
  --set depth=full --set epochs=10 --set batch_size=128 --set device="$DEVICE" --set lr=0.002
t1=$(date +%s.%N)
$PY - "$t0" "$t1" <<'EOF'
import sys, pandas as pd
m = pd.read_parquet("/tmp/gpu_r18/metrics.parquet")
wall = float(sys.argv[2]) - float(sys.argv[1])
print(f"resnet18 10 epochs: training {m.train_time.sum():.2f} s, validation {(m.epoch_time - m.train_time).sum():.2f} s, "
      f"start-up and writing (imports, data, model, checkpoints) {wall - m.epoch_time.sum():.2f} s, wall {wall:.2f} s; "
      f"final seen super {m.seen_super_acc.iloc[-1]:.3f} sub {m.seen_sub_acc.iloc[-1]:.3f}")
EOF
step bench-efficientnet_b0 80 $PY bench/trainer.py --data "$DATA" --backbone efficientnet_b0 --epochs 5 \
  --workers 8 --device "$DEVICE" --batch-size 128
step efficientnet_b0-fp32 60 $PY bench/trainer.py --data "$DATA" --backbone efficientnet_b0 --epochs 5 \
  --device "$DEVICE" --batch-size 128 --skip-reference --precision fp32
step compile-resnet18 120 $PY bench/trainer.py --data "$DATA" --backbone resnet18 --epochs 10 --device "$DEVICE" \
  --batch-size 128 --skip-reference --compile
} 2>&1 | tee "$OUTDIR/gpu_check.log"
