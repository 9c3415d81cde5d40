"""Malformed Dockerfiles: each error names the exact ``file:line:column``."""

from __future__ import annotations

import pytest

from lamina.dockerfile import ParseError, parse
from lamina.errors import InvalidFormat

# (source, "line:column", a fragment of the message)
BAD: list[tuple[str, str, str]] = [
    ("", "1:1", "no instructions"),
    ("# just a comment\n\n", "1:1", "no instructions"),
    ("ARG A=1\n", "1:1", "no FROM"),
    ("FROM scratch\nFOO bar\n", "2:1", "unknown instruction: FOO"),
    ("FROM scratch\n   BOGUS\n", "2:4", "unknown instruction: BOGUS"),
    ("RUN true\nFROM scratch\n", "1:1", "RUN before FROM"),
    ("ARG X\n  ENV a=b\nFROM scratch\n", "2:3", "ENV before FROM"),
    ("FROM\n", "1:1", "FROM requires"),
    ("FROM scratch\nRUN\n", "2:1", "RUN requires"),
    ("FROM scratch\nRUN --network=none\n", "2:1", "RUN requires"),
    ("FROM scratch\nCMD\n", "2:1", "CMD requires"),
    ("FROM scratch\nENTRYPOINT  \n", "2:1", "ENTRYPOINT requires"),
    ("FROM scratch\nCOPY onlyone\n", "2:6", "at least two arguments"),
    ("FROM scratch\nCOPY --chown=1 onlyone\n", "2:16", "at least two arguments"),
    ('FROM scratch\nADD ["a"]\n', "2:5", "at least two arguments"),
    ("FROM scratch\nWORKDIR\n", "2:1", "WORKDIR requires"),
    ("FROM scratch\nUSER\n", "2:1", "USER requires"),
    ("FROM scratch\nEXPOSE\n", "2:1", "EXPOSE requires"),
    ("FROM scratch\nVOLUME\n", "2:1", "VOLUME requires"),
    ('FROM scratch\nVOLUME [""]\n', "2:8", "can not be an empty string"),
    ("FROM scratch\nSTOPSIGNAL\n", "2:1", "STOPSIGNAL requires"),
    ("FROM scratch\nMAINTAINER\n", "2:1", "MAINTAINER requires"),
    ("FROM scratch\nLABEL\n", "2:1", "LABEL requires"),
    ("FROM scratch\nLABEL a=b c\n", "2:11", "expected key=value"),
    ("FROM scratch\nENV a=1 =2\n", "2:9", "can not be blank"),
    ("FROM scratch\nENV lonely\n", "2:5", "has no value"),
    ("FROM scratch\nARG\n", "2:1", "ARG requires"),
    ("FROM scratch\nARG =x\n", "2:5", "can not be blank"),
    # unknown and malformed flags point at the flag
    ("FROM scratch\nCOPY --frm=x a b\n", "2:6", "unknown flag: --frm"),
    ("FROM scratch\nCOPY a --from=x b\n", "1:1", "no-error"),  # flags only lead: fine
    ("FROM scratch\nADD --from=x a b\n", "2:5", "unknown flag: --from"),
    (
        "FROM scratch\nRUN --mount=type=cache,target=/x --bogus true\n",
        "2:34",
        "unknown flag: --bogus",
    ),
    ("FROM scratch\nRUN --mount=type=nfs,target=/x true\n", "2:5", "unknown mount type 'nfs'"),
    ("FROM scratch\nRUN --network=bridge true\n", "2:5", "unknown network mode"),
    ("FROM scratch\nRUN --security=root true\n", "2:5", "unknown security mode"),
    ("FROM scratch\nCOPY --link=maybe a b\n", "2:6", "true or false"),
    ("FROM scratch\nCOPY --from a b\n", "2:6", "requires a value"),
    ("FROM scratch\nCOPY --from= a b\n", "2:6", "requires a value"),
    ("FROM --plat=x scratch\n", "1:6", "unknown flag: --plat"),
    ("FROM scratch\nWORKDIR /a \\\n  \\\n RUN --nope x\n", "1:1", "no-error"),
    ("FROM scratch\nRUN true \\\n  && echo \\\n  --x\n", "1:1", "no-error"),
    ("FROM scratch\nRUN \\\n  --bad=1 true\n", "3:3", "unknown flag: --bad"),
    # --mount: each error points at the --mount flag it is about
    ("FROM scratch\nRUN --mount=type=cache true\n", "2:5", "requires target="),
    ("FROM scratch\nRUN --mount=source=x true\n", "2:5", "type=bind requires target="),
    ("FROM scratch\nRUN --mount=target=/a --mount=type=tmpfs true\n", "2:23", "requires target="),
    ("FROM scratch\nRUN --mount=target=/a,colour=red true\n", "2:5", "unknown option 'colour'"),
    ("FROM scratch\nRUN --mount=type=cache,target=/a,sharing=all true\n", "2:5", "sharing must be"),
    ('FROM scratch\nRUN --mount=type=cache,"target=/a true\n', "2:24", 'unterminated " quote'),
    ("FROM scratch\nRUN echo it's\n", "1:1", "no-error"),  # the shell's business
    ("FROM scratch\nCOPY --from=a --link --from=b x y\n", "2:22", "duplicate flag --from"),
    ("FROM scratch\nCOPY --exclude=a --exclude=b x y\n", "1:1", "no-error"),
    ("FROM scratch\nCOPY --link --chmod=999 a b\n", "2:13", "not an octal or symbolic mode"),
    ("FROM scratch\nADD --chmod=u+q a b\n", "2:5", "not an octal or symbolic mode"),
    ("FROM scratch\nCOPY --chmod=rwx a b\n", "2:6", "not an octal or symbolic mode"),
    ("FROM scratch\nCOPY --chmod=$MODE a b\n", "1:1", "no-error"),
    ("FROM scratch\nCOPY --chmod=a+rX,u-w,go=,o+t a b\n", "1:1", "no-error"),
    ("FROM scratch\nCOPY --chmod=0644 a b\n", "1:1", "no-error"),
    ("FROM scratch\nCMD --help\n", "2:5", "unknown flag: --help for CMD (known: none)"),
    ("FROM scratch\nUSER   --me\n", "2:8", "unknown flag: --me"),
    ("FROM scratch\nWORKDIR -- --odd\n", "1:1", "no-error"),
    ('FROM scratch\nENV --x="1\n', "2:9", 'unterminated " quote in a flag'),
    # quotes that never close
    ('FROM scratch\nENV a="x b=1\n', "2:7", 'unterminated " quote'),
    ("FROM scratch\nLABEL a=1 b='x\n", "2:13", "unterminated ' quote"),
    ('FROM scratch\nCOPY "a b /c\n', "2:6", 'unterminated " quote'),
    ('FROM scratch\nENV a="\\"" b=1\n', "1:1", "no-error"),
    # FROM
    ("FROM a b\n", "1:8", "FROM takes IMAGE [AS NAME]"),
    ("FROM a AS\n", "1:8", "FROM takes IMAGE [AS NAME]"),
    ("FROM a AS 1bad\n", "1:11", "invalid stage name '1bad'"),
    ("FROM a AS x\nFROM b AS X\n", "2:1", "duplicate stage name"),
    # heredocs
    ("FROM scratch\nRUN <<EOF\necho hi\n", "2:5", "unterminated heredoc 'EOF'"),
    ("FROM scratch\nRUN cat <<A <<B\na\nA\nb\n", "2:13", "unterminated heredoc 'B'"),
    ("FROM scratch\nCOPY <<-EOT /x\n\tbody\n  EOT\n", "2:6", "unterminated heredoc 'EOT'"),
    # SHELL
    ("FROM scratch\nSHELL /bin/sh -c\n", "2:7", "JSON array"),
    ("FROM scratch\nSHELL  []\n", "2:8", "JSON array"),
    ('FROM scratch\nSHELL ["a", 1]\n', "2:7", "JSON array"),
    ("FROM scratch\nSHELL\n", "2:1", "SHELL requires"),
    # HEALTHCHECK
    ("FROM scratch\nHEALTHCHECK\n", "2:1", "HEALTHCHECK requires"),
    ("FROM scratch\nHEALTHCHECK --interval=5 CMD true\n", "2:13", "not a duration"),
    ("FROM scratch\nHEALTHCHECK --retries=x CMD true\n", "2:13", "not a number"),
    ("FROM scratch\nHEALTHCHECK --retries=\u00b2 CMD true\n", "2:13", "not a number"),
    ("FROM scratch\nHEALTHCHECK --timeout=1s NONE\n", "2:26", "NONE takes no arguments"),
    ("FROM scratch\nHEALTHCHECK RUN true\n", "2:13", "expects NONE or CMD"),
    ("FROM scratch\nHEALTHCHECK CMD\n", "2:13", "requires a command"),
    ("FROM scratch\nHEALTHCHECK --check=1 CMD true\n", "2:13", "unknown flag"),
    # ONBUILD
    ("FROM scratch\nONBUILD FROM x\n", "2:9", "FROM isn't allowed as an ONBUILD trigger"),
    (
        "FROM scratch\nONBUILD  onbuild RUN x\n",
        "2:10",
        "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
    ),
    (
        "FROM scratch\nONBUILD MAINTAINER me\n",
        "2:9",
        "MAINTAINER isn't allowed as an ONBUILD trigger",
    ),
    ("FROM scratch\nONBUILD\n", "2:1", "ONBUILD requires"),
    ("FROM scratch\nONBUILD BLAH x\n", "2:9", "unknown instruction: BLAH"),
    ("FROM scratch\nONBUILD COPY --nope a b\n", "2:14", "unknown flag: --nope"),
    # directives
    ("# escape=x\nFROM scratch\n", "1:1", "invalid escape token"),
    ("# escape=\\\n  # escape=`\nFROM scratch\n", "2:3", "only one 'escape'"),
    ("# syntax=a\n# SYNTAX=b\nFROM scratch\n", "2:1", "only one 'syntax'"),
    # with the backtick escape a backslash is not a continuation
    ("# escape=`\nFROM scratch\nRUN echo \\\n  BAD x\n", "4:3", "unknown instruction: BAD"),
]


@pytest.mark.parametrize(("source", "where", "message"), BAD, ids=[s for s, _, _ in BAD])
def test_error_position(source: str, where: str, message: str) -> None:
    if message == "no-error":
        parse(source)  # the control cases: near-misses that are valid
        return
    with pytest.raises(ParseError) as info:
        parse(source, "ctx/Containerfile")
    err = info.value
    assert isinstance(err, InvalidFormat)
    assert str(err).startswith(f"ctx/Containerfile:{where}: "), str(err)
    assert message in err.reason
    line, column = (int(x) for x in where.split(":"))
    assert (err.location.file, err.location.line, err.location.column) == (
        "ctx/Containerfile",
        line,
        column,
    )


def test_errors_carry_hints() -> None:
    with pytest.raises(ParseError) as info:
        parse("FROM scratch\nRUN <<EOF\n")
    assert info.value.hint == "end it with a line holding only EOF"
    with pytest.raises(ParseError) as info:
        parse("FROM scratch\nSHELL sh\n")
    assert info.value.hint is not None and "SHELL [" in info.value.hint
