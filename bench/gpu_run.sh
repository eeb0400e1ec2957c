#!/usr/bin/env bash
# The GPU check of the quality issue, ready for the device machine (one NVIDIA GPU, no network):
# train `compact` (then `paper`, if time is left) on the Magnetic Tile train split, evaluate each
# on the test split, and leave models, metrics and curves under $OUT.
#
# Prepare here, once (the device gets the working tree, 64 MiB at most, and no ../shared):
#   echo /.gpu_data/ >> .git/info/exclude   # (already in .gitignore)
#   .venv/bin/python bench/shrink_dataset.py ../shared/datasets/magnetic_tile .gpu_data/magnetic_tile
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl kornia kornia-rs shapely platformdirs
# Then run, with the device tool: carry [".gpu_data", ".whl"], command "bash bench/gpu_run.sh", timeout 600.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
# The package in its installed shape (setup.cfg package_dir): model/ and train/ inside labelme_dsarad.
mkdir -p /tmp/tree/labelme_dsarad
cp labelme_dsarad/*.py /tmp/tree/labelme_dsarad/
for part in model train resources; do ln -sfn "$PWD/$part" "/tmp/tree/labelme_dsarad/$part"; done
export PYTHONPATH=/tmp/tree:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
started=$(date +%s)
timeout 330 python3 bench/quality_curve.py --root .gpu_data/magnetic_tile --minutes 4 --snapshots 4 \
  --train-args "--preset compact --input-size 128 --device cuda --batch-size 32" --out "$OUT/compact" \
  2>&1 | tail -40 | tee "$OUT/compact.log"
cp "$OUT/compact/run/final.safetensors" "$OUT/compact.safetensors" 2>/dev/null
if [ $(( $(date +%s) - started )) -lt 300 ]; then
  timeout 240 python3 bench/quality_curve.py --root .gpu_data/magnetic_tile --minutes 2.5 --snapshots 2 \
    --train-args "--preset paper --input-size 128 --device cuda --batch-size 16" --out "$OUT/paper" \
    2>&1 | tail -20 | tee "$OUT/paper.log"
fi
rm -rf "$OUT/compact/run" "$OUT/paper/run"  # checkpoints and snapshots: too large to bring back
ls -la "$OUT"
