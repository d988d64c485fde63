#!/usr/bin/env bash
# Build tfod's images (export, train, test) from docker/Dockerfile with version labels.
#
#   scripts/build_images.sh [TARGET...]     # default: export train test
#
# Tags: tfod-<target>:<version> and tfod-<target>:latest. Environment: TFOD_IMAGE_PREFIX
# (default "tfod-"; e.g. ghcr.io/you/tfod- for a registry), BUILD_ARGS (extra `docker build` args).
# Uses BuildKit when the docker CLI has buildx, the classic builder otherwise (both build this
# Dockerfile). If the base image is missing and cannot be pulled, run scripts/make_base_image.sh.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
prefix=${TFOD_IMAGE_PREFIX:-tfod-}
targets=("$@")
((${#targets[@]})) || targets=(export train test)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The commit's time, not now: rebuilding an unchanged tree then reuses every cached layer.
created=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
if docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=1
else
    export DOCKER_BUILDKIT=0  # a CLI without buildx: the classic builder
fi

build_args=(--build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg CREATED="$created")
if [[ $DOCKER_BUILDKIT == 0 ]]; then
    # The classic builder keeps each stage that no image is built on (protos, package) as an
    # untagged <none> image. Tagged here, they are named and reused as cache; superseded ones
    # (after a code change) are removed at the end.
    for stage in protos package; do
        # shellcheck disable=SC2086
        docker build -q -f docker/Dockerfile --target "$stage" "${build_args[@]}" ${BUILD_ARGS:-} \
            -t "${prefix}stage-$stage:latest" . >/dev/null
    done
fi

for target in "${targets[@]}"; do
    start=$SECONDS
    echo "build_images: $target (DOCKER_BUILDKIT=$DOCKER_BUILDKIT)"
    # shellcheck disable=SC2086
    docker build -f docker/Dockerfile --target "$target" "${build_args[@]}" ${BUILD_ARGS:-} \
        -t "$prefix$target:$version" -t "$prefix$target:latest" .
    size=$(docker image inspect "$prefix$target:latest" --format '{{.Size}}')
    echo "build_images: $prefix$target:$version built in $((SECONDS - start)) s, $((size / 1000000)) MB"
done
# What a build of other sources left untagged: its stage images (BuildKit keeps none) and the
# images the new ones replaced under the same tags.
for label in org.tfod.stage org.opencontainers.image.title=tfod; do
    docker image prune -f --filter "label=$label" >/dev/null
done
