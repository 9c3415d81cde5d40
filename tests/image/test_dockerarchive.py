"""docker-archive in and out (lamina.image.archives.docker_archive), checked by skopeo and ctr."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from helpers.archives import BuiltImage, Containerd, build_image, build_index, compress, skopeo
from lamina.errors import (
    DigestMismatch,
    InvalidFormat,
    LimitExceeded,
    NotFound,
    Unsafe,
)
from lamina.image.archives.docker_archive import (
    detect_archive_format,
    export_docker_archive,
    import_docker_archive,
    load_archive,
)
from lamina.image.archives.oci_layout import export_oci_layout, import_oci_layout
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import canonical_json
from lamina.oci.manifest import Index, Manifest
from lamina.oci.platform import Platform
from lamina.store.local import LocalStore

TarMaker = Callable[[Sequence[tuple[str, bytes]]], bytes]


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        out: dict[str, bytes] = {}
        for m in tf.getmembers():
            if m.isfile():
                f = tf.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
        return out


def config_diff_ids(store: LocalStore, manifest_digest: object) -> list[str]:
    desc = next(d for d in store.list_refs().values() if d.digest == manifest_digest)
    manifest = Manifest.parse(store.read_blob(desc.digest), desc.media_type)
    config = json.loads(store.read_blob(manifest.config.digest))
    return list(config["rootfs"]["diff_ids"])


# ---------------------------------------------------------------------------- export


def test_oci_flavour_structure(store: LocalStore, image: BuiltImage, tmp_path: Path) -> None:
    busybox = build_image(store, "busybox:1.36", [{"x": b"x"}])
    dest = tmp_path / "save.tar"
    export_docker_archive(
        store, [(image.ref, image.descriptor), (busybox.ref, busybox.descriptor)], str(dest)
    )
    files = members(dest)
    manifest_json = json.loads(files["manifest.json"])
    assert manifest_json[0] == {
        "Config": f"blobs/sha256/{image.manifest.config.digest.encoded}",
        "RepoTags": ["example.com/test/app:1"],
        "Layers": [f"blobs/sha256/{layer.digest.encoded}" for layer in image.manifest.layers],
    }
    assert manifest_json[1]["RepoTags"] == ["busybox:1.36"]  # familiar form, as docker writes
    repositories = json.loads(files["repositories"])
    assert set(repositories) == {"example.com/test/app", "busybox"}
    assert set(repositories["busybox"]) == {"1.36"}
    index = json.loads(files["index.json"])
    names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
    assert names == ["example.com/test/app:1", "docker.io/library/busybox:1.36"]
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]


def test_legacy_structure(store: LocalStore, image: BuiltImage, tmp_path: Path) -> None:
    dest = tmp_path / "legacy.tar"
    export_docker_archive(store, [(image.ref, image.descriptor)], str(dest), legacy=True)
    files = members(dest)
    [entry] = json.loads(files["manifest.json"])
    assert entry["Config"] == f"{image.manifest.config.digest.encoded}.json"
    assert entry["RepoTags"] == ["example.com/test/app:1"]
    assert len(entry["Layers"]) == 2
    for path, diff_id, tar in zip(entry["Layers"], image.diff_ids, image.layer_tars, strict=True):
        # Legacy layers are the uncompressed tars: their sha256 is the diff_id.
        assert path.endswith("/layer.tar")
        assert files[path] == tar
        assert hashlib.sha256(files[path]).hexdigest() == diff_id.encoded
        layer_dir = path.rsplit("/", 1)[0]
        assert files[f"{layer_dir}/VERSION"] == b"1.0"
        assert json.loads(files[f"{layer_dir}/json"])["id"] == layer_dir
    top = entry["Layers"][-1].split("/")[0]
    assert json.loads(files["repositories"]) == {"example.com/test/app": {"1": top}}
    assert (
        json.loads(files[f"{entry['Layers'][-1].split('/')[0]}/json"])["parent"]
        == (entry["Layers"][0].split("/")[0])
    )
    assert not any(name.startswith("blobs/") for name in files)


@pytest.mark.interop
@pytest.mark.parametrize("legacy", [False, True])
def test_accepted_by_skopeo(
    store: LocalStore, image: BuiltImage, tmp_path: Path, legacy: bool
) -> None:
    dest = tmp_path / "save.tar"
    export_docker_archive(store, [(image.ref, image.descriptor)], str(dest), legacy=legacy)
    info = json.loads(skopeo("inspect", f"docker-archive:{dest}"))
    # skopeo reports the layers of a docker archive by diff_id (it decompresses them).
    assert info["Layers"] == [str(d) for d in image.diff_ids]
    copy = tmp_path / "copy"
    skopeo("copy", f"docker-archive:{dest}", f"oci:{copy}:t")
    index = json.loads((copy / "index.json").read_text())
    manifest = json.loads(
        (copy / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    config = json.loads((copy / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    assert config["rootfs"]["diff_ids"] == [str(d) for d in image.diff_ids]
    assert config["config"]["Cmd"] == ["/bin/sh"]


@pytest.mark.interop
@pytest.mark.parametrize("legacy", [False, True])
def test_accepted_by_ctr_import(
    store: LocalStore, tmp_path: Path, containerd: Containerd, legacy: bool
) -> None:
    name = f"localhost:5000/lamina/docker-{'legacy' if legacy else 'oci'}:v1"
    img = build_image(store, name, [{"a": b"a"}, {"b": b"b"}])
    dest = tmp_path / "save.tar"
    export_docker_archive(store, [(img.ref, img.descriptor)], str(dest), legacy=legacy)
    containerd.ctr("images", "import", dest)
    assert name in containerd.image_names()


def test_deterministic(store: LocalStore, image: BuiltImage, tmp_path: Path) -> None:
    for legacy in (False, True):
        a, b = tmp_path / f"a{legacy}.tar", tmp_path / f"b{legacy}.tar"
        export_docker_archive(store, [(image.ref, image.descriptor)], str(a), legacy=legacy)
        export_docker_archive(store, [(image.ref, image.descriptor)], str(b), legacy=legacy)
        assert a.read_bytes() == b.read_bytes()


def test_legacy_detects_a_layer_not_matching_its_diff_id(store: LocalStore, tmp_path: Path) -> None:
    img = build_image(store, "example.com/liar:1", [{"a": b"a"}])
    config = json.loads(store.read_blob(img.manifest.config.digest))
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    cinfo = store.put_bytes(canonical_json(config))
    manifest = Manifest(
        config=img.manifest.config.__class__(mt.OCI_CONFIG, cinfo.digest, cinfo.size),
        layers=img.manifest.layers,
    )
    store.put_bytes(manifest.to_bytes())
    dest = tmp_path / "liar.tar"
    with pytest.raises(DigestMismatch, match="diff_id"):
        export_docker_archive(store, [(img.ref, manifest.to_descriptor())], str(dest), legacy=True)
    assert not dest.exists()


# ---------------------------------------------------------------------------- import


def test_round_trip_oci_flavour(
    store: LocalStore, other_store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    dest = tmp_path / "save.tar"
    export_docker_archive(store, [(image.ref, image.descriptor)], str(dest))
    assert detect_archive_format(str(dest)) == "oci-layout"
    [loaded] = import_oci_layout(other_store, str(dest))
    assert (loaded.name, loaded.descriptor.digest) == (
        "example.com/test/app:1",
        image.descriptor.digest,
    )
    # Read through manifest.json instead, lamina rebuilds the same canonical manifest.
    third = LocalStore(tmp_path / "third")
    [loaded] = import_docker_archive(third, str(dest))
    assert loaded.descriptor.digest == image.descriptor.digest


@pytest.mark.parametrize("compression", ["gzip", "zstd", ""])
def test_round_trip_legacy(
    store: LocalStore, other_store: LocalStore, tmp_path: Path, compression: str
) -> None:
    img = build_image(
        store, "busybox", [{"a": b"a" * 3000}, {"b": b"b"}, {"a": b"c"}], compression=compression
    )
    dest = tmp_path / "legacy.tar"
    export_docker_archive(store, [(img.ref, img.descriptor)], str(dest), legacy=True)
    assert detect_archive_format(str(dest)) == "docker-archive"
    [loaded] = import_docker_archive(other_store, str(dest))
    assert loaded.name == "docker.io/library/busybox:latest"
    manifest = Manifest.parse(other_store.read_blob(loaded.descriptor.digest))
    assert manifest.config.digest == img.manifest.config.digest
    assert [layer.media_type for layer in manifest.layers] == [mt.OCI_LAYER] * 3
    assert [layer.digest for layer in manifest.layers] == list(img.diff_ids)
    assert config_diff_ids(other_store, loaded.descriptor.digest) == [str(d) for d in img.diff_ids]
    if compression == "":
        assert loaded.descriptor.digest == img.descriptor.digest


def test_several_images_sharing_layers(
    store: LocalStore, other_store: LocalStore, tmp_path: Path
) -> None:
    base = {"base": b"shared"}
    one = build_image(store, "example.com/one:1", [base, {"one": b"1"}])
    two = build_image(store, "example.com/two:2", [base, {"two": b"2"}])
    also = build_image(store, "example.com/one:latest", [base, {"one": b"1"}])
    assert also.descriptor == one.descriptor
    images = [(i.ref, i.descriptor) for i in (one, two, also)]
    for legacy in (False, True):
        dest = tmp_path / f"multi{legacy}.tar"
        export_docker_archive(store, images, str(dest), legacy=legacy)
        manifest_json = json.loads(members(dest)["manifest.json"])
        assert [e["RepoTags"] for e in manifest_json] == [
            ["example.com/one:1", "example.com/one:latest"],
            ["example.com/two:2"],
        ]
        loaded = import_docker_archive(other_store, str(dest))
        assert [x.name for x in loaded] == [
            "example.com/one:1",
            "example.com/one:latest",
            "example.com/two:2",
        ]


@pytest.mark.interop
def test_import_skopeo_written_archive(
    store: LocalStore, other_store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    export_oci_layout(store, [(image.ref, image.descriptor)], str(layout), as_tar=False)
    dest = tmp_path / "skopeo.tar"
    skopeo("copy", f"oci:{layout}:1", f"docker-archive:{dest}:myrepo/app:v9")
    assert detect_archive_format(str(dest)) == "docker-archive"
    [loaded] = import_docker_archive(other_store, str(dest))
    assert loaded.name == "docker.io/myrepo/app:v9"
    manifest = Manifest.parse(other_store.read_blob(loaded.descriptor.digest))
    assert [layer.digest for layer in manifest.layers] == list(image.diff_ids)


@pytest.mark.interop
def test_import_ctr_exported_archive(
    store: LocalStore, other_store: LocalStore, tmp_path: Path, containerd: Containerd
) -> None:
    img = build_image(store, "localhost:5000/lamina/ctr-export:v1", [{"c": b"c"}])
    src = tmp_path / "in.tar"
    export_oci_layout(store, [(img.ref, img.descriptor)], str(src), as_tar=True)
    containerd.ctr("images", "import", src)
    out = tmp_path / "ctr.tar"
    containerd.ctr("images", "export", out, str(img.ref))
    assert detect_archive_format(str(out)) == "oci-layout"
    [loaded] = import_oci_layout(other_store, str(out))
    assert loaded.name == str(img.ref)
    [loaded] = import_docker_archive(LocalStore(tmp_path / "third"), str(out))
    assert loaded.name == str(img.ref)


# ---------------------------------------------------------------------------- hostile input


def _legacy_members(store: LocalStore, image: BuiltImage, tmp_path: Path) -> dict[str, bytes]:
    dest = tmp_path / "source.tar"
    export_docker_archive(store, [(image.ref, image.descriptor)], str(dest), legacy=True)
    return members(dest)


def _write(files: dict[str, bytes], path: Path, tar_bytes: TarMaker) -> str:
    path.write_bytes(tar_bytes(sorted(files.items())))
    return str(path)


def _assert_untouched(store: LocalStore) -> None:
    assert store.list_refs() == {}
    for blob in store.iter_blobs():  # anything admitted is verified, and no manifest
        with store.open_blob(blob.digest) as r:
            data = r.read()
        assert b'"schemaVersion"' not in data


def test_manifest_path_escaping_the_archive(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
) -> None:
    files = _legacy_members(store, image, tmp_path)
    for bad in ("../outside.json", "/etc/passwd", "a/../../b", "."):
        entry = json.loads(files["manifest.json"])
        entry[0]["Config"] = bad
        files["manifest.json"] = json.dumps(entry).encode()
        with pytest.raises(Unsafe, match="archive"):
            import_docker_archive(other_store, _write(files, tmp_path / "escape.tar", tar_bytes))
    _assert_untouched(other_store)


def test_symlink_escaping_the_archive(
    store: LocalStore, other_store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    files = _legacy_members(store, image, tmp_path)
    entry = json.loads(files["manifest.json"])
    src = tmp_path / "link.tar"
    with tarfile.open(src, "w") as tf:
        for name, data in sorted(files.items()):
            if name == entry[0]["Layers"][0]:
                info = tarfile.TarInfo(name)
                info.type = tarfile.SYMTYPE
                info.linkname = "../../etc/passwd"
                tf.addfile(info)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, __import__("io").BytesIO(data))
    with pytest.raises(Unsafe):
        import_docker_archive(other_store, str(src))
    _assert_untouched(other_store)


def test_oversized_manifest_json(
    other_store: LocalStore, tmp_path: Path, tar_bytes: TarMaker
) -> None:
    big = b"[" + b" " * (5 << 20) + b"]"
    src = _write({"manifest.json": big}, tmp_path / "big.tar", tar_bytes)
    with pytest.raises(LimitExceeded, match=r"manifest\.json"):
        import_docker_archive(other_store, src)
    _assert_untouched(other_store)


def test_oversized_config(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
) -> None:
    files = _legacy_members(store, image, tmp_path)
    entry = json.loads(files["manifest.json"])
    files[entry[0]["Config"]] = b"{" + b" " * (5 << 20) + b"}"
    with pytest.raises(LimitExceeded):
        import_docker_archive(other_store, _write(files, tmp_path / "big.tar", tar_bytes))
    _assert_untouched(other_store)


def test_layer_not_matching_diff_id(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
) -> None:
    files = _legacy_members(store, image, tmp_path)
    entry = json.loads(files["manifest.json"])
    layer = entry[0]["Layers"][1]
    files[layer] = image.layer_tars[0]  # a valid tar, but not the layer the config names
    with pytest.raises(DigestMismatch, match="diff_id"):
        import_docker_archive(other_store, _write(files, tmp_path / "swap.tar", tar_bytes))
    _assert_untouched(other_store)


def test_compressed_layer_not_matching_diff_id(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
) -> None:
    files = _legacy_members(store, image, tmp_path)
    entry = json.loads(files["manifest.json"])
    layer = entry[0]["Layers"][0]
    files[layer] = gzip.compress(image.layer_tars[1], mtime=0)
    with pytest.raises(DigestMismatch, match="diff_id"):
        import_docker_archive(other_store, _write(files, tmp_path / "swap.tar", tar_bytes))
    _assert_untouched(other_store)


def test_missing_layer_file(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
) -> None:
    files = _legacy_members(store, image, tmp_path)
    entry = json.loads(files["manifest.json"])
    del files[entry[0]["Layers"][1]]
    with pytest.raises(NotFound, match=r"layer\.tar"):
        import_docker_archive(other_store, _write(files, tmp_path / "missing.tar", tar_bytes))
    _assert_untouched(other_store)


def test_blob_not_matching_its_name(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
) -> None:
    dest = tmp_path / "save.tar"
    export_docker_archive(store, [(image.ref, image.descriptor)], str(dest))
    files = members(dest)
    bad = image.manifest.layers[1].digest
    files[f"blobs/sha256/{bad.encoded}"] = b"not the layer"
    src = _write(files, tmp_path / "bad.tar", tar_bytes)
    with pytest.raises(DigestMismatch):
        import_docker_archive(other_store, src)
    assert not other_store.has(bad)
    _assert_untouched(other_store)


@pytest.mark.parametrize(
    ("manifest_json", "message"),
    [
        (b"{}", "array"),
        (b"[]", "no images"),
        (b'[{"Layers": []}]', "Config"),
        (b'[{"Config": "c.json", "Layers": "x"}]', "Layers"),
        (b"not json", "JSON"),
    ],
)
def test_malformed_manifest_json(
    other_store: LocalStore,
    tmp_path: Path,
    tar_bytes: TarMaker,
    manifest_json: bytes,
    message: str,
) -> None:
    src = _write({"manifest.json": manifest_json}, tmp_path / "m.tar", tar_bytes)
    with pytest.raises(InvalidFormat, match=message):
        import_docker_archive(other_store, src)


def test_not_a_docker_archive(other_store: LocalStore, tmp_path: Path, tar_bytes: TarMaker) -> None:
    src = _write({"hello.txt": b"hi"}, tmp_path / "plain.tar", tar_bytes)
    with pytest.raises(InvalidFormat, match=r"manifest\.json"):
        import_docker_archive(other_store, src)
    with pytest.raises(InvalidFormat, match="neither"):
        detect_archive_format(src)


def test_detect_format(store: LocalStore, image: BuiltImage, tmp_path: Path) -> None:
    pairs = [(image.ref, image.descriptor)]
    export_oci_layout(store, pairs, str(tmp_path / "dir"), as_tar=False)
    export_oci_layout(store, pairs, str(tmp_path / "oci.tar"), as_tar=True)
    export_docker_archive(store, pairs, str(tmp_path / "docker.tar"))
    export_docker_archive(store, pairs, str(tmp_path / "legacy.tar"), legacy=True)
    assert detect_archive_format(str(tmp_path / "dir")) == "oci-dir"
    assert detect_archive_format(str(tmp_path / "oci.tar")) == "oci-layout"
    assert detect_archive_format(str(tmp_path / "docker.tar")) == "oci-layout"
    assert detect_archive_format(str(tmp_path / "legacy.tar")) == "docker-archive"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidFormat):
        detect_archive_format(str(tmp_path / "empty"))
    with pytest.raises(NotFound):
        detect_archive_format(str(tmp_path / "nope.tar"))


# ---------------------------------------------------------------------------- load_archive


def test_load_archive_any_format(
    store: LocalStore, image: BuiltImage, tmp_path: Path, tar_bytes: TarMaker
) -> None:
    pairs = [(image.ref, image.descriptor)]
    export_oci_layout(store, pairs, str(tmp_path / "dir"), as_tar=False)
    export_oci_layout(store, pairs, str(tmp_path / "oci.tar"), as_tar=True)
    export_docker_archive(store, pairs, str(tmp_path / "docker.tar"))
    export_docker_archive(store, pairs, str(tmp_path / "legacy.tar"), legacy=True)
    expected = {
        "dir": "oci-dir",
        "oci.tar": "oci-layout",
        "docker.tar": "oci-layout",
        "legacy.tar": "docker-archive",
    }
    for name, kind in expected.items():
        target = LocalStore(tmp_path / f"store-{name}")
        found, [loaded] = load_archive(target, str(tmp_path / name))
        assert found == kind == detect_archive_format(str(tmp_path / name))
        assert loaded.name == "example.com/test/app:1"
        if kind != "docker-archive":
            assert loaded.descriptor.digest == image.descriptor.digest
        assert target.get_ref("example.com/test/app:1") == loaded.descriptor
    plain = tmp_path / "plain.tar"
    plain.write_bytes(tar_bytes([("hello", b"hi")]))
    with pytest.raises(InvalidFormat, match="neither"):
        load_archive(LocalStore(tmp_path / "nothing"), str(plain))


@pytest.mark.parametrize("legacy", [False, True])
def test_load_archive_from_stdin(
    store: LocalStore, other_store: LocalStore, image: BuiltImage, tmp_path: Path, legacy: bool
) -> None:
    src = tmp_path / "save.tar"
    export_docker_archive(store, [(image.ref, image.descriptor)], str(src), legacy=legacy)
    script = (
        "import sys\n"
        "from lamina.store.local import LocalStore\n"
        "from lamina.image.archives.docker_archive import load_archive\n"
        "kind, loaded = load_archive(LocalStore(sys.argv[1]), '-')\n"
        "print(kind, loaded[0].name)\n"
    )
    with src.open("rb") as stdin:
        out = subprocess.run(
            [sys.executable, "-c", script, other_store.root],
            stdin=stdin,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    kind = "docker-archive" if legacy else "oci-layout"
    assert out.split() == [kind, "example.com/test/app:1"]


def test_progress_counts_the_bytes(
    store: LocalStore, other_store: LocalStore, image: BuiltImage, tmp_path: Path
) -> None:
    calls: list[tuple[int, int | None]] = []

    def progress(advance: int, total: int | None = None) -> None:
        calls.append((advance, total))

    dest = tmp_path / "save.tar"
    export_docker_archive(store, [(image.ref, image.descriptor)], str(dest), progress=progress)
    blob_bytes = image.manifest.config.size + sum(layer.size for layer in image.manifest.layers)
    assert calls[0] == (0, blob_bytes)
    assert sum(a for a, _ in calls) == dest.stat().st_size
    calls.clear()
    load_archive(other_store, str(dest), progress=progress)
    assert calls[0] == (0, dest.stat().st_size)
    assert sum(a for a, _ in calls) == dest.stat().st_size
    calls.clear()
    layout = tmp_path / "layout"
    export_oci_layout(
        store, [(image.ref, image.descriptor)], str(layout), progress=progress, as_tar=False
    )
    total = blob_bytes + image.descriptor.size
    assert calls[0] == (0, total)
    assert sum(a for a, _ in calls) == total


def test_index_saves_one_platform(
    store: LocalStore, other_store: LocalStore, tmp_path: Path
) -> None:
    ref, desc = build_index(store)
    index = Index.parse(store.read_blob(desc.digest))
    for platform, entry in (
        (Platform("linux", "amd64"), index.manifests[0]),
        (Platform("linux", "arm64", "v8"), index.manifests[1]),
    ):
        dest = tmp_path / f"{platform.architecture}.tar"
        export_docker_archive(store, [(ref, desc)], str(dest), platform=platform)
        files = members(dest)
        [item] = json.loads(files["manifest.json"])
        manifest = Manifest.parse(store.read_blob(entry.digest))
        assert item["Config"] == f"blobs/sha256/{manifest.config.digest.encoded}"
        [loaded] = load_archive(LocalStore(tmp_path / platform.architecture), str(dest))[1]
        assert loaded.descriptor.digest == entry.digest
    with pytest.raises(NotFound, match="s390x"):
        export_docker_archive(
            store, [(ref, desc)], str(tmp_path / "x.tar"), platform=Platform("linux", "s390x")
        )


BIG_LAYER_SCRIPT = """
import os, sys
import isal.igzip as igzip
from lamina.image.archives.docker_archive import export_docker_archive, load_archive
from lamina.image.archives.oci_layout import export_oci_layout
from lamina.layers.api import Entry, EntryType
from lamina.layers.tar import TarWriter
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import canonical_json
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digester
from lamina.oci.manifest import Manifest
from lamina.oci.reference import Reference
from lamina.store.local import LocalStore

