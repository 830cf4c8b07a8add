#!/usr/bin/env bash
# Build the essayscore OCI image with `bentoml containerize --backend buildah` on a machine with no Docker engine
# and no reachable container registry, then run it once and check POST /score.  See docs/container.md.
#
#   scripts/build_image.sh [TAG]          # TAG defaults to essayscore:latest (the image name)
#
# Environment (all optional):
#   ESSAYSCORE_IMAGE_STEPS   comma list of steps to run (default: deps,storage,bento,base,containerize,smoke)
#   ESSAYSCORE_IMAGE_STATE   state folder for containers storage (default: <repo>/.cache/containers)
#   BENTOML_HOME             BentoML home (default: <repo>/.cache/bentoml-image; never ~/bentoml)
#   ESSAYSCORE_MODEL_TAG     model to bundle (default: the latest artifact under <repo>/artifacts, registered here)
#   ESSAYSCORE_TORCH_WHEEL   CPU torch wheel bundled into the Bento (default: /opt/wheels/torch-2.13.0+cpu-*.whl)
#   ESSAYSCORE_SMOKE_PORT    host port for the smoke run (default: a free 127.0.0.1 port)
#   ESSAYSCORE_KEEP_CONTAINER=1  leave the smoke container running (prints how to stop it)
# Output: lines "STEP <name> <seconds>s", and at the end "SCORE_CHECK=PASS band=..." or "SCORE_CHECK=FAIL ...".
set -euo pipefail

REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${1:-essayscore:latest}"
STEPS=",${ESSAYSCORE_IMAGE_STEPS:-deps,storage,bento,base,containerize,smoke},"
STATE="${ESSAYSCORE_IMAGE_STATE:-$REPO/.cache/containers}"
OWN_BENTOML_HOME="$REPO/.cache/bentoml-image"
export BENTOML_HOME="${BENTOML_HOME:-$OWN_BENTOML_HOME}"
export BENTOML_DO_NOT_TRACK=true
PY="$REPO/.venv/bin/python"
BENTOML="$REPO/.venv/bin/bentoml"
BENTO_NAME="$(sed -n 's/^name:[[:space:]]*"\{0,1\}\([A-Za-z0-9_.-]*\).*/\1/p' "$REPO/bentofile.yaml" | head -1)"
BASE_IMAGE_DEFAULT="docker.io/library/python:3.11-slim"
CA_BUNDLE="${ESSAYSCORE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
DEBIAN_SUITE="${ESSAYSCORE_DEBIAN_SUITE:-bookworm}"
DEBIAN_MIRROR="${ESSAYSCORE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
T_ALL=$(date +%s)

