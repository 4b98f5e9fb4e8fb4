#!/usr/bin/env bash
# Installs what is missing, builds, and runs tlsportd serving clients on the
# Unix socket named in conf/tlsportd.json (run/tlsportd.sock by default).
# Talk to it with:  echo '{"op":"hello","ref":1}' | socat - UNIX-CONNECT:run/tlsportd.sock
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh run
scripts/build.sh
mkdir -p run
echo "tlsportd: serving on $(pwd)/run/tlsportd.sock (Ctrl-C stops it)"
exec build/daemon/tlsportd --config conf/tlsportd.json "$@"
