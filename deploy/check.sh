#!/usr/bin/env bash
# checkov over deploy/ (Kubernetes manifests, Dockerfiles, compose files): zero failed checks.
# Each skipped check is a `checkov.io/skipN` annotation on its resource, with the reason.
# checkov pins many libraries of its own, so it lives in a virtualenv of its own
# ($DEPLOY_TOOLS, default .venv-deploy, git-ignored), made on first use. It runs offline
# (--skip-download: no policy downloads). The other deploy/ checks are tests: tests/deploy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${DEPLOY_TOOLS:-.venv-deploy}"
CHECKOV_VERSION=3.3.30

if [[ "$("$VENV/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi
"$VENV/bin/checkov" --directory deploy --skip-download --compact --quiet