log() { printf '[build_image %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
want() { [[ "$STEPS" == *",$1,"* ]]; }
step_start() { T_STEP=$(date +%s); log "== step $1"; }
step_end() { echo "STEP $1 $(( $(date +%s) - T_STEP ))s"; }
[ "$(id -u)" = 0 ] || die "run as root (buildah vfs + chroot isolation, debootstrap)"

# ---------------------------------------------------------------------------------------------------- 1. deps
if want deps; then
  step_start deps
  missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  else
    log "buildah and debootstrap already installed"
  fi
  step_end deps
fi

# ------------------------------------------------------------------------------------------------- 2. storage
# vfs needs no kernel overlay / fuse support (so no fuse-overlayfs); chroot isolation needs no user namespaces.
mkdir -p "$STATE"/{graphroot,runroot,tmp}
exec 9>"$STATE/.lock"
flock -n 9 || die "another build_image.sh holds $STATE/.lock"
cat > "$STATE/storage.conf" <<CONF
[storage]
driver = "vfs"
runroot = "$STATE/runroot"
graphroot = "$STATE/graphroot"
CONF
# Debian's buildah ships /etc/containers/policy.json (insecureAcceptAnything); recreate it only if it is missing.
if [ ! -f /etc/containers/policy.json ]; then
  mkdir -p /etc/containers
  echo '{"default": [{"type": "insecureAcceptAnything"}]}' > /etc/containers/policy.json
fi
cat > "$STATE/registries.conf" <<'CONF'
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
CONF
export CONTAINERS_STORAGE_CONF="$STATE/storage.conf"
export CONTAINERS_REGISTRIES_CONF="$STATE/registries.conf"
export BUILDAH_ISOLATION=chroot
export TMPDIR="$STATE/tmp"   # buildah stages build contexts and layer blobs here (GBs), not in /tmp
if want storage; then
  step_start storage
  log "containers storage: $(buildah info --format '{{.store.GraphDriverName}} {{.store.GraphRoot}}')"
  step_end storage
fi

# The bento (built in step "bento") names its base image in env/docker/Dockerfile; default before it exists.
bento_dir() {  # the store keeps bentos/<name>/<version>/ and a file "latest" holding the newest version
  local v
  v="$(cat "$BENTOML_HOME/bentos/$BENTO_NAME/latest" 2>/dev/null || true)"
  [ -n "$v" ] && echo "$BENTOML_HOME/bentos/$BENTO_NAME/$v"
}
bento_dockerfile() { local d; d="$(bento_dir || true)"; [ -n "$d" ] && echo "$d/env/docker/Dockerfile"; }
base_image_name() {
  local df name
  df="$(bento_dockerfile || true)"
  if [ -n "$df" ] && [ -f "$df" ]; then name="$(awk 'toupper($1)=="FROM" {print $2; exit}' "$df")"; fi
  name="${name:-$BASE_IMAGE_DEFAULT}"
  case "$name" in */*/*) ;; */*) name="docker.io/$name" ;; *) name="docker.io/library/$name" ;; esac
  echo "$name"
}
image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------------- 3. bento
# Built before the base image because its generated Dockerfile names the base image.
if want bento; then
  step_start bento
  mkdir -p "$BENTOML_HOME"
  if [ -z "${ESSAYSCORE_MODEL_TAG:-}" ]; then
    ESSAYSCORE_MODEL_TAG="$(cd "$REPO" && "$PY" -c "from pathlib import Path; from essayscore import artifacts; \
print(artifacts.register(artifacts.resolve('latest', Path('$REPO/artifacts'))))" | tail -1)"
    log "registered the latest artifact as $ESSAYSCORE_MODEL_TAG in $BENTOML_HOME"
  fi
  export ESSAYSCORE_MODEL_TAG   # service.py bundles exactly this model into the Bento
  GEN_BENTOFILE="$STATE/bentofile.image.yaml"
  wheel="$("$PY" "$REPO/scripts/image/bentofile_for_image.py" "$REPO/bentofile.yaml" "$GEN_BENTOFILE" \
             ${ESSAYSCORE_TORCH_WHEEL:+--wheel "$ESSAYSCORE_TORCH_WHEEL"})"
  log "bentofile for the image: $GEN_BENTOFILE (bundled CPU torch wheel: $wheel)"
  [ "$wheel" != none ] || log "WARNING: no CPU torch wheel bundled: uv in the image resolves torch from the indexes"
  out="$(cd "$REPO" && "$BENTOML" build -f "$GEN_BENTOFILE" --output tag "$REPO" 2>"$STATE/bentoml-build.log")" \
    || { tail -30 "$STATE/bentoml-build.log" >&2; die "bentoml build failed (log: $STATE/bentoml-build.log)"; }
  BENTO_TAG="$(printf '%s\n' "$out" | sed -n 's/^__tag__://p' | tail -1)"
  [ -n "$BENTO_TAG" ] || die "bentoml build printed no tag: $out"
  log "built bento $BENTO_TAG ($(du -sh "$(bento_dir)" | cut -f1)); model $ESSAYSCORE_MODEL_TAG"
  # keep only the newest bento of this name, and only in the script's own BentoML home
  [ "$BENTOML_HOME" != "$OWN_BENTOML_HOME" ] || for old in $("$BENTOML" list "$BENTO_NAME" -o json 2>/dev/null | "$PY" -c "import json,sys; \
print(' '.join(b['tag'] for b in json.load(sys.stdin)))"); do
    [ "$old" = "$BENTO_TAG" ] || "$BENTOML" delete -y "$old" >/dev/null 2>&1 || true
  done
  step_end bento
