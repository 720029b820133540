#!/usr/bin/env bash
# Creates (or refreshes) a virtual environment from a pinned requirements file.
# Usage: tools/venv.sh PYTHON VENV_DIR REQUIREMENTS_FILE
# Re-installs only when the requirements file changed since the last successful install.
set -euo pipefail
python=$1 venv=$2 req=$3
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "== setting up $venv from $req (one-off; takes a few minutes)"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --quiet --disable-pip-version-check --upgrade "pip<24.1"
# Twice quiet: errors only (not pip's notices about root, versions or its configuration).
"$venv/bin/python" -m pip install --quiet --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
