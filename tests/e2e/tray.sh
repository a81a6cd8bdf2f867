#!/usr/bin/env bash
# The tray app's end-to-end run, inside a private D-Bus session (run it under dbus-run-session):
# an unlocked GNOME Keyring, Xvfb, tauri-driver with WebKitWebDriver, then WebdriverIO
# (ui/e2e/run.mjs) drives the real app against the real daemon and servers. Afterwards the
# secrets must be in the keyring. Everything started here is stopped here.
# Needs: SKYFILL_TRAY_APP, SKYFILL_SOCKET, TAURI_DRIVER, E2E_OUT, and the variables run.mjs reads.
set -euo pipefail
: "${SKYFILL_TRAY_APP:?}" "${SKYFILL_SOCKET:?}" "${TAURI_DRIVER:?}" "${E2E_OUT:?}"
cd "$(dirname "$0")/../.."
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pkill -f "WebKitWebDriver --port=4445" 2>/dev/null || true
}
trap cleanup EXIT
printf 'e2e-keyring-password' | gnome-keyring-daemon --unlock --components=secrets >"$E2E_OUT/keyring.env"
exec 5>"$E2E_OUT/display"
Xvfb -displayfd 5 -screen 0 1280x900x24 -nolisten tcp >"$E2E_OUT/xvfb.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -s "$E2E_OUT/display" ] && break; sleep 0.1; done
export DISPLAY=":$(head -1 "$E2E_OUT/display")"
"$TAURI_DRIVER" --port 4444 --native-port 4445 >"$E2E_OUT/tauri-driver.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/4444) 2>/dev/null && break
  sleep 0.1
done
node ui/e2e/run.mjs
# The wizard's secrets are in the keyring (service "skyfill"), readable by the user's tools.
for s in "$E2E_DAV_PASS" "$E2E_S3_SECRET"; do
  # (S3 secrets are kept as ACCESS:SECRET.)
  if ! secret-tool search --all service skyfill 2>/dev/null | grep '^secret = ' | grep -qF -- "$s"; then
    echo "FAIL: a secret the wizard took is not in the keyring" >&2
    secret-tool search --all service skyfill >&2 || true
    exit 1
  fi
done
echo "keyring holds both secrets"
