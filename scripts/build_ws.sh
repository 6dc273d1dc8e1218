#!/usr/bin/env bash
# make build-ws: the wheel (dist/) and bin/wsgateway, one executable file (a shiv zipapp) with
# tornado_gw and every dependency inside, C extensions included. Its first line names the very
# interpreter that built it, since the extensions are built for that Python:
#   ./bin/wsgateway --port=8081        (the same commands and flags as python -m tornado_gw)
# Usage: scripts/build_ws.sh PYTHON [OUT_DIR]   (OUT_DIR: where dist/ and bin/ go; default the checkout)
set -euo pipefail
python="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "${2:-$root}"
out="$(cd "${2:-$root}" && pwd)"
cd "$root"
rm -rf "$out/dist" build
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out/dist" .
wheel="$(ls "$out"/dist/tornado_gw-*.whl)"
interpreter="$("$python" -c 'import sys; print(sys._base_executable)')"
mkdir -p "$out/bin"
"$python" -m shiv --reproducible --compressed --python "$interpreter" --console-script tornado-gw \
  --output-file "$out/bin/wsgateway" "$wheel" --quiet
echo "built $out/bin/wsgateway (run by $interpreter) from $wheel"
