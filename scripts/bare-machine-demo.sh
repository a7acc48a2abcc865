#!/usr/bin/env bash
# Proof that the README's first command works on a bare machine: a minimal Debian 12 chroot with only
# Python (python3, python3-venv), make and git, and no gcc, swig or libssl-dev, clones this repository
# and runs `make demo`; exits 0 when the demo ends DONE and wrote its HTML report. Root only; about
# 3-4 minutes (debootstrap, wheels, the demo). Not part of CI (scripts/check-bare-install.sh is the
# cheap everyday version of the same check).
#   scripts/bare-machine-demo.sh [CHROOT]     (default /srv/satdrp-bare)
set -euo pipefail
[[ $(id -u) -eq 0 ]] || { echo "bare-machine-demo: run as root (debootstrap, chroot)" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-/srv/satdrp-bare}
mirror=$(grep -h -m1 -oE '^URIs: *[^ ]+/debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -1)
mirror=${mirror:-http://deb.debian.org/debian}

command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
if [[ ! -x $root/usr/bin/python3 ]]; then
    echo "bare-machine-demo: debootstrap bookworm minbase into $root" >&2
    debootstrap --variant=minbase --include=python3,python3-venv,make,git,ca-certificates \
        bookworm "$root" "$mirror" >/dev/null
fi
for tool in gcc cc swig; do
    if chroot "$root" sh -c "command -v $tool" >/dev/null; then
        echo "bare-machine-demo: $tool is in the chroot; it is meant to be bare" >&2
        exit 1
    fi
done
[[ ! -e $root/usr/include/openssl/ssl.h ]] || { echo "bare-machine-demo: libssl-dev is in the chroot" >&2; exit 1; }
cp /etc/resolv.conf /etc/hosts "$root/etc/"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"  # this host's CAs
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
mountpoint -q "$root/dev" || mount --rbind /dev "$root/dev"
trap 'umount -R "$root/dev" 2>/dev/null || true; umount "$root/proc" 2>/dev/null || true' EXIT

rm -rf "$root/src.git" "$root/home/satdrp"
git -C "$top" bundle create "$root/src.git" HEAD >/dev/null 2>&1
chroot "$root" git clone -q /src.git /home/satdrp
started=$(date +%s)
chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    make -C /home/satdrp demo
report=$(ls "$root"/home/satdrp/drp-work/reports/*/index.html 2>/dev/null | head -1)
[[ -n $report ]] || { echo "bare-machine-demo: no HTML report" >&2; exit 1; }
echo "bare-machine-demo: make demo exited 0 in $(( $(date +%s) - started )) s; report ${report#"$root"}" >&2
