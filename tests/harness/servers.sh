#!/usr/bin/env bash
# Starts (or stops) the real servers the integration tests use, all on 127.0.0.1:
#   Apache mod_dav (Depth infinity on: /dav/, off: /dav1/, Basic auth: /davauth/),
#   rclone serve webdav, s3s-fs, rclone serve s3.
# Usage: servers.sh start DIR   -> writes DIR/servers.env (sourceable) and pid files
#        servers.sh stop DIR    -> stops every server started into DIR, by pid
# A server that does not come up is a hard failure with its log printed.
set -euo pipefail
cmd=${1:?start|stop}
DIR=${2:?state dir}
CACHE=${SKYFILL_CI_CACHE:-/var/cache/skyfill-ci}
RCLONE=${RCLONE:-$CACHE/venv/bin/rclone}
S3SFS=${S3SFS:-$CACHE/s3s/bin/s3s-fs}
AK=skyfillak
SK=skyfillsecretkey123

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

wait_port() { # name port logfile
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "FATAL: $1 did not start on 127.0.0.1:$2; its log follows:" >&2
  cat "$3" >&2 || true
  exit 1
}

stop() {
  [ -d "$DIR" ] || return 0
  for pf in "$DIR"/*.pid; do
    [ -e "$pf" ] || continue
    pid=$(cat "$pf")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pf"
  done
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

for bin in apache2 "$RCLONE" "$S3SFS" htpasswd; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "$bin" ] || {
    echo "FATAL: $bin is missing; run .ci/install-deps first" >&2; exit 1; }
done

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
stop
mkdir -p "$DIR/apache/data" "$DIR/apache/data1" "$DIR/apache/dataauth" "$DIR/rclone-dav" "$DIR/s3s/bucket" "$DIR/rclone-s3/bucket"
chown -R www-data:www-data "$DIR/apache"
chmod 755 "$DIR"

if ! runuser -u www-data -- test -w "$DIR/apache/data"; then
  echo "FATAL: Apache runs as www-data and cannot write $DIR/apache/data: make every directory above it traversable (chmod 755)" >&2
  exit 1
fi
AP=$(free_port)
htpasswd -bc "$DIR/apache/htpasswd" skyuser 'app pass:word' >/dev/null 2>&1
cat > "$DIR/apache/httpd.conf" <<CONF
ServerRoot /etc/apache2
ServerName 127.0.0.1
PidFile $DIR/apache.pidfile
Listen 127.0.0.1:$AP
User www-data
Group www-data
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so
LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so
LoadModule auth_basic_module /usr/lib/apache2/modules/mod_auth_basic.so
LoadModule authn_file_module /usr/lib/apache2/modules/mod_authn_file.so
LoadModule dav_module /usr/lib/apache2/modules/mod_dav.so
LoadModule dav_fs_module /usr/lib/apache2/modules/mod_dav_fs.so
LoadModule dav_lock_module /usr/lib/apache2/modules/mod_dav_lock.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
TypesConfig /etc/mime.types
ErrorLog $DIR/apache/error.log
LogFormat "%m %U %>s %B \"%{Range}i\"" skyfill
CustomLog $DIR/apache/access.log skyfill
DavLockDB $DIR/apache/davlock
MaxRequestWorkers 64
Timeout 60
Alias /dav $DIR/apache/data
Alias /dav1 $DIR/apache/data1
Alias /davauth $DIR/apache/dataauth
<Directory $DIR/apache/data>
  Dav On
  DavDepthInfinity On
  Require all granted
</Directory>
<Directory $DIR/apache/data1>
  Dav On
  DavDepthInfinity Off
  Require all granted
</Directory>
<Directory $DIR/apache/dataauth>
  Dav On
  AuthType Basic
  AuthName skyfill
  AuthUserFile $DIR/apache/htpasswd
  Require valid-user
</Directory>
CONF
touch "$DIR/apache/error.log"
apache2 -f "$DIR/apache/httpd.conf" -k start
wait_port apache "$AP" "$DIR/apache/error.log"
for _ in $(seq 1 50); do [ -s "$DIR/apache.pidfile" ] && break; sleep 0.1; done
cp "$DIR/apache.pidfile" "$DIR/apache.pid"

RD=$(free_port)
"$RCLONE" serve webdav "$DIR/rclone-dav" --addr "127.0.0.1:$RD" --user skyuser --pass 'app pass:word' \
  >"$DIR/rclone-dav.log" 2>&1 &
echo $! > "$DIR/rclone-dav.pid"
wait_port "rclone serve webdav" "$RD" "$DIR/rclone-dav.log"

SP=$(free_port)
"$S3SFS" --host 127.0.0.1 --port "$SP" --access-key "$AK" --secret-key "$SK" --domain "localhost:$SP" "$DIR/s3s" \
  >"$DIR/s3s.log" 2>&1 &
echo $! > "$DIR/s3s.pid"
wait_port s3s-fs "$SP" "$DIR/s3s.log"

RS=$(free_port)
"$RCLONE" serve s3 "$DIR/rclone-s3" --addr "127.0.0.1:$RS" --auth-key "$AK,$SK" \
  >"$DIR/rclone-s3.log" 2>&1 &
echo $! > "$DIR/rclone-s3.pid"
wait_port "rclone serve s3" "$RS" "$DIR/rclone-s3.log"

cat > "$DIR/servers.env" <<ENV
export SKYFILL_TEST_APACHE=http://127.0.0.1:$AP
export SKYFILL_TEST_APACHE_DIR=$DIR/apache
export SKYFILL_TEST_RCLONE_DAV=http://127.0.0.1:$RD
export SKYFILL_TEST_RCLONE_DAV_DIR=$DIR/rclone-dav
export SKYFILL_TEST_S3S=http://127.0.0.1:$SP
export SKYFILL_TEST_S3S_DIR=$DIR/s3s
export SKYFILL_TEST_RCLONE_S3=http://127.0.0.1:$RS
export SKYFILL_TEST_RCLONE_S3_DIR=$DIR/rclone-s3
export SKYFILL_TEST_S3_KEYS=$AK:$SK
export SKYFILL_TEST_DAV_USER=skyuser
export SKYFILL_TEST_DAV_PASS='app pass:word'
ENV
echo "servers up: apache:$AP rclone-dav:$RD s3s-fs:$SP rclone-s3:$RS"
