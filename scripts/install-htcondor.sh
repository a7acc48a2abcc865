#!/usr/bin/env bash
# A single-node HTCondor pool for the tests and `make demo-htcondor`: Debian 13 (trixie) `minicondor`
# (HTCondor 23.9) in a debootstrap chroot, because Debian 12 has no HTCondor package and trixie's needs
# a newer libc than the host's. Installs once (about 45 s); starting and stopping the pool is
# tests/htcondor_pool.py's job (it bind-mounts the checkout, the Python and the work area).
#
#   scripts/install-htcondor.sh            # idempotent; a stamp records what was installed
#
# Knobs: SATDRP_CONDOR_CHROOT (/srv/satdrp-condor), MIRROR (default: the mirror apt already uses),
#        SATDRP_CONDOR_UID (2000: jobs cannot be owned by root, so they run as user `satdrpjob`).
set -euo pipefail
CHROOT=${SATDRP_CONDOR_CHROOT:-/srv/satdrp-condor}
JOB_USER=satdrpjob
JOB_UID=${SATDRP_CONDOR_UID:-2000}
WANT="minicondor trixie uid=$JOB_UID config=3"
STAMP="$CHROOT/.satdrp-installed"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-htcondor: the HTCondor pool is installed into a chroot, which needs root;" \
        "run 'sudo bash scripts/install-htcondor.sh' once (the HTCondor tests fail without it" \
        "when DRP_REQUIRE_SERVICES=1, and skip otherwise)" >&2
    exit 0
fi
MIRROR=${MIRROR:-$(grep -h -m1 -oE '^URIs: *[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | head -1 | awk '{print $2}')}
MIRROR=${MIRROR:-$(grep -h -m1 -oE '^deb +[^ ]+/debian/? ' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')}
[[ -n "$MIRROR" ]] || { echo "install-htcondor: no Debian mirror in /etc/apt; set MIRROR" >&2; exit 2; }
echo "install-htcondor: HTCondor (Debian trixie minicondor) into $CHROOT from $MIRROR (about a minute)" >&2

export DEBIAN_FRONTEND=noninteractive
command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
[[ -x "$CHROOT/usr/bin/apt-get" ]] || debootstrap --variant=minbase trixie "$CHROOT" "$MIRROR" >/dev/null

mounted=()
cleanup() { for m in "${mounted[@]}"; do umount -R "$m" 2>/dev/null || true; done; }
trap cleanup EXIT
for fs in proc dev; do
    if ! mountpoint -q "$CHROOT/$fs"; then
        if [[ $fs == proc ]]; then mount -t proc proc "$CHROOT/proc"; else mount --rbind /dev "$CHROOT/dev"; fi
        mounted+=("$CHROOT/$fs")
    fi
done
cp /etc/resolv.conf "$CHROOT/etc/"
chroot "$CHROOT" apt-get update -qq
# the package scripts say systemctl/systemd-tmpfiles are missing: harmless, nothing runs systemd here
chroot "$CHROOT" apt-get install -y -qq --no-install-recommends minicondor >/dev/null 2>&1 || {
    chroot "$CHROOT" apt-get install -y --no-install-recommends minicondor >&2; exit 1; }
chroot "$CHROOT" id "$JOB_USER" >/dev/null 2>&1 || chroot "$CHROOT" useradd -u "$JOB_UID" -m "$JOB_USER"

# The pool's own settings (the per-run ones, such as the intervals the tests shorten, are written by
# tests/htcondor_pool.py into config.d at start).
cat > "$CHROOT/etc/condor/condor_config.local" <<'EOF'
# satdrp: a single-node pool on loopback, started by hand (no systemd)
CONDOR_HOST = 127.0.0.1
NETWORK_INTERFACE = 127.0.0.1
ENABLE_IPV6 = False
USE_SHARED_PORT = True
DISCARD_SESSION_KEYRING_ON_STARTUP = False
# a chroot cannot unshare a mount namespace (the starter fails with errno 22): no per-job /tmp mounts
MOUNT_UNDER_SCRATCH =
USE_PID_NAMESPACES = False
EOF
echo "$WANT" > "$STAMP"
echo "install-htcondor: done; jobs run as $JOB_USER (uid $JOB_UID)" >&2
