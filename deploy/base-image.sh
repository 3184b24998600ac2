#!/usr/bin/env bash
# Builds the local base image localhost/debian-python:bookworm (Debian bookworm with python3 and
# venv), for machines that reach package registries but no container registry, so that
# `FROM python:3.11-slim` cannot be pulled (see CONTAINERS.md). Does nothing when the image exists,
# unless --force. The Debian mirror is read from this host's apt sources each time, never written
# into the repository: each machine names its own.
set -euo pipefail

image="${BASE_IMAGE:-localhost/debian-python:bookworm}"
if [ "${1:-}" != "--force" ] && podman image exists "$image"; then
  echo "base image $image exists (--force rebuilds it)"
  exit 0
fi

# The first Debian (not security) mirror of the host: deb822 "URIs:" lines, or one-line "deb URL".
mirror="$(
  grep -hs -e '^URIs:' -e '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list.d/*.list | grep -o 'https\?://[^ ]*' | grep -v -- '-security' | head -n 1 || true
)"
if [ -z "$mirror" ]; then
  echo "no Debian mirror found in /etc/apt/sources.list*" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}

# TLS to the registries is re-signed on these machines: the image must trust the same extra CAs
# as the host, or pip and apt inside builds fail.
shopt -s nullglob
cas=(/usr/local/share/ca-certificates/*.crt)
if [ "${#cas[@]}" -gt 0 ]; then
  cp "${cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
fi

# Smaller image: no apt lists, caches or docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*

tar -C "$rootfs" --numeric-owner -cf "$work/base.tar" .
podman import --quiet --change 'ENV LANG=C.UTF-8' "$work/base.tar" "$image" >/dev/null
echo "built base image $image"
