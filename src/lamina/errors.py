"""The one exception taxonomy of lamina.

Every error lamina raises on purpose is a :class:`LaminaError`; third-party exceptions
are wrapped at the boundary (``raise NotFound(...) from exc``). The CLI prints
``error: <message>`` and, when there is one, ``hint: <hint>`` and exits with the
class's ``exit_code``.

::

    LaminaError
    ├── NotFound                 a blob, ref, image, file or tool that is not there
    ├── AlreadyExists            a name that is taken
    ├── InvalidArgument          bad input from the user or a peer
    │   ├── InvalidReference     an image reference that does not parse
    │   └── InvalidFormat        malformed JSON, manifest, config, tar or archive
    ├── IntegrityError           content that is not what its descriptor says
    │   ├── DigestMismatch
    │   └── SizeMismatch
    ├── Unsafe                   content that would escape its root or harm the host
    │   └── LimitExceeded        a cap on size, count or ratio was hit (bombs, huge headers)
    ├── Unsupported              valid, but lamina does not do it (yet)
    ├── Conflict                 state that forbids the operation (in use, locked)
    │   └── InUse                something still needs it (an image a container uses)
    └── ToolError                an external program (runc, umoci, ...) failed

Errors carry a one-line ``message`` and an optional ``hint`` that says what to do next.
"""

from __future__ import annotations


class LaminaError(Exception):
    """Base of every error lamina raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class NotFound(LaminaError):
    exit_code = 2


class AlreadyExists(LaminaError):
    exit_code = 3


class InvalidArgument(LaminaError):
    exit_code = 4


class InvalidReference(InvalidArgument):
    pass


class InvalidFormat(InvalidArgument):
    pass


class IntegrityError(LaminaError):
    exit_code = 5


class DigestMismatch(IntegrityError):
    pass


class SizeMismatch(IntegrityError):
    pass


class Unsafe(LaminaError):
    exit_code = 6


class LimitExceeded(Unsafe):
    pass


class Unsupported(LaminaError):
    exit_code = 7


class Conflict(LaminaError):
    exit_code = 8


class InUse(Conflict):
    exit_code = 10


class ToolError(LaminaError):
    exit_code = 9
