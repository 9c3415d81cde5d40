"""OCI image layout names and constants (image-spec image-layout.md, annotations.md).

Pure: the paths and bytes a layout has; ``lamina.image`` does the I/O.
"""

from __future__ import annotations

from lamina.errors import InvalidFormat, Unsupported
from lamina.oci.canonical import canonical_json, load_json_object
from lamina.oci.digest import Digest

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs"
IMAGE_LAYOUT_VERSION = "1.0.0"
OCI_LAYOUT_JSON = canonical_json({"imageLayoutVersion": IMAGE_LAYOUT_VERSION})

# annotations.md "Pre-Defined Annotation Keys". ref.name is valid only on index.json
# entries of a layout; tools write the tag alone ("latest"), containerd also writes the
# full reference under io.containerd.image.name.
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_AUTHORS = "org.opencontainers.image.authors"
ANNOTATION_URL = "org.opencontainers.image.url"
ANNOTATION_DOCUMENTATION = "org.opencontainers.image.documentation"
ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_REVISION = "org.opencontainers.image.revision"
ANNOTATION_VENDOR = "org.opencontainers.image.vendor"
ANNOTATION_LICENSES = "org.opencontainers.image.licenses"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_DESCRIPTION = "org.opencontainers.image.description"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"


def blob_relpath(digest: Digest) -> str:
    """``blobs/<alg>/<encoded>``; safe as a path because a Digest is validated."""
    return f"{BLOBS_DIR}/{digest.algorithm}/{digest.encoded}"


def check_layout_file(data: bytes) -> str:
    """Validate the ``oci-layout`` file; returns its imageLayoutVersion.

    image-layout.md: the file MUST hold ``imageLayoutVersion``; lamina reads 1.x.
    """
    obj = load_json_object(data, OCI_LAYOUT_FILE, max_bytes=64 << 10)
    version = obj.get("imageLayoutVersion")
    if not isinstance(version, str):
        raise InvalidFormat(f"{OCI_LAYOUT_FILE} lacks a string imageLayoutVersion")
    if version.split(".")[0] != "1":
        raise Unsupported(f"OCI layout version {version!r} is not supported (want 1.x)")
    return version
