"""Registry GC on every storage driver (filesystem, and S3 on a real SeaweedFS): it keeps
what tags and manifests need, sweeps old orphans only, and never breaks a push that runs
at the same time."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from helpers.seaweed import shared_seaweed
from lamina.errors import InvalidFormat, NotFound
from lamina.oci.digest import Digest
from lamina.registry.gc import GcReport, collect
from lamina.registry.storage import RegistryStorage, open_storage

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture(params=["filesystem", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> RegistryStorage:
    if request.param == "s3":
        return open_storage(shared_seaweed().location())
    return open_storage(str(tmp_path / "registry"))


def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def push_blob(s: RegistryStorage, name: str, data: bytes) -> dict[str, object]:
    uuid = s.start_upload(name)
    s.append_upload(name, uuid, [data])
    d = s.finish_upload(name, uuid, digest_of(data))
    return {"digest": str(d), "size": len(data)}


def put_doc(s: RegistryStorage, name: str, media_type: str, doc: dict[str, object]) -> Digest:
    data = json.dumps(doc, sort_keys=True).encode()
    d = digest_of(data)
    s.put_manifest(name, d, media_type, data)
    return d


def push_image(
    s: RegistryStorage, name: str, layers: list[bytes], tag: str | None = None, **extra: object
) -> Digest:
    config = push_blob(
        s, name, json.dumps({"layers": len(layers), "r": os.urandom(4).hex()}).encode()
    )
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **config},
        "layers": [{"mediaType": OCI_LAYER, **push_blob(s, name, data)} for data in layers],
        **extra,
    }
    d = put_doc(s, name, OCI_MANIFEST, doc)
    if tag:
        s.tag(name, tag, d)
    return d


def manifest_blobs(s: RegistryStorage, name: str, d: Digest) -> set[Digest]:
    doc = json.loads(s.get_manifest(name, d)[1])
    found = {d}
    for desc in [doc.get("config"), *doc.get("layers", []), *doc.get("manifests", [])]:
        if desc:
            found.add(Digest.parse(desc["digest"]))
    return found


def intact(s: RegistryStorage, d: Digest) -> bool:
    try:
        with s.open_blob(d) as r:
            h = hashlib.sha256()
            while block := r.read(1 << 20):
                h.update(block)
    except NotFound:
        return False
    return h.hexdigest() == d.encoded


def later() -> float:
    return time.time() + 60  # every blob looks a minute old


def test_gc_keeps_what_tags_and_manifests_need(storage: RegistryStorage) -> None:
    shared = os.urandom(2000)
    app = push_image(storage, "team/app", [shared, os.urandom(3000)], tag="v1")
    # An untagged revision still counts (only delete_untagged drops it).
    untagged = push_image(storage, "team/app", [shared, os.urandom(100)])
    # An index whose child manifest is not tagged itself.
    child = push_image(storage, "team/multi", [os.urandom(500)])
    child_size = len(storage.get_manifest("team/multi", child)[1])
    index = put_doc(
        storage,
        "team/multi",
        OCI_INDEX,
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": str(child), "size": child_size}],
        },
    )
    storage.tag("team/multi", "latest", index)
    storage.delete_manifest("team/multi", child)  # reachable only through the index now
    orphan = Digest.parse(str(push_blob(storage, "team/app", os.urandom(4096))["digest"]))
    gone = push_image(storage, "team/old", [os.urandom(700), shared], tag="x")
    gone_blobs = manifest_blobs(storage, "team/old", gone)
    storage.delete_manifest("team/old", gone)

    report = collect(storage, grace_seconds=10, now=later())

    needed = (
        manifest_blobs(storage, "team/app", app)
        | manifest_blobs(storage, "team/app", untagged)
        | {index, child}
        | manifest_blobs(storage, "team/multi", index)
    )
    with storage.open_blob(child) as r:
        with_child = json.loads(r.read(1 << 20))
    needed |= {Digest.parse(x["digest"]) for x in [with_child["config"], *with_child["layers"]]}
    assert all(intact(storage, d) for d in needed)
    expected_gone = {orphan} | (gone_blobs - {digest_of(shared)})
    assert set(report.deleted_blobs) == expected_gone
    assert set(storage.iter_blobs()) == needed
    assert report.freed_bytes > 4096
    assert report.kept_blobs == len(needed)
    assert not report.dry_run
    assert report.missing_blobs == ()
    assert storage.resolve_tag("team/app", "v1") == app
    # A second run finds nothing more to do.
    assert collect(storage, grace_seconds=10, now=later()).deleted_blobs == ()


def test_gc_keeps_young_orphans(storage: RegistryStorage) -> None:
    orphan = Digest.parse(str(push_blob(storage, "r", os.urandom(1000))["digest"]))
    report = collect(storage)  # default grace: an hour
    assert report.deleted_blobs == ()
    assert report.young_blobs == 1
    assert intact(storage, orphan)
    # Past the grace period it goes.
    assert collect(storage, grace_seconds=5, now=later()).deleted_blobs == (orphan,)
    with pytest.raises(NotFound):
        storage.stat_blob(orphan)
    assert not storage.has_link("r", orphan)


def test_gc_dry_run_deletes_nothing(storage: RegistryStorage) -> None:
    push_image(storage, "r", [os.urandom(100)], tag="keep")
    orphans = {
        Digest.parse(str(push_blob(storage, "r", os.urandom(n))["digest"])) for n in (10, 20)
    }
    untagged = push_image(storage, "r", [os.urandom(50)])
    before = set(storage.iter_blobs())
    report = collect(storage, dry_run=True, grace_seconds=1, delete_untagged=True, now=later())
    assert report.dry_run
    assert set(report.deleted_blobs) == orphans | manifest_blobs(storage, "r", untagged)
    assert report.deleted_manifests == (("r", untagged),)
    assert report.freed_bytes == sum(storage.stat_blob(d) for d in report.deleted_blobs)
    assert set(storage.iter_blobs()) == before
    assert storage.has_manifest("r", untagged)
    assert json.loads(json.dumps(report.to_json()))["freed_bytes"] == report.freed_bytes


def test_gc_delete_untagged_keeps_referrers_and_index_children(storage: RegistryStorage) -> None:
    app = push_image(storage, "r", [os.urandom(100)], tag="v1")
    app_size = len(storage.get_manifest("r", app)[1])
    # A signature-like referrer of the tagged image, itself untagged.
    sig = push_image(
        storage,
        "r",
        [os.urandom(60)],
        subject={"mediaType": OCI_MANIFEST, "digest": str(app), "size": app_size},
        artifactType="application/example.sig",
    )
    lonely = push_image(storage, "r", [os.urandom(70)])
    lonely_blobs = manifest_blobs(storage, "r", lonely)
    report = collect(storage, grace_seconds=1, delete_untagged=True, now=later())
    assert report.deleted_manifests == (("r", lonely),)
    assert set(report.deleted_blobs) == lonely_blobs
    assert set(storage.iter_manifests("r")) == {app, sig}
    assert all(intact(storage, d) for d in manifest_blobs(storage, "r", sig))
    # Young untagged manifests are spared (an index's children arrive before it).
    young = push_image(storage, "r", [os.urandom(80)])
    assert collect(storage, delete_untagged=True).deleted_manifests == ()
    assert storage.has_manifest("r", young)


def test_gc_stops_on_an_unreadable_manifest(storage: RegistryStorage) -> None:
    orphan = Digest.parse(str(push_blob(storage, "r", os.urandom(100))["digest"]))
    bad = b'{"schemaVersion": 2, "config": 5}'
    storage.put_manifest("r", digest_of(bad), OCI_MANIFEST, bad)
    with pytest.raises(InvalidFormat):
        collect(storage, grace_seconds=1, now=later())
    assert intact(storage, orphan)  # nothing was swept


def test_gc_concurrent_push_ends_intact(storage: RegistryStorage) -> None:
    grace = 3.0  # far more than a push takes, even on a loaded machine
    orphans = {Digest.parse(str(push_blob(storage, "old", os.urandom(64))["digest"]))}
    time.sleep(grace + 1.2)  # S3 stores times to the second
    stop = threading.Event()
    pushed: list[Digest] = []
    errors: list[BaseException] = []

    def pusher() -> None:
        try:
            i = 0
            while not stop.is_set() or i < 3:
                pushed.append(push_image(storage, "live", [os.urandom(300), b"base"], tag=f"t{i}"))
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=pusher)
    thread.start()
    reports: list[GcReport] = []
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline or len(reports) < 3:
            reports.append(collect(storage, grace_seconds=grace))
    finally:
        stop.set()
        thread.join(timeout=60)
    assert errors == []
    assert orphans <= {d for r in reports for d in r.deleted_blobs}
    assert len(pushed) >= 3
    for i, d in enumerate(pushed):
        assert storage.resolve_tag("live", f"t{i}") == d
        assert all(intact(storage, b) for b in manifest_blobs(storage, "live", d))
    # And once the pushes are done nothing they need is collectable, even when old.
    final = collect(storage, grace_seconds=1, now=later())
    assert not set(final.deleted_blobs) & set().union(
        *(manifest_blobs(storage, "live", d) for d in pushed)
    )


def test_gc_leaves_uploads_alone_unless_asked(storage: RegistryStorage) -> None:
    data = os.urandom(3000)
    uuid = storage.start_upload("r")
    storage.append_upload("r", uuid, [data[:1000]])
    report = collect(storage, grace_seconds=1, now=later())
    assert report.expired_uploads == ()
    # The session survives a collection and finishes into an intact blob.
    storage.append_upload("r", uuid, [data[1000:]])
    d = storage.finish_upload("r", uuid, digest_of(data))
    assert intact(storage, d)
    stale = storage.start_upload("r")
    storage.append_upload("r", stale, [b"abandoned"])
    dry = collect(storage, dry_run=True, upload_max_age=30, now=later())
    assert dry.expired_uploads == (stale,)
    assert storage.upload_size("r", stale) == 9
    assert collect(storage, upload_max_age=3600).expired_uploads == ()  # not old yet
    assert collect(storage, upload_max_age=30, now=later()).expired_uploads == (stale,)
    assert list(storage.iter_uploads()) == []


class _PutsAManifestMidway:
    """The real driver, plus a client that puts a manifest right after GC's scan: the
    manifest names an old orphan, which the sweep must now spare."""

    def __init__(self, storage: RegistryStorage, manifest: bytes) -> None:
        self._storage = storage
        self._manifest = manifest
        self.scans = 0

    def list_repositories(self) -> list[str]:
        self.scans += 1
        if self.scans == 2:  # the scan is over; the sweep is about to start
            d = digest_of(self._manifest)
            self._storage.put_manifest("late", d, OCI_MANIFEST, self._manifest)
            self._storage.tag("late", "v1", d)
        return self._storage.list_repositories()

    def __getattr__(self, name: str) -> object:
        return getattr(self._storage, name)


def test_gc_spares_blobs_of_a_manifest_put_during_the_collection(
    storage: RegistryStorage,
) -> None:
    layer = push_blob(storage, "late", os.urandom(900))
    config = push_blob(storage, "late", b"{}")
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **config},
        "layers": [{"mediaType": OCI_LAYER, **layer}],
    }
    other = Digest.parse(str(push_blob(storage, "late", os.urandom(10))["digest"]))
    wrapped = _PutsAManifestMidway(storage, json.dumps(doc).encode())
    report = collect(wrapped, grace_seconds=1, now=later())  # type: ignore[arg-type]
    assert wrapped.scans >= 2
    assert report.deleted_blobs == (other,)
    assert intact(storage, Digest.parse(str(layer["digest"])))
    assert intact(storage, Digest.parse(str(config["digest"])))


def test_gc_sweeps_stale_temporaries_of_killed_writers(tmp_path: Path) -> None:
    store = tmp_path / "registry"
    s = open_storage(str(store))
    d = push_image(s, "a", [b"layer"], tag="v1")
    tmp = store / "blobs" / "sha256" / f".{d.encoded}.{os.urandom(6).hex()}.tmp"
    tmp.write_bytes(b"half")
    past = time.time() - 7200
    os.utime(tmp, (past, past))
    dry = collect(s, dry_run=True)
    assert dry.swept_temporaries == (str(tmp.relative_to(store)),) and tmp.exists()
    assert dry.to_json()["swept_temporaries"] == [str(tmp.relative_to(store))]
    report = collect(s)
    assert report.swept_temporaries == dry.swept_temporaries and not tmp.exists()
    assert collect(s).swept_temporaries == ()
