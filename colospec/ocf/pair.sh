#!/bin/sh
# OCF resource agent "ocf:colospec:pair": a colospec COLO pair as a promotable clone.
# The logic is `colospec ocf agent` (colospec/ocf/); `colospec ocf install` wrote this
# file, the interpreter colospec is installed with, and the meta-data (which must work
# for any user, without reading colospec's installation).
if [ "${1:-}" = meta-data ]; then
    cat <<'END_OF_METADATA'
@METADATA@END_OF_METADATA
    exit 0
fi
exec @PYTHON@ -m colospec ocf agent "${1:-}"
