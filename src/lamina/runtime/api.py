"""What a container run needs from elsewhere, as contracts: the image, resolved and
unpacked into snapshots.

:func:`lamina.runtime.run.run_container` does not read images itself: ``lamina.image``
sits in the same row as the runtime (ARCHITECTURE.md §2), and the lazy runner will give
images whose layers are mounted on demand instead of unpacked. So the caller passes an
:class:`ImageSource`; the CLI's wraps the content store and
:func:`lamina.image.snapshots.unpack_to_snapshots`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lamina.oci.config import ContainerConfig
    from lamina.snapshot.api import Snapshotter


@dataclass(frozen=True, slots=True)
class RunImage:
    """An image ready to run.

    ``id`` is the image id (the config digest, ``sha256:...``); ``ref`` the name the
    container's record shows (the image's first name, else its id); ``config`` the
    config's ``config`` object (ENTRYPOINT, CMD, Env, User, WorkingDir, StopSignal).
    """

    id: str
    ref: str
    config: ContainerConfig


class ImageSource(Protocol):
    """Where runs get their images from. A run calls :meth:`resolve`, then (after it
    chose the OCI runtime) :meth:`unpack` on the image it got."""

    def resolve(self, ref: str) -> RunImage:
        """The image ``ref`` names (a name, an id or an id prefix); NotFound if none."""
        ...

    def unpack(self, image: RunImage, snapshotter: Snapshotter) -> str:
        """Make sure the layers of ``image`` (from :meth:`resolve`) are committed
        snapshots of ``snapshotter`` and return the name of the top one, on which the
        init snapshot is stacked. Idempotent: unpacked layers are reused."""
        ...
