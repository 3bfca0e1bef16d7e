#!/usr/bin/env bash
# The recipe of the bundled Fashion-MNIST encoder, src/hashtool/assets/fashion-mnist-encoder.onnx:
# nin-latent, 32 bits, trained by `hashtool train` with `--preset paper` (the defaults when the file was made,
# before issue 12 changed them) and seed 0 on Fashion-MNIST
# (Debian's dataset-fashion-mnist), exported by `hashtool export` with a 1,000-image parity check.
# The committed file was made by this command with HASHTOOL_THREADS=1; the quality it reached is in
# README.md and benchmarks/RESULTS.md. Usage: scripts/make_fashion_mnist_encoder.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-build/fashion-mnist-encoder}
mkdir -p "$work"
hashtool train --method nin-latent --preset paper --bits 32 --data fashion-mnist --seed 0 -o "$work/model.pt"
hashtool export "$work/model.pt" src/hashtool/assets/fashion-mnist-encoder.onnx --parity-images 1000
