#!/usr/bin/env bash
# The GPU check: training throughput of the default (cpu) and paper presets on the GPU, and
# the demo (train, audit, export) end to end with device=auto, timed.
#     bash benchmarks/gpu_check.sh OUTDIR [PYTHON]
# Run from the repository root on a machine with a CUDA GPU; prints measured numbers and
# writes the demo's log and report to OUTDIR.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR [PYTHON]}
py=${2:-python3}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
$py benchmarks/train_throughput.py --device cuda --batches 50 2>&1 | tee "$out/throughput.txt"
$py benchmarks/train_throughput.py --device cuda --preset paper --batches 10 2>&1 \
    | tee -a "$out/throughput.txt"
demo=$(mktemp -d)
start=$(date +%s)
$py -m deepobfuscator demo --quiet --out "$demo/demo" 2>&1 | tee "$out/demo.log" | tail -40
echo "demo wall time on the GPU: $(( $(date +%s) - start )) s"
cp "$demo/demo/audit/report.md" "$out/demo-report.md" 2>/dev/null || true
