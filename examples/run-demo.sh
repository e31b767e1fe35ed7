#!/usr/bin/env bash
# Sets up the project on a fresh machine and runs pipeline-runner over a throwaway example project
# with the embedded default state (SQLite). It never touches your own repository.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/.ci/setup"
exec "$here/.venv/bin/python" "$here/examples/demo/run.py" "$@"
