#!/usr/bin/env bash
# Optional check (not part of CI): build the production image from ./Dockerfile with podman and smoke-run it.
#
# This machine has no Docker engine and cannot reach Docker Hub, so the script
#   1. installs podman/buildah/runc from Debian if they are missing (needs root),
#   2. uses runc and small explicit ulimits (crun fails on the hybrid cgroup hierarchy here; the default rlimits
#      need CAP_SYS_RESOURCE),
#   3. seeds a stand-in base image (Debian bookworm + python3 via debootstrap, with the host's CA so pip reaches
#      the package index) unless the real base can be pulled, and passes it as --build-arg PYTHON_IMAGE,
#   4. builds with chroot isolation and host networking (pip in the build stage needs the index),
#   5. checks the result: non-root uid 10001, entrypoint/cmd, no compiler or pip cache in the final image,
#      the CLI starts on a read-only root filesystem with only /tmp writable and without network.
# The stand-in proves the Dockerfile's mechanics, not the official python image itself.
#
# Usage: scripts/check-image-build.sh            (WORK=/tmp/gcw-image-check by default; KEEP=1 keeps images)
set -euo pipefail

cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/gcw-image-check}
TAG=localhost/geocatalog-worker:check
STANDIN=localhost/gcw-python-standin:bookworm
REAL_BASE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
mkdir -p "$WORK"

log() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    [ "$(id -u)" = 0 ] || fail "podman and runc are missing and installing them needs root"
    log "installing podman, buildah, runc from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc >/dev/null
fi

cat >"$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"
export BUILDAH_ISOLATION=chroot

BASE="$REAL_BASE"
if ! podman image exists "docker.io/library/$REAL_BASE" && ! podman pull -q "docker.io/library/$REAL_BASE" >/dev/null 2>&1; then
    log "cannot pull $REAL_BASE; using a Debian stand-in base ($STANDIN)"
    BASE=$STANDIN
    if ! podman image exists "$STANDIN"; then
        command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        # The Debian mirror apt uses here (one-line .list or deb822 .sources format).
        mirror=$( { grep -hoE '^deb(\s+\[[^]]*\])?\s+\S+' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                      | awk '{print $NF}'; \
                    grep -hoE '^URIs:\s*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'; } \
                  | grep -E '/debian/?$' | head -1 || true)
        [ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt"
        rootfs="$WORK/rootfs"
        rm -rf "$rootfs"
        log "debootstrap bookworm from $mirror"
        debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
            bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 || fail "debootstrap failed: see $WORK/debootstrap.log"
        if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
            cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
            chroot "$rootfs" update-ca-certificates >/dev/null
        fi
        ln -sf python3 "$rootfs/usr/bin/python"
        tar -C "$rootfs" -c . | podman import -q \
            --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
            --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
            --change 'CMD ["python3"]' - "$STANDIN" >/dev/null
        rm -rf "$rootfs"
    fi
fi

log "building $TAG on $BASE"
start=$(date +%s)
podman build --pull=never --network host --build-arg "PYTHON_IMAGE=$BASE" \
    --build-arg VERSION=0.1.0 --build-arg "REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -t "$TAG" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "podman build failed"; }
log "built in $(( $(date +%s) - start )) s; image size $(podman image inspect "$TAG" --format '{{.Size}}') bytes"

user=$(podman image inspect "$TAG" --format '{{.Config.User}}')
entrypoint=$(podman image inspect "$TAG" --format '{{json .Config.Entrypoint}}')
cmd=$(podman image inspect "$TAG" --format '{{json .Config.Cmd}}')
[ "$user" = "10001:10001" ] || fail "image user is '$user', expected 10001:10001"
[ "$entrypoint" = '["geocatalog-worker"]' ] || fail "entrypoint is $entrypoint"
[ "$cmd" = '["run"]' ] || fail "cmd is $cmd"
log "user $user, entrypoint $entrypoint, cmd $cmd"

run() { podman run --rm --network none --read-only --tmpfs /tmp:rw,size=64m "$@"; }
version=$(run "$TAG" --version)
log "--version: $version"
run "$TAG" run --help | grep -q -- "--drain-seconds" || fail "'run --help' does not list --drain-seconds"
[ "$(run --entrypoint id "$TAG" -u)" = 10001 ] || fail "container does not run as uid 10001"
run --entrypoint sh "$TAG" -c 'touch /tmp/ok && ! touch /opt/venv/x 2>/dev/null' || fail "root filesystem is writable or /tmp is not"
run --entrypoint sh "$TAG" -c '! command -v gcc && ! command -v cc && ! ls /opt/venv/bin/pip* 2>/dev/null && [ ! -d /root/.cache/pip ]' \
    >/dev/null || fail "compiler, pip or pip cache in the final image"
if run --entrypoint python "$TAG" -c 'import gcw_emulators.servicebus.broker' 2>/dev/null; then
    fail "the emulators' dependencies are in the production image"
fi
# Missing configuration: the worker exits with a usage error naming the flag, not a traceback.
set +e
out=$(run "$TAG" 2>&1); rc=$?
set -e
[ "$rc" = 2 ] && grep -q -- "--servicebus" <<<"$out" || fail "unconfigured start gave rc $rc: $out"
log "unconfigured start: rc 2, $(grep -m1 -- '--servicebus' <<<"$out")"

[ "${KEEP:-0}" = 1 ] || { podman rmi -f "$TAG" >/dev/null; podman image prune -f >/dev/null; }
log "OK"
