#!/usr/bin/env bash
# Sets up .venv from nothing: netspec editable with the tested versions of everything it uses
# (scripts/constraints.txt), and graphviz's `dot`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c scripts/constraints.txt -e '.[dev]'
if ! command -v dot >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
  else
    echo "note: graphviz's dot is missing; install it (apt-get install graphviz) for svg/png/pdf diagrams" >&2
  fi
fi
