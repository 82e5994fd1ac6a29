#!/usr/bin/env bash
# Base images for the Dockerfile and compose.yaml on a machine that reaches no image registry.
#
#   sudo deploy/local-images.sh
#
# For each image the Dockerfile (FROM) and compose.yaml (image:) name: if Docker already has it,
# nothing is done; if `docker pull` gets it, the real image is used; only otherwise is a stand-in
# built from Debian packages and tagged with the same name:
#   python:3.11-slim          Debian's python3.11 (+ venv, python-is-python3), with this machine's
#                             CA bundle and pip index settings, so pip inside `docker build`
#                             reaches the package index the way the host's pip does;
#   postgres:*                Debian's postgresql, behind an entrypoint with the official image's
#                             contract (POSTGRES_USER/PASSWORD/DB, /docker-entrypoint-initdb.d);
#   */pgbouncer:*             Debian's pgbouncer, configured from edoburu/pgbouncer's variables
#                             (DB_HOST, DB_NAME, DB_USER, DB_PASSWORD, AUTH_TYPE, POOL_MODE, ...).
# They all start from a minimal root file system made by debootstrap from the Debian mirror this
# machine's apt uses; nothing else is downloaded but Debian packages. Each stand-in carries the
# label org.quoteapi.stand-in=true (`docker image ls --filter label=org.quoteapi.stand-in`).
# Needs root, docker and debootstrap. STANDIN_REBUILD=1 rebuilds stand-ins that already exist.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=quoteapi-standin/debian
LABEL=org.quoteapi.stand-in=true
here=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say() { printf 'local-images: %s\n' "$*" >&2; }

# The images the project names, deduplicated: FROM lines, then compose's image: lines.
wanted_images() {
  {
    awk 'toupper($1) == "FROM" { print $2 }' Dockerfile
    sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]#]*\).*/\1/p' compose.yaml
  } | awk '!seen[$0]++'
}

is_stand_in() {
  [ "$(docker image inspect -f '{{index .Config.Labels "org.quoteapi.stand-in"}}' "$1" 2>/dev/null)" = true ]
}

# The Debian mirror this machine's apt uses (one-line or deb822 sources), not the security one.
debian_mirror() {
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    2>/dev/null || true; } | awk '/^deb / { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }
                       /^URIs:/ { for (i = 2; i <= NF; i++) print $i }' |
    grep -E '/debian/?$' | head -n 1
}

# The root file system every stand-in starts from.
make_base() {
  local suite mirror root
  if docker image inspect "$BASE:latest" >/dev/null 2>&1 && [ -z "${STANDIN_REBUILD:-}" ]; then
    return
  fi
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { say "no Debian mirror in /etc/apt/sources.list*"; exit 1; }
  root="$work/rootfs"
  say "debootstrap $suite (minbase) from this machine's apt mirror"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    exit 1
  }
  # apt inside the images uses the same mirror and the host's Acquire settings (a snapshot
  # mirror needs Check-Valid-Until false; a proxy would be set here too).
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" \
    >"$root/etc/apt/sources.list"
  apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' \
    >"$root/etc/apt/apt.conf.d/90host" || true
  cat >"$root/etc/apt/apt.conf.d/91slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  tar -C "$root" -c . | docker import -c "LABEL $LABEL" -c 'CMD ["bash"]' - "$BASE:latest" >/dev/null
}

# pip settings for the image, as the host's pip reaches the index: its index URLs (http and
# https only: a file:// index or find-links folder is not in the image) and the CA bundle.
pip_conf() {
  local index extra hosts
  index=${PIP_INDEX_URL:-$(pip3 config get global.index-url 2>/dev/null || true)}
  extra=${PIP_EXTRA_INDEX_URL:-$(pip3 config get global.extra-index-url 2>/dev/null || true)}
  hosts=${PIP_TRUSTED_HOST:-$(pip3 config get global.trusted-host 2>/dev/null || true)}
  echo "[global]"
  echo "cert = /etc/ssl/certs/ca-certificates.crt"
  case "$index" in http://* | https://*) echo "index-url = $index" ;; esac
  extra=$(printf '%s\n' $extra | grep -E '^https?://' | tr '\n' ' ' || true)
  [ -z "${extra// /}" ] || echo "extra-index-url = $extra"
  [ -z "$hosts" ] || echo "trusted-host = $hosts"
}

# Its output only when it fails (the legacy builder warns on every build).
build_image() {
  docker build -q --network host -t "$1" "$2" >"$work/build.log" 2>&1 || {
    cat "$work/build.log" >&2
    exit 1
  }
}

build_python() {
  local dir="$work/python"
  mkdir -p "$dir"
  cp /etc/ssl/certs/ca-certificates.crt "$dir/"
  pip_conf >"$dir/pip.conf"
  cat >"$dir/Dockerfile" <<EOF
FROM $BASE:latest
RUN apt-get update && apt-get install -y python3.11 python3.11-venv python-is-python3 \\
      ca-certificates && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pip.conf /etc/pip.conf
CMD ["python3"]
EOF
  build_image "$1" "$dir"
}

build_postgres() {
  local dir="$work/postgres"
  mkdir -p "$dir"
  cp "$here/deploy/standin/postgres-entrypoint.sh" "$dir/entrypoint.sh"
  cat >"$dir/Dockerfile" <<EOF
FROM $BASE:latest
RUN apt-get update && apt-get install -y postgresql && rm -rf /var/lib/apt/lists/* \\
 && ln -s /usr/lib/postgresql/*/bin /usr/lib/postgresql/bin \\
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \\
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/bin:\$PATH PGDATA=/var/lib/postgresql/data
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 5432
STOPSIGNAL SIGINT
CMD ["postgres"]
EOF
  build_image "$1" "$dir"
}

build_pgbouncer() {
  local dir="$work/pgbouncer"
  mkdir -p "$dir"
  cp "$here/deploy/standin/pgbouncer-entrypoint.sh" "$dir/entrypoint.sh"
  cat >"$dir/Dockerfile" <<EOF
FROM $BASE:latest
RUN apt-get update && apt-get install -y pgbouncer postgresql-client \\
 && rm -rf /var/lib/apt/lists/* && mkdir -p /etc/pgbouncer && chown postgres /etc/pgbouncer
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER postgres
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 5432
CMD ["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]
EOF
  build_image "$1" "$dir"
}

for image in $(wanted_images); do
  if docker image inspect "$image" >/dev/null 2>&1 && { [ -z "${STANDIN_REBUILD:-}" ] || ! is_stand_in "$image"; }; then
    say "$image: present$(is_stand_in "$image" && echo ' (stand-in)')"
    continue
  fi
  if [ -z "${STANDIN_REBUILD:-}" ] && timeout 120 docker pull -q "$image" >/dev/null 2>&1; then
    say "$image: pulled from the registry"
    continue
  fi
  case "$image" in
    python:*) builder=build_python ;;
    postgres:*) builder=build_postgres ;;
    *pgbouncer:*) builder=build_pgbouncer ;;
    *) say "$image: cannot be pulled and no stand-in is known for it"; exit 1 ;;
  esac
  make_base
  started=$SECONDS
  $builder "$image"
  say "$image: stand-in built from Debian packages in $((SECONDS - started)) s"
done
