#!/usr/bin/env bash
# lamina's main job on its embedded defaults: make a busybox root filesystem from the
# host's busybox-static, import it as an image, show it, save it as an OCI layout, read
# the layout back with skopeo, unpack it, run it, build the example image on it and run
# that, push it to lamina's own registry on loopback and pull it back into a fresh root.
set -euo pipefail
cd "$(dirname "$0")/.."
LAMINA=(.venv/bin/lamina)
work=$(mktemp -d /tmp/lamina-demo.XXXXXX)
registry_pid=
cleanup() {
    "${LAMINA[@]}" --root "$work/root" rm -f walk >/dev/null 2>&1 || true
    if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "make a busybox rootfs from /usr/bin/busybox"
.venv/bin/python -c "import sys; from lamina.image.bootstrap.busybox import make_busybox_rootfs as m; m(sys.argv[1])" "$work/rootfs"
echo "$(find "$work/rootfs" | wc -l) entries in $work/rootfs"

step "lamina import $work/rootfs -t demo/busybox:latest --change 'CMD [\"sh\"]'"
"${LAMINA[@]}" --root "$root" import "$work/rootfs" -t demo/busybox:latest --change 'CMD ["sh"]'

step "lamina images"
"${LAMINA[@]}" --root "$root" images

step "lamina history demo/busybox"
"${LAMINA[@]}" --root "$root" history demo/busybox

step "lamina save demo/busybox -o $work/oci --format oci-dir"
"${LAMINA[@]}" --root "$root" save demo/busybox -o "$work/oci" --format oci-dir
ls "$work/oci"
if command -v skopeo >/dev/null; then
    step "skopeo inspect oci:$work/oci:latest"
    skopeo inspect "oci:$work/oci:latest" | head -20
fi

step "lamina unpack demo/busybox $work/unpacked"
"${LAMINA[@]}" --root "$root" unpack demo/busybox "$work/unpacked"
"$work/unpacked/bin/busybox" echo "hello from the unpacked image"

step "lamina run --rm demo/busybox sh -c 'echo hello from \$(hostname); uname -sr'"
"${LAMINA[@]}" --root "$root" run --rm --hostname demo demo/busybox sh -c 'echo hello from $(hostname); uname -sr'

step "the seed's overlay walk-through: write, delete, modify; lamina diff; lamina commit"
"${LAMINA[@]}" --root "$root" run --name walk demo/busybox sh -c \
    'echo new > /in_upper.txt; rm /etc/group; echo extra >> /etc/passwd'
"${LAMINA[@]}" --root "$root" diff walk
"${LAMINA[@]}" --root "$root" commit -m "seed walk-through" walk demo/busybox:walked
"${LAMINA[@]}" --root "$root" rm walk
"${LAMINA[@]}" --root "$root" history demo/busybox:walked
"${LAMINA[@]}" --root "$root" run --rm demo/busybox:walked cat /in_upper.txt

step "lamina save (docker format) and load into a fresh root"
"${LAMINA[@]}" --root "$root" save demo/busybox -o "$work/busybox.tar"
"${LAMINA[@]}" --root "$work/root2" load -i "$work/busybox.tar"
"${LAMINA[@]}" --root "$work/root2" images

step "lamina build -t demo/hello examples/hello (on the busybox image)"
"${LAMINA[@]}" --root "$root" build --progress plain --build-arg BASE=demo/busybox -t demo/hello examples/hello
"${LAMINA[@]}" --root "$root" run --rm demo/hello
step "the same build again: every step cached"
"${LAMINA[@]}" --root "$root" build --progress plain --build-arg BASE=demo/busybox -t demo/hello examples/hello

step "lamina registry serve (embedded, file-backed, on loopback)"
"${LAMINA[@]}" --root "$root" registry serve --addr 127.0.0.1:0 --storage "$work/registry" 2>"$work/registry.log" &
registry_pid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$work/registry.log" 2>/dev/null && break
    sleep 0.1
done
url=$(sed -n 's/.*listening on http:\/\///p' "$work/registry.log" | head -1)
echo "registry at $url"

step "lamina push demo/hello $url/demo/hello:1"
"${LAMINA[@]}" --root "$root" push demo/hello "$url/demo/hello:1"
step "lamina push demo/busybox $url/demo/busybox:1 (its layer is mounted from demo/hello, not sent again)"
"${LAMINA[@]}" --root "$root" push demo/busybox "$url/demo/busybox:1"

step "lamina pull $url/demo/hello:1 into a fresh root, and run it"
"${LAMINA[@]}" --root "$work/root3" pull "$url/demo/hello:1"
"${LAMINA[@]}" --root "$work/root3" images
"${LAMINA[@]}" --root "$work/root3" run --rm "$url/demo/hello:1"
