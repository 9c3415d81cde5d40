"""htpasswd files: bcrypt only, real hashes, reload on change, fail closed."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import bcrypt
import pytest

from lamina.errors import InvalidArgument, InvalidFormat, NotFound, Unsupported
from lamina.registry.authn.htpasswd import (
    Htpasswd,
    hash_password,
    parse_htpasswd,
    set_password,
    write_htpasswd,
)


def _bcrypt(password: str, prefix: bytes = b"$2b$", cost: int = 4) -> str:
    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost))
    return (prefix + h[4:]).decode()


def test_all_bcrypt_prefixes_verify(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(
        f"# a comment\n\nay:{_bcrypt('pa', b'$2a$')}\n"
        f"  by:{_bcrypt('pb', b'$2b$')}  \nyy:{_bcrypt('py', b'$2y$')}\n"
    )
    users = Htpasswd(str(path))
    assert users.users == {"ay", "by", "yy"}
    assert users.verify("ay", "pa")
    assert users.verify("by", "pb")
    assert users.verify("yy", "py")
    assert not users.verify("yy", "pa")
    assert not users.verify("yy", "")
    assert not users.verify("nobody", "py")


def test_password_with_colon_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "h"
    write_htpasswd(str(path), {"ünï": "a:b:c ∂"}, cost=4)
    assert os.stat(path).st_mode & 0o777 == 0o600
    users = Htpasswd(str(path))
    assert users.verify("ünï", "a:b:c ∂")
    assert not users.verify("ünï", "a:b:c")
    assert not users.verify("ünï", "a:b:c ∂\0")  # NUL cannot be hashed: refused, no crash


def test_long_passwords_truncate_like_htpasswd(tmp_path: Path) -> None:
    # Apache htpasswd and Go's bcrypt use the first 72 bytes; a file they wrote for a
    # long password must keep working (the bcrypt module alone would raise).
    long = "x" * 72
    path = tmp_path / "h"
    path.write_text(f"u:{_bcrypt(long)}\n")
    users = Htpasswd(str(path))
    assert users.verify("u", long)
    assert users.verify("u", long + "tail")
    assert not users.verify("u", long[:-1])


def test_hash_password_writes_2y() -> None:
    h = hash_password("secret", cost=4)
    assert h.startswith("$2y$04$") and len(h) == 60
    assert bcrypt.checkpw(b"secret", h.encode())
    with pytest.raises(InvalidArgument):
        hash_password("x", cost=3)


@pytest.mark.parametrize(
    ("hashed", "kind"),
    [
        ("$apr1$abcdefgh$0123456789012345678901", "Apache MD5"),
        ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
        ("$6$salt$" + "a" * 86, "crypt(3) (6)"),
        ("abJnggxhB/yWI", "DES crypt"),
        ("plaintextpassword", "plain-text"),
        ("$2b$04$tooshort", "malformed bcrypt"),
        ("$2x$04$" + "a" * 53, "malformed bcrypt"),
    ],
)
def test_other_hash_kinds_are_refused(tmp_path: Path, hashed: str, kind: str) -> None:
    path = tmp_path / "h"
    path.write_text(f"good:{_bcrypt('p')}\nbad:{hashed}\n")
    with pytest.raises(Unsupported) as info:
        Htpasswd(str(path))
    assert f"{path}:2" in info.value.message
    assert kind in info.value.message
    assert "htpasswd -B" in (info.value.hint or "")


def test_malformed_files() -> None:
    with pytest.raises(InvalidFormat, match="expected user:hash"):
        parse_htpasswd(b"nocolon\n")
    with pytest.raises(InvalidFormat, match="expected user:hash"):
        parse_htpasswd(b":" + _bcrypt("p").encode())
    with pytest.raises(InvalidFormat, match="twice"):
        h = _bcrypt("p").encode()
        parse_htpasswd(b"a:" + h + b"\na:" + h)
    with pytest.raises(InvalidFormat, match="UTF-8"):
        parse_htpasswd(b"\xff:" + _bcrypt("p").encode())
    assert parse_htpasswd(b"") == {}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        Htpasswd(str(tmp_path / "absent"))


def test_reload_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "h"
    write_htpasswd(str(path), {"alice": "one"}, cost=4)
    users = Htpasswd(str(path))
    assert users.verify("alice", "one")
    # htpasswd(1) rewrites in place; write_htpasswd replaces by rename: test both.
    write_htpasswd(str(path), {"alice": "two", "bob": "b"}, cost=4)
    assert users.verify("alice", "two")
    assert not users.verify("alice", "one")
    assert users.verify("bob", "b")
    with open(path, "w") as f:  # in place, same inode
        f.write(f"carol:{_bcrypt('c')}\n")
    assert users.verify("carol", "c")
    assert not users.verify("bob", "b")


def test_broken_reload_fails_closed_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "h"
    write_htpasswd(str(path), {"alice": "one"}, cost=4)
    users = Htpasswd(str(path))
    assert users.verify("alice", "one")
    path.write_text(f"alice:{_bcrypt('one')}\nbob:$apr1$x$y\n")
    assert not users.verify("alice", "one")
    assert users.error is not None and "Apache MD5" in users.error
    path.unlink()
    assert not users.verify("alice", "one")
    write_htpasswd(str(path), {"alice": "one"}, cost=4)
    assert users.verify("alice", "one")
    assert users.error is None


def test_unknown_users_cost_a_bcrypt_check(tmp_path: Path) -> None:
    # Timing must not tell which users exist: an unknown user is checked against a
    # dummy hash at the file's cost. Cost 10 makes one check ~50 ms, far above noise.
    path = tmp_path / "h"
    path.write_text(f"alice:{_bcrypt('pw', cost=10)}\n")
    users = Htpasswd(str(path))

    def timed(user: str) -> float:
        t = time.perf_counter()
        assert not users.verify(user, "wrong")
        return time.perf_counter() - t

    known = statistics.median(timed("alice") for _ in range(3))
    unknown = statistics.median(timed("mallory") for _ in range(3))
    # Without the dummy check an unknown user would take microseconds (ratio ~1e-4);
    # the bounds are loose because this machine is shared.
    assert unknown > known * 0.25, (known, unknown)
    assert unknown < known * 4.0, (known, unknown)


def test_a_verified_password_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_text(f"alice:{_bcrypt('pw', cost=10)}\n")
    users = Htpasswd(str(path))
    t = time.perf_counter()
    assert users.verify("alice", "pw")
    first = time.perf_counter() - t
    t = time.perf_counter()
    assert users.verify("alice", "pw")
    again = time.perf_counter() - t
    assert again < first / 10, (first, again)
    # Only successes are remembered: a wrong password still pays bcrypt, and is wrong.
    assert not users.verify("alice", "pW")
    assert not users.verify("bob", "pw")
    # The file changes: the remembered password no longer counts.
    path.write_text(f"alice:{_bcrypt('new')}\n")
    assert not users.verify("alice", "pw")
    assert users.verify("alice", "new")


def test_set_password_edits_one_user(tmp_path: Path) -> None:
    path = tmp_path / "h"
    assert set_password(str(path), "alice", "one", cost=4) is False  # file created
    path.write_text(path.read_text() + "# team\n" + f"bob:{_bcrypt('b')}\n")
    users = Htpasswd(str(path))
    assert users.verify("alice", "one") and users.verify("bob", "b")
    bob_line = [ln for ln in path.read_text().splitlines() if ln.startswith("bob:")]
    assert set_password(str(path), "alice", "two", cost=4) is True
    assert users.verify("alice", "two") and not users.verify("alice", "one")
    lines = path.read_text().splitlines()
    assert "# team" in lines and bob_line[0] in lines  # others kept byte for byte
    assert set_password(str(path), "alice", None) is True
    assert users.users == {"bob"}
    assert set_password(str(path), "nobody", None) is False
    for bad in ("", "a:b", "#x", " x", "a\nb"):
        with pytest.raises(InvalidArgument):
            set_password(str(path), bad, "p", cost=4)
    path.write_text("carol:{SHA}abc\n")
    with pytest.raises(Unsupported):  # never rewrite a file that would not load
        set_password(str(path), "alice", "p", cost=4)
    assert path.read_text() == "carol:{SHA}abc\n"
