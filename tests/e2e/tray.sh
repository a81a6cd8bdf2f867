#!/usr/bin/env bash
# The tray app's end-to-end run, inside a private D-Bus session (run it under dbus-run-session,
# as the user the app runs as: tests/tray_e2e.rs runs it as root and as a throwaway user): an
# unlocked GNOME Keyring, Xvfb, tauri-driver with WebKitWebDriver, then WebdriverIO
# (ui/e2e/run.mjs) drives the real app against the real daemon and servers. Afterwards the
# secrets must be in this user's keyring. Everything started here is stopped here (by pid).
# Needs: SKYFILL_TRAY_APP, SKYFILL_SOCKET, TAURI_DRIVER, E2E_OUT, E2E_DRIVER_PORT (tauri-driver's
# port; WebKitWebDriver gets the next one), and the variables run.mjs reads.
set -euo pipefail
: "${SKYFILL_TRAY_APP:?}" "${SKYFILL_SOCKET:?}" "${TAURI_DRIVER:?}" "${E2E_OUT:?}" "${E2E_DRIVER_PORT:?}"
cd "$(dirname "$0")/../.."
for tool in gnome-keyring-daemon Xvfb node secret-tool WebKitWebDriver xfce4-panel xdotool dbus-send; do
  command -v "$tool" >/dev/null || { echo "FATAL: $tool missing; .ci/install-deps installs it" >&2; exit 1; }
done
pids=()
driver=
cleanup() {
  # WebKitWebDriver (and the app below it) are tauri-driver's children: stop them first.
  if [ -n "$driver" ]; then pkill -TERM -P "$driver" 2>/dev/null || true; fi
  # The tray process runs on its own (its D-Bus name tells its pid): the windows it opened,
  # then the tray.
  local tray
  tray=$(dbus-send --session --print-reply --dest=org.freedesktop.DBus / \
    org.freedesktop.DBus.GetConnectionUnixProcessID string:org.skyfill.Tray 2>/dev/null | awk '/uint32/ {print $2}')
  if [ -n "$tray" ]; then
    pkill -TERM -P "$tray" 2>/dev/null || true
    kill -TERM "$tray" 2>/dev/null || true
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
printf 'e2e-keyring-password' | gnome-keyring-daemon --unlock --components=secrets >"$E2E_OUT/keyring.env"
exec 5>"$E2E_OUT/display"
# -fbdir: the screen is also a file (an XWD dump), which tests/e2e/screen.py reads.
Xvfb -displayfd 5 -fbdir "$E2E_OUT" -screen 0 1280x900x24 -nolisten tcp >"$E2E_OUT/xvfb.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do [ -s "$E2E_OUT/display" ] && break; sleep 0.1; done
[ -s "$E2E_OUT/display" ] || { echo "FATAL: Xvfb did not start within 30 s" >&2; cat "$E2E_OUT/xvfb.log" >&2; exit 1; }
export DISPLAY=":$(head -1 "$E2E_OUT/display")"
export E2E_SCREEN="$E2E_OUT/Xvfb_screen0"
# A real StatusNotifierItem host: xfce4-panel with the notification area alone
# (tests/e2e/xfce4-panel.xml), its settings served by a private xfconfd.
panel_cfg="$E2E_OUT/panel-config/xfce4/xfconf/xfce-perchannel-xml"
mkdir -p "$panel_cfg"
cp tests/e2e/xfce4-panel.xml "$panel_cfg/"
xfconfd=$(ls /usr/lib/*/xfce4/xfconf/xfconfd 2>/dev/null | head -1)
[ -x "$xfconfd" ] || { echo "FATAL: xfconfd missing (package xfconf)" >&2; exit 1; }
XDG_CONFIG_HOME="$E2E_OUT/panel-config" "$xfconfd" >"$E2E_OUT/xfconfd.log" 2>&1 &
pids+=($!)
XDG_CONFIG_HOME="$E2E_OUT/panel-config" xfce4-panel >"$E2E_OUT/panel.log" 2>&1 &
pids+=($!)
up=
for _ in $(seq 300); do
  if dbus-send --session --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.NameHasOwner \
      string:org.kde.StatusNotifierWatcher 2>/dev/null | grep -q 'boolean true'; then up=1; break; fi
  sleep 0.1
done
[ -n "$up" ] || { echo "FATAL: xfce4-panel did not host a StatusNotifierWatcher within 30 s" >&2; cat "$E2E_OUT/panel.log" >&2; exit 1; }
# The app's log (run.mjs reads the "window ready" lines of a reopened window there).
export SKYFILL_TRAY_LOG="$E2E_OUT/tray.log"
"$TAURI_DRIVER" --port "$E2E_DRIVER_PORT" --native-port "$((E2E_DRIVER_PORT + 1))" >"$E2E_OUT/tauri-driver.log" 2>&1 &
driver=$!
pids+=("$driver")
up=
for _ in $(seq 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$E2E_DRIVER_PORT") 2>/dev/null; then up=1; break; fi
  sleep 0.1
done
[ -n "$up" ] || { echo "FATAL: tauri-driver did not listen within 30 s" >&2; cat "$E2E_OUT/tauri-driver.log" >&2; exit 1; }
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
echo "keyring holds both secrets ($(id -un))"
