#!/usr/bin/env bash
# Build the documentation site (mkdocs-material + mkdocstrings) into site/, failing on
# any warning. Needs: python -m pip install -e ".[docs]"
set -euo pipefail
cd "$(dirname "$0")/.."
python -m mkdocs build --strict --site-dir "${1:-site}"
