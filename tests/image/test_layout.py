"""OCI image layout in and out (lamina.image.archives.oci_layout): skopeo, umoci and ctr agree."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from helpers.archives import BuiltImage, Containerd, build_image, build_index, run, skopeo
from lamina.errors import (
    DigestMismatch,
    InvalidArgument,
    InvalidFormat,
    LimitExceeded,
    NotFound,
    Unsafe,
    Unsupported,
)
from lamina.image.archives.oci_layout import export_oci_layout, image_name, import_oci_layout
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest
from lamina.oci.reference import Reference
from lamina.store.local import LocalStore

REF_NAME = "org.opencontainers.image.ref.name"
CTR_NAME = "io.containerd.image.name"
TarMaker = Callable[[Sequence[tuple[str, bytes]]], bytes]


def index_of(layout: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((layout / "index.json").read_text())


def blobs_of(store: LocalStore, image: BuiltImage) -> list[Digest]:
    return [image.descriptor.digest, image.manifest.config.digest] + [
        layer.digest for layer in image.manifest.layers
    ]


def store_state(store: LocalStore) -> tuple[dict[str, str], set[Digest]]:
    refs = {name: str(d.digest) for name, d in store.list_refs().items()}
    return refs, {b.digest for b in store.iter_blobs()}


# ---------------------------------------------------------------------------- export


def test_export_dir_structure(store: LocalStore, image: BuiltImage, tmp_path: Path) -> None:
    dest = tmp_path / "layout"
    export_oci_layout(store, [(image.ref, image.descriptor)], str(dest), as_tar=False)
    assert json.loads((dest / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = index_of(dest)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    [entry] = index["manifests"]
    assert entry["digest"] == str(image.descriptor.digest)
    assert entry["annotations"] == {REF_NAME: "1", CTR_NAME: "example.com/test/app:1"}
    # Canonical JSON: what lamina writes is byte-stable.
    assert (dest / "index.json").read_bytes() == json.dumps(
        index, sort_keys=True, separators=(",", ":")
    ).encode()
    names = sorted(p.name for p in (dest / "blobs" / "sha256").iterdir())
    assert names == sorted(d.encoded for d in blobs_of(store, image))
    for name in names:
        assert hashlib.sha256((dest / "blobs" / "sha256" / name).read_bytes()).hexdigest() == name


@pytest.mark.interop
def test_export_dir_read_by_skopeo_and_umoci(
    store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    dest = tmp_path / "layout"
    export_oci_layout(store, [(image.ref, image.descriptor)], str(dest), as_tar=False)
    info = json.loads(skopeo("inspect", f"oci:{dest}:1"))
    assert info["Digest"] == str(image.descriptor.digest)
    assert info["Layers"] == [str(layer.digest) for layer in image.manifest.layers]
    copy = tmp_path / "copy"
    skopeo("copy", f"oci:{dest}:1", f"oci:{copy}:1")
    assert index_of(copy)["manifests"][0]["digest"] == str(image.descriptor.digest)
    assert run("umoci", "ls", "--layout", dest).split() == ["1"]
    stat = run("umoci", "stat", "--image", f"{dest}:1")
    for layer in image.manifest.layers:
        assert str(layer.digest) in stat


@pytest.mark.interop
def test_export_tar_read_by_skopeo(store: LocalStore, image: BuiltImage, tmp_path: Path) -> None:
    dest = tmp_path / "image.tar"
    export_oci_layout(store, [(image.ref, image.descriptor)], str(dest), as_tar=True)
    info = json.loads(skopeo("inspect", f"oci-archive:{dest}"))
    assert info["Digest"] == str(image.descriptor.digest)
    info = json.loads(skopeo("inspect", f"oci-archive:{dest}:1"))
    assert info["Digest"] == str(image.descriptor.digest)


@pytest.mark.interop
def test_export_tar_imported_by_ctr(
    store: LocalStore, tmp_path: Path, containerd: Containerd
) -> None:
    img = build_image(store, "localhost:5000/lamina/oci-tar:v1")
    dest = tmp_path / "image.tar"
    export_oci_layout(store, [(img.ref, img.descriptor)], str(dest), as_tar=True)
    containerd.ctr("images", "import", dest)
    assert "localhost:5000/lamina/oci-tar:v1" in containerd.image_names()


def test_export_tar_is_deterministic_and_sorted(
    store: LocalStore, image: BuiltImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = tmp_path / "a.tar", tmp_path / "b.tar", tmp_path / "c.tar"
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    export_oci_layout(store, [(image.ref, image.descriptor)], str(a), as_tar=True)
    export_oci_layout(store, [(image.ref, image.descriptor)], str(b), as_tar=True)
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[-2:] == ["index.json", "oci-layout"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and not m.uname for m in members)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    export_oci_layout(store, [(image.ref, image.descriptor)], str(c), as_tar=True)
    with tarfile.open(c) as tf:
        assert {m.mtime for m in tf.getmembers()} == {1700000000}


def test_export_to_stdout(store: LocalStore, image: BuiltImage, tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from lamina.store.local import LocalStore\n"
        "from lamina.image.archives.oci_layout import export_oci_layout\n"
        "from lamina.oci.reference import Reference\n"
        "s = LocalStore(sys.argv[1])\n"
        "ref = Reference.parse(sys.argv[2])\n"
        "export_oci_layout(s, [(ref, s.get_ref(str(ref)))], '-', as_tar=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, store.root, str(image.ref)],
        capture_output=True,
        check=True,
    ).stdout
    file = tmp_path / "file.tar"
    export_oci_layout(store, [(image.ref, image.descriptor)], str(file), as_tar=True)
    assert out == file.read_bytes()


def test_export_adds_to_existing_layout(store: LocalStore, tmp_path: Path) -> None:
    one = build_image(store, "example.com/a:1", [{"a": b"a"}])
    two = build_image(store, "example.com/b:2", [{"b": b"b"}])
    again = build_image(store, "example.com/c:1", [{"c": b"c"}])
    dest = tmp_path / "layout"
    export_oci_layout(store, [(one.ref, one.descriptor)], str(dest), as_tar=False)
    export_oci_layout(store, [(two.ref, two.descriptor)], str(dest), as_tar=False)
    tags = {m["annotations"][REF_NAME]: m["digest"] for m in index_of(dest)["manifests"]}
    assert tags == {"1": str(one.descriptor.digest), "2": str(two.descriptor.digest)}
    # Same ref.name replaces the entry (skopeo does the same); old blobs stay.
    export_oci_layout(store, [(again.ref, again.descriptor)], str(dest), as_tar=False)
    tags = {m["annotations"][REF_NAME]: m["digest"] for m in index_of(dest)["manifests"]}
    assert tags == {"1": str(again.descriptor.digest), "2": str(two.descriptor.digest)}
    assert (dest / "blobs" / "sha256" / one.descriptor.digest.encoded).exists()


@pytest.mark.interop
def test_export_adds_to_umoci_layout(store: LocalStore, image: BuiltImage, tmp_path: Path) -> None:
    dest = tmp_path / "layout"
    run("umoci", "init", "--layout", dest)
    run("umoci", "new", "--image", f"{dest}:base")
    export_oci_layout(store, [(image.ref, image.descriptor)], str(dest), as_tar=False)
    assert sorted(run("umoci", "ls", "--layout", dest).split()) == ["1", "base"]


def test_export_refuses_non_layout_dir(
    store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "something").write_text("x")
    with pytest.raises(InvalidArgument, match="not an OCI image layout"):
        export_oci_layout(store, [(image.ref, image.descriptor)], str(dest), as_tar=False)


def test_export_missing_blob_writes_nothing(
    store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    store.delete_blob(image.manifest.layers[1].digest)
    dest = tmp_path / "out.tar"
    with pytest.raises(NotFound, match=image.manifest.layers[1].digest.encoded):
        export_oci_layout(store, [(image.ref, image.descriptor)], str(dest), as_tar=True)
    assert not dest.exists()
    assert os.listdir(tmp_path) == ["store"]


def test_export_detects_a_corrupt_store_blob(
    store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    layer = image.manifest.layers[0]
    path = store.blob_path(layer.digest)
    os.chmod(path, 0o644)
    data = bytearray(Path(path).read_bytes())
    data[-1] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    dest = tmp_path / "out.tar"
    with pytest.raises(DigestMismatch):
        export_oci_layout(store, [(image.ref, image.descriptor)], str(dest), as_tar=True)
    assert not dest.exists()


# ---------------------------------------------------------------------------- import


@pytest.mark.parametrize("as_tar", [False, True])
def test_round_trip(
    store: LocalStore, other_store: LocalStore, image: BuiltImage, tmp_path: Path, as_tar: bool
) -> None:
    dest = tmp_path / ("layout.tar" if as_tar else "layout")
    export_oci_layout(store, [(image.ref, image.descriptor)], str(dest), as_tar=as_tar)
    [loaded] = import_oci_layout(other_store, str(dest))
    assert loaded.name == "example.com/test/app:1"
    assert loaded.descriptor.digest == image.descriptor.digest
    assert other_store.get_ref("example.com/test/app:1").digest == image.descriptor.digest
    for digest in blobs_of(store, image):
        assert other_store.read_blob(digest, 1 << 20) == store.read_blob(digest, 1 << 20)


def test_round_trip_several_images_and_unnamed(
    store: LocalStore, other_store: LocalStore, tmp_path: Path
) -> None:
    one = build_image(store, "busybox", [{"a": b"a"}])
    two = build_image(store, "example.com/x/y:2", [{"b": b"b"}], compression="zstd")
    dest = tmp_path / "layout.tar"
    images = [(one.ref, one.descriptor), (two.ref, two.descriptor), (None, two.descriptor)]
    export_oci_layout(store, images, str(dest), as_tar=True)
    loaded = import_oci_layout(other_store, str(dest))
    assert [(x.name, x.descriptor.digest) for x in loaded] == [
        ("docker.io/library/busybox:latest", one.descriptor.digest),
        ("example.com/x/y:2", two.descriptor.digest),
        (None, two.descriptor.digest),
    ]
    assert set(other_store.list_refs()) == {"docker.io/library/busybox:latest", "example.com/x/y:2"}


def test_import_tar_in_any_order(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
) -> None:
    """index.json and oci-layout before the blobs, blobs in reverse order."""
    layout = tmp_path / "layout"
    export_oci_layout(store, [(image.ref, image.descriptor)], str(layout), as_tar=False)
    blobs = sorted((layout / "blobs" / "sha256").iterdir(), reverse=True)
    members = [("index.json", (layout / "index.json").read_bytes())]
    members += [(f"blobs/sha256/{p.name}", p.read_bytes()) for p in blobs]
    members += [("oci-layout", (layout / "oci-layout").read_bytes())]
    src = tmp_path / "shuffled.tar"
    src.write_bytes(tar_bytes(members))
    [loaded] = import_oci_layout(other_store, str(src))
    assert loaded.descriptor.digest == image.descriptor.digest


@pytest.mark.interop
def test_import_skopeo_written_layout(
    store: LocalStore, other_store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    src = tmp_path / "lamina"
    export_oci_layout(store, [(image.ref, image.descriptor)], str(src), as_tar=False)
    written = tmp_path / "skopeo"
    # Re-compressing with zstd makes skopeo write new layer blobs and a new manifest.
    skopeo("copy", "--dest-compress-format", "zstd", f"oci:{src}:1", f"oci:{written}:v2")
    [loaded] = import_oci_layout(other_store, str(written), ref_name="example.com/skopeo/app")
    assert loaded.name == "example.com/skopeo/app:v2"
    digest = index_of(written)["manifests"][0]["digest"]
    assert str(loaded.descriptor.digest) == digest
    archive = tmp_path / "skopeo.tar"
    skopeo("copy", f"oci:{src}:1", f"oci-archive:{archive}:v3")
    [loaded] = import_oci_layout(other_store, str(archive))
    assert loaded.name is None  # a tag alone, and no ref_name: unnamed, as docker load does
    assert loaded.descriptor.digest == image.descriptor.digest


@pytest.mark.interop
def test_import_umoci_layout(other_store: LocalStore, tmp_path: Path) -> None:
    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:t")
    run("umoci", "unpack", "--image", f"{layout}:t", bundle)
    (bundle / "rootfs" / "hello").write_text("hi\n")
    run("umoci", "repack", "--image", f"{layout}:t", bundle)
    [loaded] = import_oci_layout(other_store, str(layout), ref_name="localhost/umoci")
    assert loaded.name == "localhost/umoci:t"
    assert str(loaded.descriptor.digest) == index_of(layout)["manifests"][0]["digest"]


def test_image_name_rules() -> None:
    assert image_name({CTR_NAME: "busybox", REF_NAME: "x"}) == "docker.io/library/busybox:latest"
    assert image_name({REF_NAME: "busybox:1"}) == "docker.io/library/busybox:1"
    assert image_name({REF_NAME: "example.com/app"}) == "example.com/app:latest"
    assert image_name({REF_NAME: "localhost:5000/a:b"}) == "localhost:5000/a:b"
    assert image_name({REF_NAME: "v1.0"}) is None
    assert image_name({REF_NAME: "v1.0"}, "example.com/app") == "example.com/app:v1.0"
    assert image_name({REF_NAME: "v1.0"}, "example.com/app:old") == "example.com/app:v1.0"
    assert image_name({REF_NAME: "Not/A:Ref!"}) is None
    assert image_name({}) is None
    assert image_name({}, "example.com/app") is None
    with pytest.raises(InvalidFormat, match="not a valid reference"):
        image_name({CTR_NAME: "has spaces:in it"})


# ---------------------------------------------------------------------------- hostile input


def _layout_files(store: LocalStore, image: BuiltImage, tmp_path: Path) -> dict[str, bytes]:
    layout = tmp_path / "source"
    export_oci_layout(store, [(image.ref, image.descriptor)], str(layout), as_tar=False)
    return {
        str(p.relative_to(layout)): p.read_bytes() for p in sorted(layout.rglob("*")) if p.is_file()
    }


def _write_source(files: dict[str, bytes], dest: Path, as_tar: bool, tar_bytes: TarMaker) -> str:
    if as_tar:
        path = dest.with_suffix(".tar")
        path.write_bytes(tar_bytes(sorted(files.items())))
        return str(path)
    for name, data in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)
    return str(dest)


@pytest.mark.parametrize("as_tar", [False, True])
def test_blob_not_matching_its_name(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
    as_tar: bool,
) -> None:
    files = _layout_files(store, image, tmp_path)
    bad = image.manifest.layers[0].digest
    blob = bytearray(files[f"blobs/sha256/{bad.encoded}"])
    blob[-1] ^= 0x01  # same size, different content
    files[f"blobs/sha256/{bad.encoded}"] = bytes(blob)
    src = _write_source(files, tmp_path / "bad", as_tar, tar_bytes)
    before = store_state(other_store)
    with pytest.raises(DigestMismatch):
        import_oci_layout(other_store, src)
    refs, blobs = store_state(other_store)
    assert refs == before[0] == {}
    assert bad not in blobs
    for digest in blobs:  # whatever was admitted is verified content
        with other_store.open_blob(digest) as r:
            r.read()


@pytest.mark.parametrize("as_tar", [False, True])
@pytest.mark.parametrize("which", ["layer", "config", "manifest"])
def test_missing_blob(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
    as_tar: bool,
    which: str,
) -> None:
    files = _layout_files(store, image, tmp_path)
    missing = {
        "layer": image.manifest.layers[1].digest,
        "config": image.manifest.config.digest,
        "manifest": image.descriptor.digest,
    }[which]
    del files[f"blobs/sha256/{missing.encoded}"]
    src = _write_source(files, tmp_path / "incomplete", as_tar, tar_bytes)
    with pytest.raises(NotFound, match=missing.encoded):
        import_oci_layout(other_store, src)
    assert other_store.list_refs() == {}
    assert not other_store.has(missing)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, InvalidFormat),
        (b'{"imageLayoutVersion": "2.0.0"}', Unsupported),
        (b"{}", InvalidFormat),
        (b"not json", InvalidFormat),
    ],
)
def test_bad_oci_layout_file(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
    content: bytes | None,
    error: type[Exception],
) -> None:
    files = _layout_files(store, image, tmp_path)
    if content is None:
        del files["oci-layout"]
    else:
        files["oci-layout"] = content
    for as_tar in (False, True):
        src = _write_source(files, tmp_path / f"src{as_tar}", as_tar, tar_bytes)
        with pytest.raises(error) as info:
            import_oci_layout(other_store, src)
        assert "oci-layout" in str(info.value) or "layout" in str(info.value)
    assert other_store.list_refs() == {}


def test_index_json_must_be_an_index(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
) -> None:
    files = _layout_files(store, image, tmp_path)
    files["index.json"] = files[f"blobs/sha256/{image.descriptor.digest.encoded}"]
    src = _write_source(files, tmp_path / "confused", False, tar_bytes)
    with pytest.raises(InvalidFormat, match=r"index\.json"):
        import_oci_layout(other_store, src)


def test_oversized_index_json(other_store: LocalStore, tmp_path: Path, tar_bytes: TarMaker) -> None:
    big = b'{"schemaVersion":2,"manifests":[],"pad":"' + b"x" * (5 << 20) + b'"}'
    src = tmp_path / "big.tar"
    src.write_bytes(
        tar_bytes([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", big)])
    )
    with pytest.raises(LimitExceeded):
        import_oci_layout(other_store, str(src))


def test_blob_symlink_in_layout_dir_is_refused(
    store: LocalStore, other_store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    export_oci_layout(store, [(image.ref, image.descriptor)], str(layout), as_tar=False)
    config = layout / "blobs" / "sha256" / image.manifest.config.digest.encoded
    target = tmp_path / "elsewhere"
    target.write_bytes(config.read_bytes())
    config.unlink()
    config.symlink_to(target)
    with pytest.raises(Unsafe, match="symlink"):
        import_oci_layout(other_store, str(layout))
    assert other_store.list_refs() == {}


def test_import_tar_from_stdin(
    store: LocalStore, other_store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    src = tmp_path / "layout.tar"
    export_oci_layout(store, [(image.ref, image.descriptor)], str(src), as_tar=True)
    script = (
        "import sys\n"
        "from lamina.store.local import LocalStore\n"
        "from lamina.image.archives.oci_layout import import_oci_layout\n"
        "print(import_oci_layout(LocalStore(sys.argv[1]), '-')[0].name)\n"
    )
    with src.open("rb") as stdin:
        out = subprocess.run(
            [sys.executable, "-c", script, other_store.root],
            stdin=stdin,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert out.strip() == "example.com/test/app:1"
    assert other_store.get_ref("example.com/test/app:1").digest == image.descriptor.digest


def test_reference_with_digest_only(store: LocalStore, image: BuiltImage, tmp_path: Path) -> None:
    ref = Reference.parse(f"example.com/test/app@{image.descriptor.digest}")
    dest = tmp_path / "layout"
    export_oci_layout(store, [(ref, image.descriptor)], str(dest), as_tar=False)
    [entry] = index_of(dest)["manifests"]
    assert entry["annotations"] == {CTR_NAME: str(ref)}
    assert entry["digest"] == str(image.descriptor.digest)


# ---------------------------------------------------------------------------- indexes, foreign


@pytest.mark.interop
def test_index_round_trip(store: LocalStore, other_store: LocalStore, tmp_path: Path) -> None:
    ref, desc = build_index(store)
    dest = tmp_path / "layout"
    export_oci_layout(store, [(ref, desc)], str(dest), as_tar=False)
    raw = json.loads(skopeo("inspect", "--raw", f"oci:{dest}:1"))
    assert len(raw["manifests"]) == 2
    assert len(list((dest / "blobs" / "sha256").iterdir())) == 7  # index + 2 x 3
    copy = tmp_path / "copy"
    skopeo("copy", "--all", f"oci:{dest}:1", f"oci:{copy}:1")
    [loaded] = import_oci_layout(other_store, str(copy))
    assert loaded.descriptor.digest == desc.digest
    assert loaded.descriptor.media_type == "application/vnd.oci.image.index.v1+json"


def test_incomplete_index_is_refused(
    store: LocalStore, other_store: LocalStore, tmp_path: Path
) -> None:
    ref, desc = build_index(store)
    dest = tmp_path / "layout"
    export_oci_layout(store, [(ref, desc)], str(dest), as_tar=False)
    index = Index.parse((dest / "blobs" / "sha256" / desc.digest.encoded).read_bytes())
    arm = index.manifests[1].digest
    (dest / "blobs" / "sha256" / arm.encoded).unlink()
    with pytest.raises(NotFound, match=arm.encoded):
        import_oci_layout(other_store, str(dest))
    assert other_store.list_refs() == {}


def test_foreign_layer_without_blob(
    store: LocalStore, other_store: LocalStore, tmp_path: Path
) -> None:
    """image-layout.md: blobs fulfilled externally (non-distributable, with urls) may be
    absent from a layout; lamina exports and loads such an image without them."""
    img = build_image(store, "example.com/win:1", [{"a": b"a"}, {"b": b"b"}], tag=False)
    foreign = Descriptor(
        mt.OCI_LAYER_NONDIST_GZIP,
        Digest.from_bytes(b"somewhere else"),
        14,
        urls=("https://example.com/layer.tar.gz",),
    )
    manifest = Manifest(config=img.manifest.config, layers=(img.manifest.layers[0], foreign))
    store.put_bytes(manifest.to_bytes())
    desc = manifest.to_descriptor()
    dest = tmp_path / "layout"
    export_oci_layout(store, [(img.ref, desc)], str(dest), as_tar=False)
    assert not (dest / "blobs" / "sha256" / foreign.digest.encoded).exists()
    [loaded] = import_oci_layout(other_store, str(dest))
    assert loaded.descriptor.digest == desc.digest


def test_save_to_a_device_writes_into_it(tmp_path: Path) -> None:
    """Saving to /dev/null must not replace the device node with a file."""
    from lamina.image.archives.tar_io import open_output

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with open_output(str(fifo)) as out:
        out.write(b"through the fifo")
    reader.join(timeout=10)
    assert got == [b"through the fifo"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with open_output("/dev/null") as out:
        out.write(b"x")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
