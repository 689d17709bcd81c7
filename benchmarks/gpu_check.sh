#!/usr/bin/env bash
# GPU check of kdlab (run it on a machine with at least one CUDA GPU; the kit itself needs none):
#   1. the tiny study on cuda in bf16 (one worker per GPU: worker i on cuda:(i mod GPUs));
#   2. a 2-process data-parallel fine-tune through torchrun (NCCL with one GPU per process, gloo when
#      the two share the only GPU), in bf16.
# Everything it trains goes to a temporary KDLAB_HOME; its log goes to benchmarks/results/gpu_check.txt.
#   bash benchmarks/gpu_check.sh            (PY=path/to/python to use another interpreter than .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RESULT=benchmarks/results/gpu_check.txt
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export KDLAB_HOME="$WORK/home" OMP_NUM_THREADS=1

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$GPUS" = "0" ]; then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False); nothing checked" >&2
  exit 1
fi

check() {  # check TITLE COMMAND...: run it, print its wall time and the end of its output
  echo "## $1"
  shift
  echo "\$ $*"
  local start=$SECONDS
  "$@" 2>&1 | tail -n 15
  echo "-> ok in $((SECONDS - start)) s"
  echo
}

{
  echo "# kdlab GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi -L 2>/dev/null || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '|', torch.cuda.get_device_name(0), '| bf16:', torch.cuda.is_bf16_supported())"
  echo
  check "tiny corpus" "$PY" -m kdlab data --profile tiny
  check "tiny study on cuda, bf16, $GPUS worker(s)" \
    "$PY" -m kdlab study --profile tiny --device cuda --precision bf16 --workers "$GPUS" --out "$WORK/study"
  check "2-process DDP fine-tune (torchrun) on $GPUS GPU(s), bf16" \
    "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m kdlab finetune --profile tiny --init random \
      --device cuda --precision bf16 --run-dir "$WORK/ddp" --no-progress
  echo "all checks passed"
} | tee "$RESULT.partial"
mv "$RESULT.partial" "$RESULT"
echo "recorded in $RESULT"
