#!/usr/bin/env bash
# Retrain the bundled checkpoints from scratch with `dcnbio train` (Fashion-MNIST, CPU scale), then rewrite the
# sha256 manifest.  Run from the repository root:  bash data/checkpoints/retrain.sh
# Each run is single-threaded so that two can share a 2-core machine; see data/checkpoints/README.md for the
# measured wall times.  The runs replace the bundled ones (--overwrite).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
train() { .venv/bin/python -m dcnbio.train --dataset fashion-mnist --width 0.25 --val-size 1000 --no-adjoint \
            --seeds 1 --overwrite "$@"; }

# the main job's model: sigma_ji DCN, 500 images per class, 12 epochs (468 steps of 128 images)
train --model dcn-sigma-ji --subset 500 --epochs 12 --save-every 10 --out data/checkpoints/dcn-sigma-ji &
# smoke-scale baselines for the trajectory analyses: 100 images per class, 15 epochs (105 steps)
( for m in dcn-ode odenet resnet-blocks; do
    train --model "$m" --subset 100 --epochs 15 --out "data/checkpoints/$m"
  done ) &
wait
(cd data/checkpoints && find . -name '*.pt' -o -name '*.json' -o -name '*.csv' | sort | xargs sha256sum > MANIFEST.sha256)
