#!/bin/sh
# Installs what the tests need from Debian's packages when it is missing:
# the broker, its command-line clients, openssl (TLS tests) and socat
# (mpremote against the unix port). Exits 1 with a clear message when that
# is not possible.
set -u
need=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have mosquitto || need="$need mosquitto"
have mosquitto_sub && have mosquitto_pub || need="$need mosquitto-clients"
have openssl || need="$need openssl"
have socat || need="$need socat"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing:$need. Install them (Debian: apt-get install$need) and run again." >&2
    exit 1
fi
echo "installing:$need (apt-get)"
apt-get update -qq >/dev/null && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null || {
    echo "error: apt-get could not install$need" >&2
    exit 1
}
