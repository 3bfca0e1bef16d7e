#!/usr/bin/env bash
# The recipe of the bundled photo encoder, src/hashtool/assets/photo-encoder.onnx: edit-contrastive (a
# contrastive hash head on a frozen ImageNet EfficientNet-Lite0) trained by `hashtool train` with its defaults
# and seed 0 on the training part of the photos of Debian's gcompris-qt-data, opencv-doc,
# plasma-workspace-wallpapers, lomiri-wallpapers-16.04/-20.04, tuxpaint-stamps-default and scikit-image's
# skimage/data (hashtool.photosets; the held-out part is kept for benchmarks/bench_photos.py), exported by
# `hashtool export` with a parity check on the held-out photos. Needs those packages and hashtool[train].
# Usage: scripts/make_photo_encoder.sh [WORKDIR] [BITS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-build/photo-encoder}
bits=${2:-128}
mkdir -p "$work"
hashtool data photos "$work/train" --part train --max-side 1600
hashtool data photos "$work/heldout" --part heldout --max-side 1600
hashtool train --method edit-contrastive --bits "$bits" --data "$work/train" --seed 0 -o "$work/model.pt"
hashtool export "$work/model.pt" src/hashtool/assets/photo-encoder.onnx --parity-dir "$work/heldout" --parity-images 240
