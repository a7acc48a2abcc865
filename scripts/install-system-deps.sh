#!/usr/bin/env bash
# System packages the test suite needs. Installs what is missing when run as root (CI, our machines);
# otherwise says what to install. Safe to run repeatedly: does nothing when everything is present.
set -euo pipefail

missing=()
have_pg() {
    for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/16/bin /usr/lib/postgresql/17/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && return 0
    done
    return 1
}
have_pg || missing+=(postgresql-15)
id postgres >/dev/null 2>&1 || missing+=(postgresql-15)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
# XRootD: one server per site in the mover tests (TPC runs /usr/bin/xrdcp on the server side)
command -v xrootd >/dev/null 2>&1 || missing+=(xrootd-server xrootd-server-plugins xrootd-plugins)
command -v xrdcp >/dev/null 2>&1 || missing+=(xrootd-client xrootd-client-plugins)
# the fts3 client needs M2Crypto, which builds from source with swig against OpenSSL
command -v swig >/dev/null 2>&1 || missing+=(swig)
[[ -f /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
# Prometheus, promtool and the Pushgateway: the monitoring tests run real ones on 127.0.0.1
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
# headless Chromium: the report test loads the HTML page and checks its console and images
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
# unique
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ $(id -u) -ne 0 ]]; then
    echo "install-system-deps: missing ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    exit 0
fi
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
