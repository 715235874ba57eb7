#!/usr/bin/env bash
# Produce the bundled default model and its label-free head (cdiqa/assets/default/).
#
#   scripts/make_default_model.sh            # RUN=runs/default, SEED=0
#
# 1. label-free training with the default TrainConfig on the built-in training images
#    (no opinion score is read; the evaluation images are held out);
# 2. the checkpoint's config + float32 weights -> cdiqa/assets/default/model.pt;
# 3. the heads split's references (scikit-image photographs disjoint from the evaluation
#    ones) distorted with the 13 KADID development types at 5 levels, unlabelled;
# 4. the label-free head fitted on those pairs -> cdiqa/assets/default/head.json;
# 5. the bundle the runtime scores with by default -> cdiqa/assets/default/bundle.
# Then `python benchmarks/quality.py --write-docs` measures the result (after
# `iqa-export fetch-devset`). The whole script takes about 2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RUN=${RUN:-runs/default}
SEED=${SEED:-0}
ASSETS=cdiqa/assets/default
mkdir -p "$RUN" "$ASSETS"

time "$PY" -m cdiqa.cli train --out "$RUN/train.pt" --seed "$SEED"
"$PY" -c "import sys; from cdiqa.model.train import save_weights; save_weights(*sys.argv[1:])" \
    "$RUN/train.pt" "$ASSETS/model.pt"
"$PY" -m cdiqa.cli distort --builtin heads --out "$RUN/heads" --seed "$SEED"
"$PY" -m cdiqa.cli fit-head --kind label-free --pairs "$RUN/heads/pairs.csv" \
    --checkpoint "$ASSETS/model.pt" --out "$ASSETS/head.json"
"$PY" -m cdiqa.cli export --out "$ASSETS/bundle"
ls -l "$ASSETS" "$ASSETS/bundle"
