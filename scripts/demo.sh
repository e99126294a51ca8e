#!/usr/bin/env bash
# `make demo`: build every shipped spec, draw the paper's network, pack the built-in data set
# and train the mini net from the store (the same run as from the folder, without decoding).
set -euo pipefail
cd "$(dirname "$0")/.."
netspec=.venv/bin/netspec
for spec in specs/*.yaml; do
  echo "== netspec build $spec"
  "$netspec" build "$spec"
  echo
done
echo "== netspec draw specs/alexnet.yaml -o docs/alexnet.svg"
"$netspec" draw specs/alexnet.yaml -o docs/alexnet.svg
"$netspec" draw specs/alexnet.yaml -o docs/alexnet.png
echo
echo "== netspec pack shapes -o runs/shapes-64 --resize 64"
"$netspec" pack shapes -o runs/shapes-64 --resize 64
echo
echo "== netspec train specs/alexnet-mini.yaml --data runs/shapes-64 --out runs/demo"
rm -rf runs/demo
time "$netspec" train specs/alexnet-mini.yaml --data runs/shapes-64 --out runs/demo
echo
echo "curves: runs/demo/curves.png   metrics: runs/demo/metrics.jsonl   diagram: docs/alexnet.svg"
