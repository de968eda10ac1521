#!/usr/bin/env bash
# DSRNA's claim in direction, at reduced scale (paper Tables 5-6): an architecture searched with the
# certified objective has a larger mean certified radius than DARTS_V2 trained the same way.
#   bash scripts/dsrna_direction.sh [OUT]        (about 30 min on 2 busy CPU cores; each step is skipped when done)
# 1. search: dsrna-cb-tiny (MNIST 14x14, 4 cells, C=4), 8 epochs x 8 steps of 16 on 1024 images
# 2. train the searched genotype and DARTS_V2 with the same recipe (the quick start's PGD recipe on digits,
#    C=4, 5 cells, seed 0), 3. certify both (CROWN and IBP) on the same 297 digits test points.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/dsrna_direction}
PY=${PYTHON:-.venv/bin/python}
ZOO=("$PY" -m arnas_zoo.cli)
DATA=${ARNAS_ZOO_SHARED_DATA:-../shared/data}
mkdir -p "$OUT"
[ -f "$OUT/search/summary.json" ] || "$PY" -m search run dsrna-cb-tiny -o "$OUT/search" --set data_dir="$DATA" \
    --set epochs=8 --set steps_per_epoch=8 --set n_images=1024 --quiet $( [ -d "$OUT/search" ] && echo --resume )
TRAIN=(--recipe cpu_digits --dataset digits --model-set init_channels=4 --model-set layers=5
       --eval-attacks fgsm,pgd20 --eval-n 297 --quiet)
for arch in dsrna darts_v2; do
    target=$([ "$arch" = dsrna ] && echo "$OUT/search/genotype.json" || echo darts_v2)
    [ -f "$OUT/train_$arch/best/metrics.json" ] && grep -q results "$OUT/train_$arch/best/metrics.json" || \
        "${ZOO[@]}" train "$target" "${TRAIN[@]}" --name "$arch-digits-c4l5" --out "$OUT/train_$arch" \
            $( [ -d "$OUT/train_$arch" ] && echo --resume )
    for method in crown ibp; do
        [ -f "$OUT/certify_${arch}_$method.json" ] || "${ZOO[@]}" certify "$OUT/train_$arch/best" --dataset digits \
            --n 297 --eps 0.01 --radius-max 0.2 --method "$method" --json "$OUT/certify_${arch}_$method.json" -q
    done
done
"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for arch in ("dsrna", "darts_v2"):
    m = json.loads((out / f"train_{arch}" / "best" / "metrics.json").read_text())
    row = {"clean": m.get("clean_accuracy"), **{r["attack"]: r["robust_accuracy"] for r in m.get("results", [])}}
    for method in ("crown", "ibp"):
        c = json.loads((out / f"certify_{arch}_{method}.json").read_text())
        row[f"{method}_certified_at_0.01"] = c["certified_accuracy"]
        row[f"{method}_mean_radius"] = c["mean_certified_radius"]
        row[f"{method}_median_radius"] = c["median_certified_radius"]
    rows[arch] = row
(out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
print(json.dumps(rows, indent=1))
PY
