"""chain_ids and layout constants."""

from __future__ import annotations

import hashlib

import pytest

from lamina.errors import InvalidArgument, InvalidFormat, LimitExceeded, Unsupported
from lamina.oci.digest import Digest
from lamina.oci.ids import chain_id, chain_ids
from lamina.oci.layout import (
    ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_CREATED,
    ANNOTATION_REF_NAME,
    OCI_LAYOUT_FILE,
    OCI_LAYOUT_JSON,
    blob_relpath,
    check_layout_file,
)

A = Digest.from_bytes(b"a")
B = Digest.from_bytes(b"b")
C = Digest.from_bytes(b"c")


def test_chain_ids_by_hand() -> None:
    ab = hashlib.sha256(f"sha256:{A.hex} sha256:{B.hex}".encode()).hexdigest()
    abc = hashlib.sha256(f"sha256:{ab} sha256:{C.hex}".encode()).hexdigest()
    assert chain_ids([A, B, C]) == [A, Digest("sha256", ab), Digest("sha256", abc)]
    assert chain_id([A, B, C]) == Digest("sha256", abc)
    assert chain_ids([]) == []
    assert chain_id([A]) == A


def test_chain_id_uses_text_form_and_order_matters() -> None:
    l0 = Digest.parse("sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4")
    l1 = Digest.parse("sha256:e7d24e6a96bd3f7126ee6e5bea8d67c30bc6b7dae5cbf9ba07e79c6519e8e67b")
    ids = chain_ids([l0, l1])
    want = hashlib.sha256((str(l0) + " " + str(l1)).encode()).hexdigest()
    assert ids[1].hex == want
    assert ids[1].hex != hashlib.sha256(bytes.fromhex(l0.hex) + bytes.fromhex(l1.hex)).hexdigest()
    assert chain_ids([l1, l0])[1] != ids[1]  # order matters


def test_chain_id_of_nothing() -> None:
    with pytest.raises(InvalidArgument):
        chain_id([])


def test_layout_constants() -> None:
    assert OCI_LAYOUT_FILE == "oci-layout"
    assert OCI_LAYOUT_JSON == b'{"imageLayoutVersion":"1.0.0"}'
    assert ANNOTATION_REF_NAME == "org.opencontainers.image.ref.name"
    assert ANNOTATION_CONTAINERD_NAME == "io.containerd.image.name"
    assert ANNOTATION_CREATED == "org.opencontainers.image.created"
    assert blob_relpath(A) == f"blobs/sha256/{A.hex}"
    d512 = Digest.from_bytes(b"x", "sha512")
    assert blob_relpath(d512) == f"blobs/sha512/{d512.hex}"


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b'{"imageLayoutVersion": 1}', InvalidFormat, "imageLayoutVersion"),
        (b"{}", InvalidFormat, "imageLayoutVersion"),
        (b'{"imageLayoutVersion": "2.0.0"}', Unsupported, "not supported"),
        (b"[]", InvalidFormat, "JSON object"),
        (b" " * (65 << 10), LimitExceeded, "cap"),
    ],
)
def test_check_layout_file_errors(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        check_layout_file(data)


def test_check_layout_file_ok() -> None:
    assert check_layout_file(OCI_LAYOUT_JSON) == "1.0.0"
    assert check_layout_file(b'{"imageLayoutVersion": "1.1.0", "x": 1}') == "1.1.0"
