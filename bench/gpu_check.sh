#!/usr/bin/env bash
# The project's GPU check: one short script (a few minutes on one GPU) that prints
#   - images/s of hier-tl's trainer vs the paper-style reference (8 loader workers) for resnet18 and
#     efficientnet_b0, with the ratio (target: >= 5x for resnet18);
#   - the wall time of a 10-epoch resnet18 full fine-tune of nndl64, start-up included (target: < 10 s on an H100);
#   - the GPU-marked tests.
# Needs the dataset inside the repo on the GPU machine (the device tool carries only the repo):
#   mkdir -p .data && cp -r ../shared/data/nndl64 .data/ && echo /.data/ >> .git/info/exclude
# then run with carry [".data"]:  DATA=.data/nndl64 bash bench/gpu_check.sh
set -euo pipefail
DATA=${DATA:-.data/nndl64}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
$PY -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
$PY -m pip install -q --no-deps -e . >/dev/null 2>&1 || true
for bb in resnet18 efficientnet_b0; do
  echo "== $bb: 3 epochs, hier-tl vs reference (8 workers)"
  $PY bench/trainer.py --data "$DATA" --backbone "$bb" --epochs 3 --workers 8 --device cuda --batch-size 128
done
echo "== 10-epoch resnet18 full fine-tune, start-up (imports, data load, model build) included"
start=$(date +%s.%N)
$PY -m hier_tl.cli train --data "$DATA" --out /tmp/gpu_check_r18 --set backbone=resnet18 --set depth=full \
  --set epochs=10 --set batch_size=256 --set device=cuda --set lr=0.002
end=$(date +%s.%N)
echo "resnet18 10 epochs wall time: $(echo "$end - $start" | bc) s"
echo "== GPU tests"
$PY -m pytest -m gpu -q tests/test_gpu.py
