#!/usr/bin/env bash
# Retrain the subset-trained bundle (data/checkpoints/<model>/; full/ is retrain.sh's) from scratch with
# `dcnbio train` (Fashion-MNIST, CPU scale), then rewrite the sha256 manifest.  Run from anywhere:
#   bash data/checkpoints/retrain-subset.sh
# Every run is single-threaded and the runs go in two lanes, one per core of a 2-core machine; see
# data/checkpoints/README.md for the measured wall time of each run (uncontended, about 4.5 h for lane 1 and
# 3.2 h for lane 2).
# The runs replace the bundled ones (--overwrite).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
train() { .venv/bin/python -m dcnbio.train --dataset fashion-mnist --width 0.25 --no-adjoint --overwrite "$@"; }

(   # lane 1: the main job's model (sigma_ji DCN, seeds 1-3, 500 images per class, 12 epochs = 468 steps of 128
    # images), then the meta-parametrized DCNs (100 images per class, 500 held out, 10 epochs = 70 steps; no
    # test-set report)
    train --model dcn-sigma-ji --subset 500 --val-size 1000 --epochs 12 --save-every 10 --seeds 1 2 3 \
        --out data/checkpoints/dcn-sigma-ji
    for m in dcn-sigma-t dcn-sigma-t2 dcn-sigma-alpha-t; do
        train --model "$m" --subset 100 --val-size 500 --epochs 10 --no-test --seeds 1 --out "data/checkpoints/$m"
    done
) &
(   # lane 2: smoke-scale baselines (seeds 1-3) for the trajectory analyses (100 images per class, 15 epochs =
    # 105 steps), then the small-data grid of analyses/small_data.py (recipe: data/checkpoints/small-data/README.md)
    for m in dcn-ode odenet resnet-blocks; do
        train --model "$m" --subset 100 --val-size 1000 --epochs 15 --seeds 1 2 3 --out "data/checkpoints/$m"
    done
    for m in resnet-blocks odenet dcn-ode; do
        for n in 10 20 50; do
            .venv/bin/python -m dcnbio.train --model "$m" --dataset fashion-mnist --width 0.25 --subset "$n" \
                --val-size 0 --epochs $((300 / n)) --batch-size 32 --no-adjoint --no-test --seeds 1 2 3 --overwrite \
                --out "data/checkpoints/small-data/$m/n$n"
            rm -f data/checkpoints/small-data/"$m"/n"$n"/seed*/{init,best}.pt   # not bundled: see small-data/README.md
        done
    done
) &
wait
(cd data/checkpoints && find . -name '*.pt' -o -name '*.json' -o -name '*.csv' | sort \
    | xargs sha256sum > MANIFEST.sha256)
