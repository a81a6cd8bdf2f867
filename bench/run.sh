#!/usr/bin/env bash
# Quick benchmark (root): the remote client and hydration against curl and native reads, on
# Apache mod_dav at 127.0.0.1 (Apache, not rclone, so the server does not hide client cost).
# Prints ratios. Needs ~4 GiB free in /var/tmp. The full suite with rclone mount is issue 8.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
SIZE_MB=${SIZE_MB:-1024}
free_mb=$(df -Pm /var/tmp | awk 'NR==2{print $4}')
[ "$free_mb" -gt $((SIZE_MB * 4)) ] || { echo "need $((SIZE_MB * 4)) MiB free in /var/tmp, have $free_mb" >&2; exit 1; }
cargo build -q --release --bins --examples
BIN=$(pwd)/target/release
W=$(mktemp -d /var/tmp/skyfill-bench.XXXXXX)
chmod 755 "$W"
cleanup() {
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
  umount "$W/mnt" 2>/dev/null || true
  tests/harness/servers.sh stop "$W/srv" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
tests/harness/servers.sh start "$W/srv" >/dev/null
source "$W/srv/servers.env"
D=$SKYFILL_TEST_APACHE_DIR/data/bench
mkdir -p "$D/small"
head -c $((SIZE_MB << 20)) /dev/urandom > "$D/big.bin"
for i in $(seq 1 200); do head -c 4096 /dev/urandom > "$D/small/f$i"; done
chown -R www-data:www-data "$D"
URL=$SKYFILL_TEST_APACHE/dav/bench
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

echo "== 1. ${SIZE_MB} MiB download: client (parallel ranged GETs) vs curl, same server"
drop; curl_bps=$(curl -s -o "$W/curl.out" -w '%{speed_download}' "$URL/big.bin")
drop; out=$("$BIN/examples/fetch" "dav://${SKYFILL_TEST_APACHE#http://}/dav/bench" big.bin "$W/client.out" 8 4)
client_bps=$(python3 -c "import re;print(float(re.search(r'= ([0-9.]+) MB/s','$out').group(1))*1e6)")
cmp "$W/curl.out" "$W/client.out"
rm -f "$W/curl.out" "$W/client.out"
printf '   curl %.0f MB/s, client %.0f MB/s, ratio client/curl %s\n' "$(python3 -c "print($curl_bps/1e6)")" "$(python3 -c "print($client_bps/1e6)")" "$(ratio "$client_bps" "$curl_bps")"

echo "== 2. hydration through skyfilld (ext4 loop)"
mkdir -p "$W/mnt"; truncate -s $((SIZE_MB * 2 + 512))M "$W/img"; mkfs.ext4 -q "$W/img"; mount -o loop "$W/img" "$W/mnt"
"$BIN/skyfilld" --socket "$W/sock" --state-dir "$W/state" 2>"$W/daemon.log" & DPID=$!
for _ in $(seq 50); do "$BIN/skyfill" --socket "$W/sock" stats >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/skyfill" --socket "$W/sock" add-root "$W/mnt/c" "dav://${SKYFILL_TEST_APACHE#http://}/dav/bench" >/dev/null
t() { python3 -c 'import time,subprocess,sys; t=time.perf_counter(); subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL); print(time.perf_counter()-t)' "$@"; }
drop; cold=$(t dd if="$W/mnt/c/big.bin" of=/dev/null bs=1M)
curl_s=$(python3 -c "print($SIZE_MB*1048576/$curl_bps)")
echo "   cold full read of an online-only file: $(python3 -c "print(f'{$SIZE_MB*1.048576/$cold:.0f}')") MB/s; ratio vs curl: $(ratio "$curl_s" "$cold")"
cp --sparse=never "$W/srv/apache/data/bench/big.bin" "$W/mnt/plain.bin"
drop; h=$(t dd if="$W/mnt/c/big.bin" of=/dev/null bs=1M); drop; p=$(t dd if="$W/mnt/plain.bin" of=/dev/null bs=1M)
echo "   hydrated read, cold cache, 1 MiB reads: ratio vs plain file on the same fs: $(ratio "$p" "$h")"
best() { local b=999; for _ in 1 2 3; do x=$(t "$@"); b=$(python3 -c "print(min($b,$x))"); done; echo "$b"; }
cat "$W/mnt/c/big.bin" "$W/mnt/plain.bin" >/dev/null # both in the page cache
h=$(best dd if="$W/mnt/c/big.bin" of=/dev/null bs=4k); p=$(best dd if="$W/mnt/plain.bin" of=/dev/null bs=4k)
echo "   hydrated read, warm cache, 4 KiB reads (best of 3): ratio vs plain file: $(ratio "$p" "$h")"
h=$(best dd if="$W/mnt/c/big.bin" of=/dev/null bs=1M); p=$(best dd if="$W/mnt/plain.bin" of=/dev/null bs=1M)
echo "   hydrated read, warm cache, 1 MiB reads (best of 3): ratio vs plain file: $(ratio "$p" "$h")"

echo "== 3. time to first byte, 200 files of 4 KiB: cat of online-only files vs curl of each"
c=$(python3 - "$URL" <<'PY'
import subprocess, sys, time
t = time.perf_counter()
for i in range(1, 201):
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"{sys.argv[1]}/small/f{i}"], check=True)
print((time.perf_counter() - t) / 200)
PY
)
s=$(python3 - "$W/mnt/c/small" <<'PY'
import subprocess, sys, time
t = time.perf_counter()
for i in range(1, 201):
    subprocess.run(["cat", f"{sys.argv[1]}/f{i}"], check=True, stdout=subprocess.DEVNULL)
print((time.perf_counter() - t) / 200)
PY
)
echo "   per file: curl $(python3 -c "print(f'{$c*1000:.2f}')") ms, skyfill $(python3 -c "print(f'{$s*1000:.2f}')") ms; ratio skyfill/curl: $(ratio "$s" "$c")"
