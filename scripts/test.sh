#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, then pytest (extra arguments go to
# pytest), once against each build of the analysis (captures/analysis/build.py): the compiled
# one where setup could build it, then the interpreted source. A wrong type annotation fails
# only in the compiled build; the interpreted one is what runs where nothing compiles. The
# compiled pass reads every capture ahead in a second process (captures/analysis/readahead.py),
# which production does for captures of 4 MB or more; the interpreted pass reads in one.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if .venv/bin/python scripts/compile_analysis.py --check; then
  KVIZ_ANALYSIS_BUILD=compiled KVIZ_ANALYSIS_READAHEAD=always .venv/bin/python -m pytest "$@"
fi
KVIZ_ANALYSIS_BUILD=interpreted KVIZ_ANALYSIS_READAHEAD=never exec .venv/bin/python -m pytest "$@"
