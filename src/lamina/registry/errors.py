"""The distribution-spec error codes and their JSON bodies (spec "Error Codes").

A :class:`RegistryError` is what every pure function of the registry protocol raises
when a request must be refused; the server turns it into a status line and
:func:`error_body`. It is a :class:`lamina.errors.LaminaError`, so the CLI and the
client report it like any other lamina error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from lamina.errors import InvalidArgument, LaminaError

# distribution-spec "Error Codes": code -> (default HTTP status, default message).
CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (404, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    # distribution's own code for a malformed tag (not in the OCI spec's table)
    "TAG_INVALID": (400, "manifest tag did not match URI"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    # Not a spec code: 416 answers (out-of-order chunk, unsatisfiable range) carry no
    # JSON body in the spec, only a Range / Content-Range header.
    "RANGE_NOT_SATISFIABLE": (416, "requested range not satisfiable"),
}

# Codes whose responses the spec sends without an error body.
BODYLESS = frozenset({"RANGE_NOT_SATISFIABLE"})


class RegistryError(LaminaError):
    """A refusal in the distribution-spec vocabulary: ``code``, ``message``, ``detail``,
    ``status``, plus response ``headers`` the refusal needs (``Range`` on a 416 chunk,
    ``Content-Range`` on a 416 read, ``WWW-Authenticate`` on a 401)."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        hint: str | None = None,
    ) -> None:
        if code not in CODES:
            raise InvalidArgument(f"unknown registry error code {code!r}")
        default_status, default_message = CODES[code]
        super().__init__(message or default_message, hint=hint)
        self.code = code
        self.detail = detail
        self.status = default_status if status is None else status
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def has_body(self) -> bool:
        return self.code not in BODYLESS

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            out["detail"] = self.detail
        return out

    def __repr__(self) -> str:
        return f"RegistryError({self.code!r}, {self.message!r}, status={self.status})"


def error_body(errors: Iterable[RegistryError]) -> bytes:
    """The JSON body ``{"errors": [{"code", "message", "detail"?}, ...]}``; bodyless
    codes (416) are skipped, so a list of only those gives ``b""``."""
    items = [e.to_json() for e in errors if e.has_body]
    if not items:
        return b""
    return json.dumps({"errors": items}, separators=(",", ":"), sort_keys=True).encode()
