#!/usr/bin/env bash
# The four benchmarks at the paper's sizes (issue 18) and the per-op profile, one command: 20-cell C=64 ARNAS, 8-cell C=24
# supernet, PGD-7 training/search, PGD-20 attack, ONNX at batch 1 and 32. Each writes its JSON to
# benchmarks/results/*_paper.json (machine, torch, threads and load average inside). Run it on a quiet
# machine: the ratios are same-run, the absolute times are context only.
#
#   bash benchmarks/paper_size.sh                 # all four (about 45 min on 2 EPYC cores)
#   STAGES="onnx attack" bash benchmarks/paper_size.sh
#   BATCHES_TRAIN=32 BATCHES_SEARCH=32 bash benchmarks/paper_size.sh   # the batch-32 rows only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results}
THREADS=${THREADS:-$(nproc)}
STAGES=${STAGES:-onnx attack training profile search}
BATCHES_TRAIN=${BATCHES_TRAIN:-32,128}
BATCHES_SEARCH=${BATCHES_SEARCH:-32,64}
ATTACK_BATCHES=${ATTACK_BATCHES:-32 128}
PROFILE_BATCH=${PROFILE_BATCH:-8}  # torch.profiler with shapes at batch 32 took over 20 GB here
export OMP_NUM_THREADS=$THREADS
mkdir -p "$OUT"
for stage in $STAGES; do
  echo "== $stage ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)) =="
  case $stage in
    onnx)
      $PY benchmarks/bench_onnx.py --archs arnas --batches 1 32 --reps 5 --threads "$THREADS" \
        --out "$OUT/onnx_cpu_paper.json" ;;
    attack)
      for b in $ATTACK_BATCHES; do
        $PY benchmarks/bench_attacks.py --init-channels 64 --layers 20 --n "$b" --batch-size "$b" --repeats 1 \
          --out "$OUT/attacks_cpu_paper_b$b.json"
      done ;;
    training)
      $PY benchmarks/bench_training.py --init-channels 64 --layers 20 --batches "$BATCHES_TRAIN" --steps 1 \
        --warmup 1 --threads "$THREADS" --impls authors,reference,ours,ours-s2b,ours-auto --out "$OUT/training_cpu_paper.json" ;;
    profile)
      $PY benchmarks/profile_step.py --init-channels 64 --layers 20 --batch "$PROFILE_BATCH" --impls authors,ours,ours-auto \
        --threads "$THREADS" --out "$OUT/profile_cpu_paper.json" ;;
    search)
      $PY benchmarks/bench_search.py --init-channels 24 --layers 8 --pgd-steps 7 --batch-sizes "$BATCHES_SEARCH" \
        --orders first,second --impls ours,ours-auto,authors --steps 1 --warmup 1 --device cpu \
        --out "$OUT/search_cpu_paper_pgd7.json"
      $PY benchmarks/bench_search.py --init-channels 24 --layers 8 --pgd-steps 7 --batch-sizes "$BATCHES_SEARCH" \
        --orders second --recompute --steps 1 --warmup 1 --device cpu --out "$OUT/search_cpu_paper_pgd7_recompute.json" ;;
    *) echo "unknown stage $stage (onnx, attack, training, profile, search)" >&2; exit 2 ;;
  esac
done
