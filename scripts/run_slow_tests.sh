#!/usr/bin/env bash
# The slow tests: every rule in every preset format and accumulation model, plus
# longer hypothesis runs. Not part of the default (CI) run.
set -euo pipefail
cd "$(dirname "$0")/.."
HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-long}" python -m pytest -q -n "${JOBS:-2}" --dist loadfile -m slow "$@"
HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-long}" python -m pytest -q -m "not slow" -k property tests/test_soundness.py
