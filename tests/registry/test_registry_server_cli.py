"""``lamina registry gc`` on a store filled through the server, and the default storage
under the lamina root."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from helpers.cli import Lamina
from helpers.registry_server import Client, Server
from lamina.registry.server import make_app
from lamina.registry.storage import FilesystemStorage


def test_gc_deletes_only_unreferenced_blobs(tmp_path: Path, lamina: Lamina) -> None:
    store = tmp_path / "store"
    with Server(make_app(FilesystemStorage(store))) as server:
        client = Client(server.port)
        config = b'{"architecture":"amd64","os":"linux"}'
        layer = b"layer bytes"
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": client.push_blob("a", config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": client.push_blob("a", layer),
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        status, _, _ = client.request(
            "PUT",
            "/v2/a/manifests/v1",
            manifest,
            {"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert status == 201
        orphan = client.push_blob("a", b"nobody needs me")
    dry = json.loads(
        lamina(
            "registry", "gc", "--storage", str(store), "--grace", "0", "--dry-run", "--json"
        ).stdout
    )
    assert dry["dry_run"] is True and dry["deleted_blobs"] == [orphan]
    assert (store / "blobs" / "sha256" / orphan.split(":")[1]).exists()
    # young blobs are kept by the default grace period
    kept = lamina("registry", "gc", "--storage", str(store)).stdout
    assert kept.startswith("deleted 0 blob(s)")
    done = lamina("registry", "gc", "--storage", str(store), "--grace", "0").stdout
    assert done.startswith("deleted 1 blob(s)")
    assert not (store / "blobs" / "sha256" / orphan.split(":")[1]).exists()
    layer_path = store / "blobs" / "sha256" / hashlib.sha256(layer).hexdigest()
    assert layer_path.read_bytes() == layer


def test_gc_default_storage_is_under_the_root(lamina: Lamina) -> None:
    out = json.loads(lamina("registry", "gc", "--json").stdout)
    assert out["deleted_blobs"] == [] and out["kept_blobs"] == 0
    assert (lamina.root / "registry" / "blobs").is_dir()  # type: ignore[attr-defined]
