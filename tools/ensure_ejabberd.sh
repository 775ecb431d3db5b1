#!/bin/sh
# Installs Debian's ejabberd (23.01 on Debian 12; its MQTT broker mod_mqtt is
# the second broker of tests/test_ejabberd.py) when it is missing, and makes
# sure the system service that comes with it is not running. The tests never
# use that service: tools/ejabberd_broker.py starts private nodes with their
# own config, database, cookie and epmd on free loopback ports.
# Fast (no apt, no Erlang VM) when ejabberd is installed and stopped.
# Exits 1 with a clear message when the install is not possible.
set -u

have_ejabberd() {
    [ -x /usr/sbin/ejabberdctl ] && [ -x /usr/bin/erl ] && [ -x /usr/bin/epmd ] &&
        ls -d /usr/lib/*/ejabberd-*/ebin >/dev/null 2>&1
}

# The stock service (default config: MQTT on 1883, XMPP on 5222/5269/5280/
# 5443) is running when its pid file names a live process, or systemd says so.
service_running() {
    pidfile=/run/ejabberd/ejabberd.pid
    if [ -f /etc/default/ejabberd ]; then
        p=$(sed -n 's/^EJABBERD_PID_PATH=//p' /etc/default/ejabberd | tr -d '"')
        [ -n "$p" ] && pidfile=$p
    fi
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        return 0
    fi
    [ -d /run/systemd/system ] && systemctl is-active --quiet ejabberd.service 2>/dev/null
}

# Stop it with its own tools: the init script (which systemd machines
# redirect to `systemctl stop`), else `ejabberdctl stop` as the package's
# user (ejabberdctl switches to it itself), then wait until it is down.
stop_service() {
    echo "stopping the system ejabberd service (the tests run private nodes)"
    if [ -x /etc/init.d/ejabberd ]; then
        /etc/init.d/ejabberd stop >/dev/null 2>&1
    fi
    if service_running; then
        /usr/sbin/ejabberdctl stop >/dev/null 2>&1
        /usr/sbin/ejabberdctl stopped >/dev/null 2>&1
    fi
    if service_running; then
        echo "error: the system ejabberd service is still running; stop it (/etc/init.d/ejabberd stop)" >&2
        exit 1
    fi
}

if have_ejabberd; then
    if service_running; then
        [ "$(id -u)" = 0 ] || {
            echo "error: the system ejabberd service is running; stop it as root (/etc/init.d/ejabberd stop)" >&2
            exit 1
        }
        stop_service
    fi
    exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ejabberd is missing. Install it (Debian: apt-get install ejabberd) and run again," \
         "or run tools/ensure_ejabberd.sh as root." >&2
    exit 1
fi
echo "installing: ejabberd (apt-get; Erlang included, ~32 MB)"
apt-get update -qq >/dev/null && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ejabberd >/dev/null || {
    echo "error: apt-get could not install ejabberd" >&2
    exit 1
}
have_ejabberd || { echo "error: ejabberd installed but /usr/sbin/ejabberdctl or erl is missing" >&2; exit 1; }
# The package's postinst starts the service where policy allows (systemd).
if service_running; then
    stop_service
fi
exit 0
