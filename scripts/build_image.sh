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
#   ESSAYSCORE_CA_BUNDLE     CA bundle the build trusts (default: this machine's, with its proxy's CA); given to the
#                            image build as the secret "build-ca" only, never copied into the image (see smoke)
#   ESSAYSCORE_SMOKE_PORT    host port for the smoke run (default: a free 127.0.0.1 port)
#   ESSAYSCORE_KEEP_CONTAINER=1  leave the smoke container running (prints how to stop it)
# Output: lines "STEP <name> <seconds>s", and from the smoke step "SCORE_CHECK=PASS band=..." (or FAIL), READY after,
# SERVER_UIDS, WORKER_RSS_MB, CA_CHECK, IMAGE_CONTENT, IMAGE_DU and IMAGE <name> <id> <size>.
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
  # bentofile.yaml as it is: the serving set (no torch) and the lean Dockerfile template (scripts/image/Dockerfile.j2)
  out="$(cd "$REPO" && "$BENTOML" build -f "$REPO/bentofile.yaml" --output tag "$REPO" 2>"$STATE/bentoml-build.log")" \
    || { tail -30 "$STATE/bentoml-build.log" >&2; die "bentoml build failed (log: $STATE/bentoml-build.log)"; }
  BENTO_TAG="$(printf '%s\n' "$out" | sed -n 's/^__tag__://p' | tail -1)"
  [ -n "$BENTO_TAG" ] || die "bentoml build printed no tag: $out"
  if grep -Eiq '^(torch|transformers|nvidia-)' "$(bento_dir)/env/python/requirements.txt"; then
    die "the Bento's requirements name torch, transformers or CUDA libraries: $(bento_dir)/env/python/requirements.txt"
  fi
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
# A stand-in for the registry image the Dockerfile names: Debian minbase + python3 (3.11 on bookworm), pip, venv,
# trimmed like debian:bookworm-slim (no docs, man pages or translations). It trusts Debian's CA certificates only:
# the build host's proxy CA reaches the image build as a secret (containerize), never a layer of any image.
BASE_REV=2   # 2: no build-host CA bundle and no certificate variables in the image (1: had them), slim paths
base_rev() { buildah inspect --type image --format '{{index .OCIv1.Config.Labels "essayscore.base-rev"}}' "$1" 2>/dev/null; }
is_stand_in() { buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.description"}}' "$1" 2>/dev/null | grep -q "local stand-in"; }
build_base() {
  local name="$1" rootfs="$STATE/rootfs-$DEBIAN_SUITE" ctr
  local done_mark="$STATE/rootfs-$DEBIAN_SUITE.complete"   # holds BASE_REV once the tree is complete
  if image_exists "$name"; then
    if ! is_stand_in "$name" || [ "$(base_rev "$name")" = "$BASE_REV" ]; then
      log "base image $name already exists: skipped"; return 0
    fi
    log "base image $name is an older stand-in (revision '$(base_rev "$name")', now $BASE_REV): rebuilt"
    buildah rmi -f "$name" >/dev/null
  fi
  if [ "$(cat "$done_mark" 2>/dev/null)" != "$BASE_REV" ]; then
    # an interrupted debootstrap can leave /proc or /sys mounted inside: unmount before removing the tree
    awk -v r="$rootfs/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$rootfs" "$done_mark"
    log "debootstrap $DEBIAN_SUITE minbase into $rootfs (1-3 min)"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
      "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" > "$STATE/debootstrap.log" 2>&1 \
      || { tail -20 "$STATE/debootstrap.log" >&2; die "debootstrap failed (log: $STATE/debootstrap.log)"; }
    # pip may install into the system interpreter (PEP 668 marker off, as in the python:*-slim images)
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    ln -sf python3 "$rootfs/usr/bin/python"
    # like the official slim images: apt does not keep downloaded .debs (the Bento Dockerfile's keep-cache file asks
    # for the opposite for BuildKit cache mounts, which buildah does not have; "zz-" sorts after it and wins)
    printf 'APT::Keep-Downloaded-Packages "false";\n' > "$rootfs/etc/apt/apt.conf.d/zz-no-keep-debs"
    # like debian:bookworm-slim: no documentation, man pages or translations (copyright files stay), now or later
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
      'path-exclude /usr/share/lintian/*' 'path-exclude /usr/share/linda/*' 'path-exclude /usr/share/locale/*' \
      > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
    find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda,locale}/*
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    echo "$BASE_REV" > "$done_mark"
  fi
  log "buildah commit $name"
  ctr="$(buildah from scratch)"
  buildah copy --quiet "$ctr" "$rootfs" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label essayscore.base-rev="$BASE_REV" \
    --label org.opencontainers.image.description="local stand-in for $name: debootstrap $DEBIAN_SUITE minbase + python3" \
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
  # the package downloads go through this machine's intercepting proxy: its CA bundle is the build secret
  # "build-ca", mounted for the install RUN of scripts/image/Dockerfile.j2 only (no layer keeps it)
  secret=()
  if [ -s "$CA_BUNDLE" ]; then secret=(--opt "secret=id=build-ca,src=$CA_BUNDLE"); fi
  log "bentoml containerize $BENTO_TAG -t $TAG (buildah, chroot isolation, ${secret[*]:-no CA secret}; log: $STATE/containerize.log)"
  # bentoml copies the Bento into a temporary build context and reads the Dockerfile template from there, refusing a
  # path outside the working directory or under a hidden folder (such as .cache/): a temp folder under build/
  ctx_tmp="$REPO/build/containerize-tmp"
  rm -rf "$ctx_tmp" && mkdir -p "$ctx_tmp"
  (cd "$REPO" && TMPDIR="$ctx_tmp" "$BENTOML" containerize "$BENTO_TAG" --backend buildah --opt isolation=chroot \
     "${secret[@]}" -t "$TAG") > "$STATE/containerize.log" 2>&1 \
    || { tail -40 "$STATE/containerize.log" >&2; rm -rf "$ctx_tmp"; die "bentoml containerize failed"; }
  rm -rf "$ctx_tmp"
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
  # what the image holds (before anything runs in it): no build-host CA, no torch, compilers or uv; sizes
  set +e
  "$PY" "$REPO/scripts/image/inspect_image.py" "$(buildah mount "$SMOKE_NAME")" --host-ca "$CA_BUNDLE" \
    --env-json "$(buildah inspect --type container "$SMOKE_NAME" \
                  | "$PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["OCIv1"]["config"].get("Env") or []))')" \
    | tee "$STATE/image-content.txt"
  inspect_rc=${PIPESTATUS[0]}
  set -e
  buildah umount "$SMOKE_NAME" >/dev/null
  log "buildah run $SMOKE_NAME: $entry serve --host 127.0.0.1 --port $port (log: $STATE/smoke-serve.log)"
  buildah run --isolation chroot --network host --env "$SMOKE_MARK" "$SMOKE_NAME" -- "$entry" serve --host 127.0.0.1 --port "$port" \
    > "$STATE/smoke-serve.log" 2>&1 &
  RUN_PID=$!
  set +e
  "$PY" "$REPO/scripts/image/smoke_score.py" --url "http://127.0.0.1:$port" --essays "$REPO/examples/essays.csv" \
    --pid "$RUN_PID" --wait "${ESSAYSCORE_SMOKE_WAIT:-600}" | tee "$STATE/smoke-result.txt"
  smoke_rc=${PIPESTATUS[0]}
  set -e
  # who the server runs as inside the container: the uids of every process carrying the marker (never 0)
  uids="$(for p in $(container_pids); do awk '/^Uid:/ {print $2}' "/proc/$p/status" 2>/dev/null; done | sort -u | tr '\n' ' ')"
  echo "SERVER_UIDS ${uids:-none}"
  case " $uids " in *" 0 "*) log "ERROR: a server process in the container runs as root (uid 0)"; smoke_rc=1 ;; esac
  [ -n "${uids// /}" ] || { log "ERROR: no server process found in the container"; smoke_rc=1; }
  # resident memory of each process after the scored request; the worker is the one that loaded the model
  worker_rss=0
  for p in $(container_pids); do
    rss_kb="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)"
    cmd="$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-110 || true)"
    [ -n "$rss_kb" ] || continue
    echo "PROCESS pid=$p rss_mb=$(( rss_kb / 1024 )) cmd=$cmd"
    case "$cmd" in *_bentoml_impl.worker*) [ $(( rss_kb / 1024 )) -gt "$worker_rss" ] && worker_rss=$(( rss_kb / 1024 )) ;; esac
  done
  echo "WORKER_RSS_MB $worker_rss (target <= 600)"
  [ "$inspect_rc" = 0 ] || { log "ERROR: the image content check failed (CA_CHECK / IMAGE_CONTENT above)"; smoke_rc=1; }
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