base, size = sys.argv[1], int(sys.argv[2])
store = LocalStore(os.path.join(base, "s"))
plain = Digester()
with store.writer() as blob:
    gz = igzip.IGzipFile(fileobj=blob, mode="wb", compresslevel=1, mtime=0)

    class Sink:
        def write(self, data):
            plain.update(data)
            gz.write(data)

    class Source:
        left = size
        chunk = (os.urandom(1 << 15) + bytes(3 << 15)) * 8

        def read(self, n):
            n = min(n, self.left, len(self.chunk))
            self.left -= n
            return self.chunk[:n]

    tw = TarWriter(Sink())
    tw.add(Entry("big", EntryType.FILE, size=size), Source())
    tw.close()
    gz.close()
    info = blob.commit()
config = canonical_json({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [str(plain.digest())]}})
cinfo = store.put_bytes(config)
manifest = Manifest(config=Descriptor(mt.OCI_CONFIG, cinfo.digest, cinfo.size),
    layers=(Descriptor(mt.OCI_LAYER_GZIP, info.digest, info.size),))
store.put_bytes(manifest.to_bytes())
ref = Reference.parse("example.com/big:1")
images = [(ref, manifest.to_descriptor())]
export_oci_layout(store, images, os.path.join(base, "oci.tar"), as_tar=True)
export_docker_archive(store, images, os.path.join(base, "legacy.tar"), legacy=True)
kinds = []
for name in ("oci.tar", "legacy.tar"):
    target = LocalStore(os.path.join(base, "store-" + name))
    kind, loaded = load_archive(target, os.path.join(base, name))
    kinds.append(kind)
