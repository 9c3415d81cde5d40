"""`lamina registry passwd`: htpasswd users without apache2-utils."""

from __future__ import annotations

from pathlib import Path

from helpers.cli import Lamina
from lamina.registry.authn.htpasswd import Htpasswd


def test_add_change_delete(lamina: Lamina, tmp_path: Path) -> None:
    f = tmp_path / "htpasswd"
    added = lamina("registry", "passwd", str(f), "alice", "--password-stdin", input="s3cret\n")
    assert "Added user alice" in added.stderr
    lamina("registry", "passwd", str(f), "bob", "--password-stdin", input="other\n")
    assert Htpasswd(str(f)).verify("alice", "s3cret")
    assert not Htpasswd(str(f)).verify("alice", "wrong")
    changed = lamina("registry", "passwd", str(f), "alice", "--password-stdin", input="new\n")
    assert "Updated user alice" in changed.stderr
    assert Htpasswd(str(f)).verify("alice", "new") and not Htpasswd(str(f)).verify(
        "alice", "s3cret"
    )
    lamina("registry", "passwd", str(f), "alice", "-D")
    assert not Htpasswd(str(f)).verify("alice", "new")
    assert Htpasswd(str(f)).verify("bob", "other")  # the other line is kept
    gone = lamina("registry", "passwd", str(f), "alice", "-D", check=False)
    assert gone.returncode != 0 and "not in" in gone.stderr
    empty = lamina(
        "registry", "passwd", str(f), "carol", "--password-stdin", input="\n", check=False
    )
    assert empty.returncode != 0 and "empty password" in empty.stderr