fi
BENTO_TAG="${BENTO_TAG:-$BENTO_NAME:latest}"

# ---------------------------------------------------------------------------------------------------- 4. base
# A stand-in for the registry image the Dockerfile names: Debian minbase + python3 (3.11 on bookworm), pip, venv.
build_base() {
  local name="$1" rootfs="$STATE/rootfs-$DEBIAN_SUITE" ctr
  if image_exists "$name"; then log "base image $name already exists: skipped"; return 0; fi
  if [ ! -f "$rootfs/.debootstrap-complete" ]; then
    # an interrupted debootstrap can leave /proc or /sys mounted inside: unmount before removing the tree
    awk -v r="$rootfs/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$rootfs"
    log "debootstrap $DEBIAN_SUITE minbase into $rootfs (1-3 min)"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
      "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" > "$STATE/debootstrap.log" 2>&1 \
      || { tail -20 "$STATE/debootstrap.log" >&2; die "debootstrap failed (log: $STATE/debootstrap.log)"; }
    # pip may install into the system interpreter (PEP 668 marker off, as in the python:*-slim images)
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    # outbound package traffic goes through an intercepting proxy: trust this machine's CA bundle inside
    install -m 0644 "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    install -m 0644 "$CA_BUNDLE" "$rootfs/etc/ssl/certs/build-host-ca-bundle.crt"
    ln -sf python3 "$rootfs/usr/bin/python"
    # like the official slim images: apt does not keep downloaded .debs (the Bento Dockerfile's keep-cache file asks
    # for the opposite for BuildKit cache mounts, which buildah does not have; "zz-" sorts after it and wins)
    printf 'APT::Keep-Downloaded-Packages "false";\n' > "$rootfs/etc/apt/apt.conf.d/zz-no-keep-debs"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    touch "$rootfs/.debootstrap-complete"
  fi
  log "buildah commit $name"
  ctr="$(buildah from scratch)"
  buildah copy --quiet "$ctr" "$rootfs" / >/dev/null
  local ca=/etc/ssl/certs/build-host-ca-bundle.crt
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --env SSL_CERT_FILE=$ca --env PIP_CERT=$ca --env REQUESTS_CA_BUNDLE=$ca --env UV_NATIVE_TLS=1 \
    --env UV_SYSTEM_CERTS=1 --env PIP_DISABLE_PIP_VERSION_CHECK=1 --env PIP_DEFAULT_TIMEOUT=180 \
    --env UV_HTTP_TIMEOUT=180 --env UV_NO_CACHE=1 --env PIP_NO_CACHE_DIR=1 \
    --cmd python3 --label org.opencontainers.image.description="local stand-in for $name: debootstrap $DEBIAN_SUITE minbase + python3" \
    "$ctr"
  buildah commit --quiet --rm "$ctr" "$name" >/dev/null
  ctr="$(buildah from --quiet "$name")"
  log "base image $name: $(buildah run --isolation chroot "$ctr" -- python3 --version 2>&1 | tail -1)"
  buildah rm "$ctr" >/dev/null
}
if want base; then
  step_start base
  build_base "$(base_image_name)"
  step_end base
fi

# ---------------------------------------------------------------------------------------------- 5. containerize
if want containerize; then
  step_start containerize
  image_exists "$(base_image_name)" || die "base image $(base_image_name) missing: run the base step"
  log "bentoml containerize $BENTO_TAG -t $TAG (buildah, chroot isolation; log: $STATE/containerize.log)"
  (cd "$REPO" && "$BENTOML" containerize "$BENTO_TAG" --backend buildah --opt isolation=chroot -t "$TAG") \
    > "$STATE/containerize.log" 2>&1 || { tail -40 "$STATE/containerize.log" >&2; die "bentoml containerize failed"; }
  # a rebuild leaves the previous image untagged; with vfs every layer is a full copy, so drop dangling ones
  buildah rmi --prune >/dev/null 2>&1 || true
  # the Bento's Dockerfile ends with USER bentoml (uid 1034); refuse an image whose default user is root
  image_user="$(buildah inspect --type image "$TAG" \
                | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["OCIv1"]["config"].get("User") or "")')"
  case "${image_user%%:*}" in ""|root|0) die "image $TAG runs as root (User='$image_user')" ;; esac
  echo "IMAGE_USER $image_user"
  step_end containerize