# VmHWM is this process's own peak; ru_maxrss would also carry the forking pytest
# worker's high-water mark across exec.
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(hwm // 1024, *kinds)
"""


@pytest.mark.slow
def test_big_layer_streams(tmp_path: Path) -> None:
    """A 256 MiB layer goes out and in (both flavours) without being held in memory."""
    size = 256 << 20
    out = subprocess.run(
        [sys.executable, "-c", BIG_LAYER_SCRIPT, str(tmp_path), str(size)],
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
    ).stdout.split()
    assert out[1:] == ["oci-layout", "docker-archive"]
    assert int(out[0]) < 120, f"peak RSS {out[0]} MiB"
    assert (tmp_path / "legacy.tar").stat().st_size > size


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_archive(
    store: LocalStore, image: BuiltImage, tmp_path: Path, legacy: bool, compression: str
) -> None:
    """``docker save | gzip`` archives load, as with docker load."""
    plain = tmp_path / "save.tar"
    export_docker_archive(store, [(image.ref, image.descriptor)], str(plain), legacy=legacy)
    packed = tmp_path / "save.tar.z"
    packed.write_bytes(compress(plain.read_bytes(), compression))
    kind = "docker-archive" if legacy else "oci-layout"
    assert detect_archive_format(str(packed)) == kind
    found, [loaded] = load_archive(LocalStore(tmp_path / "s"), str(packed))
    assert (found, loaded.name) == (kind, "example.com/test/app:1")
    [loaded] = import_docker_archive(LocalStore(tmp_path / "s2"), str(packed))
    assert loaded.name == "example.com/test/app:1"


def test_archive_bomb_is_stopped(other_store: LocalStore, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.zst"
    bomb.write_bytes(compress(bytes(100 << 20), "zstd"))  # ~3 KiB for 100 MiB
    with pytest.raises(LimitExceeded, match="bomb"):
        load_archive(other_store, str(bomb))
    assert other_store.list_refs() == {}


def test_layer_bomb_is_stopped(
    store: LocalStore,
    other_store: LocalStore,
    image: BuiltImage,
    tmp_path: Path,
    tar_bytes: TarMaker,
) -> None:
    files = _legacy_members(store, image, tmp_path)
    entry = json.loads(files["manifest.json"])
    files[entry[0]["Layers"][0]] = compress(bytes(100 << 20), "zstd")
    with pytest.raises(LimitExceeded, match="bomb"):
        import_docker_archive(other_store, _write(files, tmp_path / "bomb.tar", tar_bytes))
    _assert_untouched(other_store)
