"""The reference grammar: names, tags, digests; a parsed reference must round-trip."""

from __future__ import annotations

from fuzz.harness import tolerant
from lamina.oci.digest import Digest
from lamina.oci.platform import Platform
from lamina.oci.reference import Reference, is_valid_repository, is_valid_tag


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    is_valid_tag(text)
    is_valid_repository(text)
    tolerant(Digest.parse, text)
    tolerant(Platform.parse, text)
    ref = Reference.parse(text)
    again = Reference.parse(str(ref))
    assert again == ref, f"{text!r} -> {ref} -> {again}"
    assert Reference.parse(ref.familiar()) == ref, f"{text!r} -> {ref.familiar()}"
