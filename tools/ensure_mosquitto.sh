#!/bin/sh
# Installs mosquitto (and openssl for the TLS tests) with apt-get when missing.
# Exit 1 with a clear message when that is not possible.
set -u
need=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need="$need mosquitto"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
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
