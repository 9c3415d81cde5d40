#!/usr/bin/env bash
# lamina's main job on its embedded defaults: make a busybox root filesystem from the
# host's busybox-static, import it as an image, show it, save it as an OCI layout, read
# the layout back with skopeo, unpack it, and load it into a fresh root.
set -euo pipefail
cd "$(dirname "$0")/.."
LAMINA=(.venv/bin/lamina)
work=$(mktemp -d /tmp/lamina-demo.XXXXXX)
cleanup() {
    "${LAMINA[@]}" --root "$work/root" rm -f walk >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "make a busybox rootfs from /usr/bin/busybox"
.venv/bin/python -c "import sys; from lamina.image.bases import make_busybox_rootfs as m; m(sys.argv[1])" "$work/rootfs"
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
