"""Moving whole images between the store and a remote, over any transport.

``pull`` and ``push`` decide which blobs and manifests move, in which order (so that a
failure leaves nothing named), ingest and verify them, and commit; they speak only to
the :class:`~lamina.image.api.Fetcher` and :class:`~lamina.image.api.Pusher` Protocols,
so the registry client (``lamina.registry.client``), a peer or an in-memory test double
plug in alike. ``concurrency`` bounds the blobs in flight; ``blob_sources`` remembers
which repository each blob was seen in, for cross-repository mounts.
"""

from lamina.image.transfer.blob_sources import BlobSources
from lamina.image.transfer.concurrency import run_bounded
from lamina.image.transfer.pull import PullResult, pull_image
from lamina.image.transfer.push import MountSources, PushPlan, PushResult, plan_push, push_image

__all__ = [
    "BlobSources",
    "MountSources",
    "PullResult",
    "PushPlan",
    "PushResult",
    "plan_push",
    "pull_image",
    "push_image",
    "run_bounded",
]
