#!/usr/bin/env bash
# cluster-cache.sh — runs nginx in the foreground as a caching Hugging Face Hub endpoint for a
# cluster: every node sets HF_ENDPOINT=http://THIS-HOST:PORT and mounts (or downloads) as usual,
# and each file crosses the site's uplink once. The nginx configuration is
# cluster-cache.nginx.conf beside this script; its comments say what is cached, for how long,
# and how access to gated and private repos stays with the Hub.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATE="$HERE/cluster-cache.nginx.conf"

usage() {
  cat <<'EOF'
usage: cluster-cache.sh PORT CACHE_DIR [UPSTREAM] [options]

  PORT        where the nodes connect (HF_ENDPOINT=http://THIS-HOST:PORT)
  CACHE_DIR   the cache (bytes/, redirects/, access/, api/), the rendered nginx.conf, logs/
              and run/ (pid, inner sockets); created if missing. The cache survives restarts.
  UPSTREAM    the Hub: https://huggingface.co (default), or a mirror, as scheme://host[:port]

options:
  --max-size SIZE    largest size of the cached bytes, e.g. 500G, 2T (default 100G); the least
                     recently used slices are evicted beyond it
  --listen ADDR      address to listen on (default 127.0.0.1; 0.0.0.0 or an interface's address
                     for the nodes of a site, [::] for IPv6)
  --resolver ADDRS   name servers for the CDN's host names, space-separated (default: those of
                     /etc/resolv.conf)
  --ca-bundle FILE   CAs that sign the Hub's and the CDN's certificates (default: the system's,
                     /etc/ssl/certs/ca-certificates.crt)
  --user NAME        user the workers run as when started as root (default: CACHE_DIR's owner)
  --check            render the configuration, test it with nginx -t, and exit
  -h, --help         this text

Runs until SIGTERM/SIGINT (graceful: SIGQUIT). Plain HTTP towards the nodes: run it on the
site's trusted network, or put a TLS terminator in front (see README, "Cluster").
EOF
}

fail() { echo "cluster-cache.sh: $*" >&2; exit 2; }

# "500G" -> megabytes for nginx, whose sizes stop at g.
size_to_megabytes() {
  local text=$1 number unit
  [[ $text =~ ^([0-9]+)([kKmMgGtT]?)[iI]?[bB]?$ ]] || return 1
  number=${BASH_REMATCH[1]}
  unit=${BASH_REMATCH[2],,}
  case $unit in
    k) echo $(( (number + 1023) / 1024 )) ;;
    ""|b) echo $(( (number + 1048575) / 1048576 )) ;;
    m) echo "$number" ;;
    g) echo $(( number * 1024 )) ;;
    t) echo $(( number * 1024 * 1024 )) ;;
  esac
}

system_resolvers() {
  local line servers=()
  [ -r /etc/resolv.conf ] || return 0
  while read -r line; do
    [[ $line =~ ^nameserver[[:space:]]+([0-9a-fA-F:.]+) ]] || continue
    if [[ ${BASH_REMATCH[1]} == *:* ]]; then servers+=("[${BASH_REMATCH[1]}]"); else servers+=("${BASH_REMATCH[1]}"); fi
  done </etc/resolv.conf
  echo "${servers[*]}"
}

# Escapes a value for the right-hand side of a sed s|...|...| command.
sed_value() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

positional=()
max_size=100G
listen=127.0.0.1
resolvers=""
ca_bundle=""
worker_user=""
check_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --max-size) [ $# -ge 2 ] || fail "--max-size needs a size"; max_size=$2; shift 2 ;;
    --max-size=*) max_size=${1#*=}; shift ;;
    --listen) [ $# -ge 2 ] || fail "--listen needs an address"; listen=$2; shift 2 ;;
    --listen=*) listen=${1#*=}; shift ;;
    --resolver) [ $# -ge 2 ] || fail "--resolver needs addresses"; resolvers=$2; shift 2 ;;
    --resolver=*) resolvers=${1#*=}; shift ;;
    --ca-bundle) [ $# -ge 2 ] || fail "--ca-bundle needs a file"; ca_bundle=$2; shift 2 ;;
    --ca-bundle=*) ca_bundle=${1#*=}; shift ;;
    --user) [ $# -ge 2 ] || fail "--user needs a name"; worker_user=$2; shift 2 ;;
    --user=*) worker_user=${1#*=}; shift ;;
    --check) check_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) fail "unknown option $1 (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -ge 2 ] && [ ${#positional[@]} -le 3 ] || { usage >&2; exit 2; }
