#!/usr/bin/env bash
# Prints the path of a Python 3.7 interpreter (pyenv first, then python3.7 on PATH), or nothing.
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.7(\.|$)' | sort -V -r); do
    p=$(PYENV_VERSION=$v pyenv which python3 2>/dev/null) && [ -x "$p" ] && { echo "$p"; exit 0; }
  done
fi
command -v python3.7 2>/dev/null || true
