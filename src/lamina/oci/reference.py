"""Image references, parsed as Docker and the distribution/reference grammar do.

Grammar (distribution/reference, normalised the way ``docker pull`` reads names)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] component ( "/" component )*
    domain     := host [ ":" port ]         host: DNS name, IPv4 or "[" IPv6 "]"
    component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}

The first path component is a registry only if it contains ``.`` or ``:``, is
``localhost``, or has an uppercase letter; otherwise the registry is ``docker.io`` and a
one-component repository gets ``library/`` in front. ``index.docker.io`` is ``docker.io``.
The whole name (registry + "/" + repository) is at most 255 characters.

This module is the one home of the name, tag and digest grammar: the registry server
validates a request's ``<name>`` and tag with :func:`is_valid_repository` and
:func:`is_valid_tag`. Its ``component`` and ``tag`` are distribution-spec's ("Pulling
manifests") ``<name>`` and tag expressions to the letter. Where the two sides differ:

- length: a :class:`Reference` caps registry + "/" + repository at 255 (the spec's
  implementer note on clients; distribution/reference's ``NameTotalLengthMax``), the
  server caps the ``<name>`` alone at :data:`REPOSITORY_NAME_MAX` (255, as
  distribution's registry does), so a long name may be served but not referenced
  through a long registry host;
- :meth:`Reference.parse` refuses a bare 64-hex text (an image ID), the server takes it
  as a name;
- :meth:`Reference.parse` reads an uppercase first component as a registry host and
  normalises ``docker.io`` names; the server only validates, it never rewrites.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lamina.errors import InvalidArgument, InvalidReference
from lamina.oci.digest import Digest

DEFAULT_REGISTRY = "docker.io"
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
# registry + "/" + repository of a Reference (distribution/reference NameTotalLengthMax).
NAME_TOTAL_LENGTH_MAX = 255
# A distribution API ``<name>`` (the repository alone), as distribution's registry caps it.
REPOSITORY_NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REPOSITORY = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(rf"({_DOMAIN})/({_REPOSITORY})(?::({_TAG}))?(?:@({_DIGEST}))?")
_DOMAIN_RE = re.compile(_DOMAIN)
_REPOSITORY_RE = re.compile(_REPOSITORY)
_TAG_RE = re.compile(_TAG)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_MAX_REFERENCE_TEXT = 1024


def is_valid_tag(tag: str) -> bool:
    """distribution-spec "Pulling manifests": a tag MUST match
    ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`` (so at most 128 characters)."""
    return _TAG_RE.fullmatch(tag) is not None


def is_valid_repository(repository: str) -> bool:
    """A repository path as the distribution API's ``<name>`` accepts it (no registry):
    distribution-spec "Pulling manifests" ``<name>`` expression, at most
    :data:`REPOSITORY_NAME_MAX` characters."""
    # Length first: it bounds the regular expression's work on hostile input.
    return (
        len(repository) <= REPOSITORY_NAME_MAX and _REPOSITORY_RE.fullmatch(repository) is not None
    )


def _split_registry(text: str) -> tuple[str, str]:
    slash = text.find("/")
    first = text[:slash]
    if slash == -1 or (
        "." not in first and ":" not in first and first != "localhost" and first == first.lower()
    ):
        registry, rest = DEFAULT_REGISTRY, text
    else:
        registry, rest = first, text[slash + 1 :]
    return _normalise(registry, rest)


def _normalise(registry: str, rest: str) -> tuple[str, str]:
    if registry == LEGACY_DEFAULT_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in rest:
        rest = OFFICIAL_REPO_PREFIX + rest
    return registry, rest


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised image reference; ``tag`` and ``digest`` may both be set."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        registry, repository = _normalise(self.registry, self.repository)
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "repository", repository)
        if not _DOMAIN_RE.fullmatch(registry):
            raise InvalidReference(f"invalid registry {registry!r} in image reference")
        if not _REPOSITORY_RE.fullmatch(repository):
            hint = None
            if _REPOSITORY_RE.fullmatch(repository.lower()):
                hint = "repository names are lowercase"
            raise InvalidReference(f"invalid repository name {repository!r}", hint=hint)
        if len(self.name) > NAME_TOTAL_LENGTH_MAX:
            raise InvalidReference(
                f"repository name {self.name[:40]}... is {len(self.name)} characters, "
                f"over the {NAME_TOTAL_LENGTH_MAX} allowed"
            )
        if self.tag is not None and not is_valid_tag(self.tag):
            raise InvalidReference(
                f"invalid tag {self.tag!r}",
                hint="a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -",
            )

    @classmethod
    def parse(cls, text: str, default_tag: str | None = "latest") -> Reference:
        """Parse a reference as ``docker pull`` does; ``default_tag`` is added when the
        text has neither tag nor digest (None: leave it without)."""
        if not text:
            raise InvalidReference("image reference is empty", hint="e.g. busybox:latest")
        if len(text) > _MAX_REFERENCE_TEXT:
            # name (255) + tag (129) + digest: anything longer is not a reference, and
            # capping it keeps the regular expressions cheap on hostile input.
            raise InvalidReference(f"image reference is {len(text)} characters long, too long")
        # distribution/reference: a bare 64-hex string is an image ID, never a name.
        if _IDENTIFIER_RE.fullmatch(text):
            raise InvalidReference(
                f"invalid repository name {text!r}: it looks like an image ID (64 hex digits)",
            )
        registry, rest = _split_registry(text)
        repository = rest.split("@", 1)[0].split(":", 1)[0]
        if repository != repository.lower():
            raise InvalidReference(
                f"invalid reference {text!r}: repository name {repository!r} must be lowercase",
                hint=f"repository names are lowercase: use {repository.lower()!r}",
            )
        m = _REFERENCE_RE.fullmatch(f"{registry}/{rest}")
        if m is None:
            raise InvalidReference(
                f"invalid reference format: {text!r}",
                hint="use [registry[:port]/]repository[:tag][@digest], e.g. localhost:5000/app:1.0",
            )
        digest: Digest | None = None
        if m.group(4):
            try:
                digest = Digest.parse(m.group(4))
            except InvalidArgument as exc:
                raise InvalidReference(
                    f"invalid digest in reference {text!r}: {exc.message}", hint=exc.hint
                ) from exc
        tag = m.group(3)
        if tag is None and digest is None:
            tag = default_tag
        return cls(m.group(1), m.group(2), tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        """The name as Docker shows it: ``busybox``, ``user/app``, ``localhost:5000/x``."""
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        rest = self.repository[len(OFFICIAL_REPO_PREFIX) :]
        if self.repository.startswith(OFFICIAL_REPO_PREFIX) and "/" not in rest:
            return rest
        first = self.repository.split("/", 1)[0]
        if "/" in self.repository and ("." in first or ":" in first or first == "localhost"):
            # "docker.io/a.b/c" shown as "a.b/c" would read back as registry a.b
            return self.name
        return self.repository

    def _suffix(self) -> str:
        out = f":{self.tag}" if self.tag is not None else ""
        return out + (f"@{self.digest}" if self.digest is not None else "")

    def familiar(self) -> str:
        """The short form Docker prints: ``busybox:latest``, ``user/app:1``."""
        return self.familiar_name + self._suffix()

    def __str__(self) -> str:
        return self.name + self._suffix()

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, self.digest)

    def with_digest(self, digest: Digest | None) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)
