#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, then pytest (extra arguments go to
# pytest), once against each build of the analysis (captures/analysis/build.py): the compiled
# one where setup could build it, then the interpreted source. A wrong type annotation fails
# only in the compiled build; the interpreted one is what runs where nothing compiles.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if .venv/bin/python scripts/compile_analysis.py --check; then
  KVIZ_ANALYSIS_BUILD=compiled .venv/bin/python -m pytest "$@"
fi
KVIZ_ANALYSIS_BUILD=interpreted exec .venv/bin/python -m pytest "$@"
