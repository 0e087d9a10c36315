#!/usr/bin/env bash
# The installer's one command (docs/installing.md). Thin on purpose: the logic is in
# bridge/installer (Python). ./flash.sh --help lists the options.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$HERE/.venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "flash.sh: the project's tools are not installed yet; running \`make setup\` (once, a few minutes)" >&2
    make -C "$HERE" setup >&2 || { echo "flash.sh: \`make setup\` failed: see above, fix, and run again" >&2; exit 1; }
fi
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m bridge.installer "$@"
