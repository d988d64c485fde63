#!/usr/bin/env bash
# Make the Dockerfile's public base image locally, for machines that cannot pull from a registry.
# (Where the registry answers, it simply pulls the image.)
#
#   sudo scripts/make_base_image.sh            # the tag docker/Dockerfile's BASE_IMAGE names
#   sudo scripts/make_base_image.sh IMAGE:TAG  # any other tag
#
# It debootstraps a minimal Debian rootfs from the Debian mirror this machine already uses,
# slims it the way the official image is slimmed, and `docker import`s it under the same
# name:tag, so the very same Dockerfile builds here and for users (who simply pull it).
# This machine's extra CA certificates (an egress proxy's, say) are added to the image's trust
# store, so pip and uv inside the build reach the package index as they do on the host.
# Environment: MIRROR (default: the host's first deb.debian.org-style URI), SUITE (bookworm),
# FORCE=1 to rebuild an existing image.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-$(sed -n 's/^ARG BASE_IMAGE=//p' "$root/docker/Dockerfile" | head -n 1)}
suite=${SUITE:-bookworm}
host_mirror=$(sed -n 's/^URIs: *\(.*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 || true)
mirror=${MIRROR:-${host_mirror:-http://deb.debian.org/debian}}

die() { echo "make_base_image: $*" >&2; exit 1; }
[[ -n $image ]] || die "no image name given and no 'ARG BASE_IMAGE=' in docker/Dockerfile"
command -v docker >/dev/null || die "docker CLI not found"
docker version >/dev/null 2>&1 || die "the Docker Engine does not answer (is the daemon running, may you use it?)"
if docker image inspect "$image" >/dev/null 2>&1 && [[ -z ${FORCE:-} ]]; then
    echo "make_base_image: $image already exists (FORCE=1 rebuilds it)"
    exit 0
fi
if timeout 120 docker pull "$image" >/dev/null 2>&1; then
    echo "make_base_image: pulled $image from its registry; nothing to build"
    exit 0
fi
echo "make_base_image: $image cannot be pulled here; building it with debootstrap"
[[ $(id -u) == 0 ]] || die "debootstrap needs root: run it with sudo"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"

rootfs=$(mktemp -d /var/tmp/tfod-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "make_base_image: debootstrap $suite from $mirror (a few minutes)"
debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; die "debootstrap failed (full log: $rootfs.log)"; }
rm -f "$rootfs.log"

# The official image's apt sources: the suite, its updates and its security archive.
security=${mirror%/debian}/debian-security
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# This machine's extra certificate authorities.
extra_ca=0
for crt in /usr/local/share/ca-certificates/*.crt; do
    [[ -e $crt ]] || continue
    cp "$crt" "$rootfs/usr/local/share/ca-certificates/"
    extra_ca=$((extra_ca + 1))
done
if ((extra_ca)); then
    chroot "$rootfs" update-ca-certificates >/dev/null
fi

# Slim it like the official -slim images: no docs, man pages, locales or apt lists.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log
mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/docker"

version=$(cat "$rootfs/etc/debian_version")
tag=${image##*:}
if [[ $tag =~ ^[0-9]+\.[0-9]+ && $tag != "$version"* ]]; then
    echo "make_base_image: warning: the mirror serves Debian $version, the tag says $tag;" \
        "consider moving BASE_IMAGE in docker/Dockerfile to the current point release" >&2
fi

tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'CMD ["bash"]' \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --message "debootstrap $suite ($version) from $mirror by tfod scripts/make_base_image.sh" \
    - "$image" >/dev/null
echo "make_base_image: $image built (Debian $version, $extra_ca extra CA certificate(s))"
docker image ls "$image"
