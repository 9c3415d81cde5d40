"""What confines a container, for ``lamina run``, ``lamina exec`` and build RUN steps.

- :mod:`~lamina.runtime.bundle.security.options`: :class:`SecurityOptions` (what the
  user asked for), :func:`gather` (what the host contributes) and :func:`apply` (both
  into a runtime spec); ``--privileged`` lives there.
- :mod:`~lamina.runtime.bundle.security.seccomp`: containers-common's profile, Docker's
  stricter rules, the translation of Docker-format profiles to ``linux.seccomp``.
- :mod:`~lamina.runtime.bundle.security.capabilities`: Docker's default set and the
  ``--cap-add``/``--cap-drop`` rules.
- :mod:`~lamina.runtime.bundle.security.devices`: ``--device`` and the host's devices.
"""

from __future__ import annotations

from lamina.exports import lazy_exports

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from lamina.runtime.bundle.security.capabilities import (
        DEFAULT_CAPABILITIES,
    )
    from lamina.runtime.bundle.security.devices import (
        DeviceRequest,
    )
    from lamina.runtime.bundle.security.options import (
        HostSecurity,
        SecurityOptions,
        apply,
        gather,
    )
    from lamina.runtime.bundle.security.seccomp import (
        DEFAULT_PROFILE,
    )

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_PROFILE",
    "DeviceRequest",
    "HostSecurity",
    "SecurityOptions",
    "apply",
    "gather",
]

_HOME = {
    "DEFAULT_CAPABILITIES": "capabilities",
    "DEFAULT_PROFILE": "seccomp",
    "DeviceRequest": "devices",
    "HostSecurity": "options",
    "SecurityOptions": "options",
    "apply": "options",
    "gather": "options",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