port=${positional[0]}
cache_dir=${positional[1]}
upstream=${positional[2]:-https://huggingface.co}

[[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || fail "PORT must be 1-65535, not '$port'"
[[ $listen =~ ^[][0-9A-Za-z.:-]+$ ]] || fail "--listen: '$listen' is not an address"
max_size_mb=$(size_to_megabytes "$max_size") && [ "$max_size_mb" -gt 0 ] \
  || fail "--max-size: '$max_size' is not a size (examples: 500G, 2T)"
# One key per 8 MiB slice; a megabyte of keys zone holds about 8000 keys.
keys_zone_mb=$(( max_size_mb / 8 / 4000 + 16 ))

[[ $upstream =~ ^(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:([0-9]+))?/?$ ]] \
  || fail "UPSTREAM must be scheme://host[:port] with no path, e.g. https://huggingface.co, not '$upstream'"
hub_scheme=${BASH_REMATCH[1]}
hub_host=${BASH_REMATCH[2]}
hub_port=${BASH_REMATCH[4]}
default_port=$([ "$hub_scheme" = https ] && echo 443 || echo 80)
hub_authority=$hub_host${hub_port:+:$hub_port}
[ "${hub_port:-$default_port}" = "$default_port" ] && hub_authority=$hub_host
# What proxy_pass names ($proxy_host, the key that lets the token through) and, for a Hub on
# localhost, the upstream block that stands for it.
hub_target=$hub_authority
hub_upstream_block=""
if [ "$hub_host" = localhost ]; then
  hub_target=localhost
  hub_upstream_block="    upstream localhost { server localhost:${hub_port:-$default_port}; keepalive 16; }"
fi
if [ "$hub_scheme" = https ] && [[ $hub_host =~ ^[0-9.]+$|^\[ ]]; then
  fail "UPSTREAM $upstream: give the Hub by a host name its certificate holds (nginx checks names, not addresses)"
fi

ca_bundle=${ca_bundle:-/etc/ssl/certs/ca-certificates.crt}
[ -r "$ca_bundle" ] || fail "cannot read the CA bundle $ca_bundle (--ca-bundle FILE; Debian: apt-get install ca-certificates)"
ca_bundle=$(cd "$(dirname "$ca_bundle")" && pwd)/$(basename "$ca_bundle")
resolvers=${resolvers:-$(system_resolvers)}
[ -n "$resolvers" ] || fail "no name server in /etc/resolv.conf: give one with --resolver ADDR"
address_list='^[][0-9A-Fa-f:. ]+$'
[[ $resolvers =~ $address_list ]] || fail "--resolver: '$resolvers' are not addresses"

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || fail "nginx is not installed (Debian: apt-get install nginx libnginx-mod-http-set-misc)"
modules_dir=/usr/lib/nginx/modules
[ -r "$modules_dir/ngx_http_set_misc_module.so" ] && [ -r "$modules_dir/ndk_http_module.so" ] \
  || fail "the nginx set-misc module is missing (Debian: apt-get install libnginx-mod-http-set-misc)"

mkdir -p "$cache_dir"
cache_dir=$(cd "$cache_dir" && pwd)
mkdir -p "$cache_dir/run" "$cache_dir/logs" "$cache_dir/tmp"
socket="$cache_dir/run/resolve.sock"
[ ${#socket} -lt 100 ] || fail "CACHE_DIR is too long for the unix sockets in it (${#socket} > 99 bytes): choose a shorter path"

if [ "$check_only" -eq 0 ] && [ -s "$cache_dir/run/nginx.pid" ] && kill -0 "$(cat "$cache_dir/run/nginx.pid")" 2>/dev/null; then
  fail "a cache already runs on $cache_dir (pid $(cat "$cache_dir/run/nginx.pid"))"
fi

user_line=""
if [ "$(id -u)" -eq 0 ]; then
  worker_user=${worker_user:-$(stat -c %U "$cache_dir")}
  id "$worker_user" >/dev/null 2>&1 || fail "--user: no user '$worker_user'"
  user_line="user $worker_user $(id -gn "$worker_user");"
  chown "$worker_user" "$cache_dir/logs" "$cache_dir/tmp"
  [ "$worker_user" != root ] || echo "cluster-cache.sh: the workers run as root (the owner of $cache_dir); a dedicated user is safer (--user NAME)" >&2
fi

# The key of the access check's HMAC: new at each start (the checks it keys last 60 s).
token_key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

conf="$cache_dir/nginx.conf"
umask 077   # the rendered file holds the HMAC key
sed -e "s|@USER_LINE@|$(sed_value "$user_line")|g" \
    -e "s|@CACHE_DIR@|$(sed_value "$cache_dir")|g" \
    -e "s|@MODULES_DIR@|$(sed_value "$modules_dir")|g" \
    -e "s|@LISTEN@|$(sed_value "$listen:$port")|g" \
    -e "s|@RESOLVER@|$(sed_value "$resolvers")|g" \
    -e "s|@KEYS_ZONE@|${keys_zone_mb}m|g" \
    -e "s|@MAX_SIZE@|${max_size_mb}m|g" \
    -e "s|@HUB_URL@|$(sed_value "$hub_scheme://$hub_target")|g" \
    -e "s|@HUB_AUTHORITY@|$(sed_value "$hub_target")|g" \
    -e "s|@HUB_UPSTREAM_BLOCK@|$(sed_value "$hub_upstream_block")|g" \
    -e "s|@CA_BUNDLE@|$(sed_value "$ca_bundle")|g" \
    -e "s|@TOKEN_KEY@|$token_key|g" \
    "$TEMPLATE" >"$conf.tmp"
mv "$conf.tmp" "$conf"
umask 022

"$nginx_bin" -t -q -c "$conf" -p "$cache_dir" || fail "nginx refused the configuration $conf (above)"
[ "$check_only" -eq 0 ] || { echo "cluster-cache.sh: $conf is valid"; exit 0; }
# What a killed nginx left behind: its inner sockets would refuse to be bound again.
rm -f "$cache_dir/run/nginx.pid" "$cache_dir/run/fetch.sock" "$cache_dir/run/resolve.sock"
echo "cluster-cache.sh: caching $upstream on http://$listen:$port in $cache_dir (max $max_size)" >&2
exec "$nginx_bin" -c "$conf" -p "$cache_dir"