fi

# ----------------------------------------------------------------------------------------------------- 6. smoke
# No podman here: run the image's entrypoint with `buildah run` (chroot isolation, host network) in the background.
# Killing `buildah run` can leave the server inside running (its workers get re-parented to PID 1), and
# /proc/PID/root does not tell them apart (chroot isolation pivots into its own mount namespace), so every inner
# process carries a marker variable in its environment and is found by it in /proc and stopped by PID.
SMOKE_NAME="essayscore-smoke"
SMOKE_MARK="ESSAYSCORE_SMOKE_RUN=$(echo "$REPO" | md5sum | cut -c1-12)"
container_pids() {  # PIDs of processes started inside the smoke container (by the marker in their environment)
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qx "$SMOKE_MARK" && echo "${p#/proc/}"
  done
  return 0
}
stop_smoke() {
  local pids i
  pids="$(container_pids | tr '\n' ' ')"
  if [ -n "${pids// /}" ]; then
    log "stopping the processes in $SMOKE_NAME: $pids"
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 1 30); do pids="$(container_pids | tr '\n' ' ')"; [ -z "${pids// /}" ] && break; sleep 0.5; done
    [ -z "${pids// /}" ] || { log "still running after 15 s, SIGKILL: $pids"; kill -KILL $pids 2>/dev/null || true; sleep 1; }
  fi
  if [ -n "${RUN_PID:-}" ]; then kill "$RUN_PID" 2>/dev/null || true; wait "$RUN_PID" 2>/dev/null || true; RUN_PID=""; fi
  buildah rm "$SMOKE_NAME" >/dev/null 2>&1 || true
}
if want smoke; then
  step_start smoke
  image_exists "$TAG" || die "image $TAG does not exist: run the containerize step"
  stop_smoke   # a container left by an interrupted earlier run
  port="${ESSAYSCORE_SMOKE_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
  buildah from --quiet --name "$SMOKE_NAME" "$TAG" >/dev/null
  [ "${ESSAYSCORE_KEEP_CONTAINER:-0}" = 1 ] || trap 'stop_smoke' EXIT
  entry="$(buildah inspect --type container "$SMOKE_NAME" \
           | "$PY" -c 'import json,sys; e=json.load(sys.stdin)["OCIv1"]["config"].get("Entrypoint") or []; print(e[0] if e else "")')"
  [ -n "$entry" ] || die "image $TAG has no entrypoint"
  log "buildah run $SMOKE_NAME: $entry serve --host 127.0.0.1 --port $port (log: $STATE/smoke-serve.log)"
  buildah run --isolation chroot --network host --env "$SMOKE_MARK" "$SMOKE_NAME" -- "$entry" serve --host 127.0.0.1 --port "$port" \
    > "$STATE/smoke-serve.log" 2>&1 &
  RUN_PID=$!
  set +e
  "$PY" "$REPO/scripts/image/smoke_score.py" --url "http://127.0.0.1:$port" --essays "$REPO/examples/essays.csv" \
    --pid "$RUN_PID" --wait "${ESSAYSCORE_SMOKE_WAIT:-600}" | tee "$STATE/smoke-result.txt"
  smoke_rc=${PIPESTATUS[0]}
  set -e
  [ "$smoke_rc" = 0 ] || { log "server log tail:"; tail -40 "$STATE/smoke-serve.log" >&2; }
  echo "IMAGE $(buildah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$TAG" | head -1)"
  if [ "${ESSAYSCORE_KEEP_CONTAINER:-0}" = 1 ]; then
    log "left running on 127.0.0.1:$port; stop: kill the PIDs with $SMOKE_MARK in /proc/PID/environ, then buildah rm $SMOKE_NAME"
  else
    stop_smoke; trap - EXIT
  fi
  step_end smoke
  [ "$smoke_rc" = 0 ] || die "the /score check failed"
fi
echo "TOTAL $(( $(date +%s) - T_ALL ))s"
