"""Table-driven parser suite: examples from the Dockerfile reference (BuildKit
``docker/dockerfile:1``) as listed in the research note §3."""

from __future__ import annotations

import pytest

from lamina.dockerfile import parse
from lamina.dockerfile.instructions import (
    Add,
    Arg,
    ArgDecl,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    ExecForm,
    Expose,
    From,
    Healthcheck,
    Heredoc,
    Instruction,
    Label,
    Location,
    Maintainer,
    Mount,
    OnBuild,
    Run,
    Shell,
    ShellForm,
    StopSignal,
    User,
    Volume,
    Workdir,
)


def L(line: int = 2, column: int = 1) -> Location:
    return Location("Dockerfile", line, column)


def one(body: str) -> Instruction:
    """The only instruction after ``FROM scratch``."""
    df = parse("FROM scratch\n" + body)
    (node,) = df.stages[-1].instructions
    return node


# (instruction text after "FROM scratch\n", the node it parses to)
SINGLE: list[tuple[str, Instruction]] = [
    # RUN: shell and exec forms
    ("RUN apt-get update", Run(L(), ShellForm("apt-get update"))),
    ("run echo hi", Run(L(), ShellForm("echo hi"))),
    (
        'RUN ["/bin/bash", "-c", "echo hello"]',
        Run(L(), ExecForm(("/bin/bash", "-c", "echo hello"))),
    ),
    ("RUN [ \"echo\", '$HOME' ]", Run(L(), ShellForm("[ \"echo\", '$HOME' ]"))),  # bad JSON
    ('RUN ["a", 1]', Run(L(), ShellForm('["a", 1]'))),  # not all strings: shell form
    ("RUN echo $HOME", Run(L(), ShellForm("echo $HOME"))),  # not expanded by the builder
    (
        "RUN /bin/bash -c 'source $HOME/.bashrc && \\\necho $HOME'",
        Run(L(), ShellForm("/bin/bash -c 'source $HOME/.bashrc && echo $HOME'")),
    ),
    (
        "RUN --mount=type=cache,target=/root/.cache/go-build go build",
        Run(L(), ShellForm("go build"), (Mount("cache", (("target", "/root/.cache/go-build"),)),)),
    ),
    (
        "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked,id=apt apt update",
        Run(
            L(),
            ShellForm("apt update"),
            (Mount("cache", (("target", "/var/cache/apt"), ("sharing", "locked"), ("id", "apt"))),),
        ),
    ),
    (
        "RUN --mount=target=/src,from=build,ro ls /src",
        Run(
            L(),
            ShellForm("ls /src"),
            (Mount("bind", (("target", "/src"), ("from", "build"), ("readonly", "true"))),),
        ),
    ),
    (
        "RUN --mount=type=secret,id=aws,target=/root/.aws/credentials --mount=type=ssh aws s3 cp",
        Run(
            L(),
            ShellForm("aws s3 cp"),
            (
                Mount("secret", (("id", "aws"), ("target", "/root/.aws/credentials"))),
                Mount("ssh", ()),
            ),
        ),
    ),
    (
        "RUN --mount=type=tmpfs,target=/tmp,size=64m true",
        Run(L(), ShellForm("true"), (Mount("tmpfs", (("target", "/tmp"), ("size", "64m"))),)),
    ),
    ("RUN --network=none pip install x", Run(L(), ShellForm("pip install x"), network="none")),
    ("RUN --network=host true", Run(L(), ShellForm("true"), network="host")),
    ("RUN --security=insecure true", Run(L(), ShellForm("true"), security="insecure")),
    ("RUN --device=/dev/fuse true", Run(L(), ShellForm("true"), device=("/dev/fuse",))),
    # CMD / ENTRYPOINT
    (
        'CMD ["executable","param1","param2"]',
        Cmd(L(), ExecForm(("executable", "param1", "param2"))),
    ),
    ('CMD ["param1","param2"]', Cmd(L(), ExecForm(("param1", "param2")))),
    ('CMD echo "This is a test." | wc -', Cmd(L(), ShellForm('echo "This is a test." | wc -'))),
    ("CMD []", Cmd(L(), ExecForm(()))),
    ('ENTRYPOINT ["top", "-b"]', Entrypoint(L(), ExecForm(("top", "-b")))),
    ("ENTRYPOINT exec top -b", Entrypoint(L(), ShellForm("exec top -b"))),
    # LABEL / MAINTAINER
    (
        'LABEL "com.example.vendor"="ACME Incorporated"',
        Label(L(), (('"com.example.vendor"', '"ACME Incorporated"'),)),
    ),
    ('LABEL version="1.0"', Label(L(), (("version", '"1.0"'),))),
    (
        'LABEL multi.label1="value1" multi.label2="value2" other="value3"',
        Label(
            L(), (("multi.label1", '"value1"'), ("multi.label2", '"value2"'), ("other", '"value3"'))
        ),
    ),
    (
        'LABEL multi.label1="value1" \\\n      multi.label2="value2" \\\n      other="value3"',
        Label(
            L(), (("multi.label1", '"value1"'), ("multi.label2", '"value2"'), ("other", '"value3"'))
        ),
    ),
    (
        'LABEL description="This text illustrates \\\nthat label-values can span multiple lines."',
        Label(
            L(),
            (
                (
                    "description",
                    '"This text illustrates that label-values can span multiple lines."',
                ),
            ),
        ),
    ),
    ("LABEL legacy spaced value", Label(L(), (("legacy", "spaced value"),))),
    ("MAINTAINER Jane Doe <jane@example.com>", Maintainer(L(), "Jane Doe <jane@example.com>")),
    # EXPOSE / ENV
    ("EXPOSE 80/udp", Expose(L(), ("80/udp",))),
    (
        "EXPOSE 80/tcp 80/udp 8000-8010 $PORT",
        Expose(L(), ("80/tcp", "80/udp", "8000-8010", "$PORT")),
    ),
    ('ENV MY_NAME="John Doe"', Env(L(), (("MY_NAME", '"John Doe"'),))),
    ("ENV MY_DOG=Rex\\ The\\ Dog", Env(L(), (("MY_DOG", "Rex\\ The\\ Dog"),))),
    ("ENV MY_CAT=fluffy", Env(L(), (("MY_CAT", "fluffy"),))),
    (
        'ENV MY_NAME="John Doe" MY_DOG=Rex\\ The\\ Dog \\\n    MY_CAT=fluffy',
        Env(L(), (("MY_NAME", '"John Doe"'), ("MY_DOG", "Rex\\ The\\ Dog"), ("MY_CAT", "fluffy"))),
    ),
    ("ENV MY_VAR my-value", Env(L(), (("MY_VAR", "my-value"),))),
    ("ENV ONE TWO= THREE=world", Env(L(), (("ONE", "TWO= THREE=world"),))),
    ("ENV abc=bye def=$abc", Env(L(), (("abc", "bye"), ("def", "$abc")))),
    ("ENV EMPTY=", Env(L(), (("EMPTY", ""),))),
    # ADD / COPY
    ("ADD hom* /mydir/", Add(L(), ("hom*",), "/mydir/")),
    ("ADD hom?.txt /mydir/", Add(L(), ("hom?.txt",), "/mydir/")),
    ("ADD test.txt relativeDir/", Add(L(), ("test.txt",), "relativeDir/")),
    (
        "ADD --chown=55:mygroup files* /somedir/",
        Add(L(), ("files*",), "/somedir/", chown="55:mygroup"),
    ),
    ("ADD --chown=bin files* /somedir/", Add(L(), ("files*",), "/somedir/", chown="bin")),
    (
        "ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d"
        " https://mirrors.edge.kernel.org/pub/linux/kernel/Historic/linux-0.01.tar.gz /",
        Add(
            L(),
            ("https://mirrors.edge.kernel.org/pub/linux/kernel/Historic/linux-0.01.tar.gz",),
            "/",
            checksum="sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d",
        ),
    ),
    (
        "ADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.10.1 /buildkit",
        Add(L(), ("https://github.com/moby/buildkit.git#v0.10.1",), "/buildkit", keep_git_dir=True),
    ),
    ("ADD --unpack=false x.tar.gz /", Add(L(), ("x.tar.gz",), "/", unpack=False)),
    ("ADD --unpack x.tar.gz /", Add(L(), ("x.tar.gz",), "/", unpack=True)),
    ("ADD --link --exclude=*.txt a /", Add(L(), ("a",), "/", link=True, exclude=("*.txt",))),
    ('ADD ["my file", "/dst dir/"]', Add(L(), ("my file",), "/dst dir/")),
    ("COPY hom* /mydir/", Copy(L(), ("hom*",), "/mydir/")),
    ("COPY a b c /d/", Copy(L(), ("a", "b", "c"), "/d/")),
    ('COPY ["arr[[]0].txt", "/mydir/"]', Copy(L(), ("arr[[]0].txt",), "/mydir/")),
    (
        "COPY --chown=myuser:mygroup --chmod=644 files* /somedir/",
        Copy(L(), ("files*",), "/somedir/", chown="myuser:mygroup", chmod="644"),
    ),
    ("COPY --chmod=u=rwX,go=rX a /", Copy(L(), ("a",), "/", chmod="u=rwX,go=rX")),
    ("COPY --from=build /myapp /usr/bin/", Copy(L(), ("/myapp",), "/usr/bin/", from_="build")),
    (
        "COPY --from=nginx:latest /etc/nginx/nginx.conf /nginx.conf",
        Copy(L(), ("/etc/nginx/nginx.conf",), "/nginx.conf", from_="nginx:latest"),
    ),
    ("COPY --link /foo /bar", Copy(L(), ("/foo",), "/bar", link=True)),
    ("COPY --link=false /foo /bar", Copy(L(), ("/foo",), "/bar")),
    ("COPY --parents ./x/*.txt /dst/", Copy(L(), ("./x/*.txt",), "/dst/", parents=True)),
    (
        "COPY --exclude=*.txt --exclude=*.md hom* /mydir/",
        Copy(L(), ("hom*",), "/mydir/", exclude=("*.txt", "*.md")),
    ),
    ("COPY -- --weird /dst", Copy(L(), ("--weird",), "/dst")),
    ("COPY $SRC ${DST}", Copy(L(), ("$SRC",), "${DST}")),
    # WORKDIR / USER / VOLUME / STOPSIGNAL / SHELL
    ("WORKDIR /path/to/workdir", Workdir(L(), "/path/to/workdir")),
    ("WORKDIR $DIRPATH/$DIRNAME", Workdir(L(), "$DIRPATH/$DIRNAME")),
    ("WORKDIR -- --odd", Workdir(L(), "--odd")),
    ("USER patrick", User(L(), "patrick")),
    ("USER 1000:1000", User(L(), "1000:1000")),
    ('VOLUME ["/data"]', Volume(L(), ("/data",))),
    ("VOLUME /var/log /var/db", Volume(L(), ("/var/log", "/var/db"))),
    ("VOLUME /myvol", Volume(L(), ("/myvol",))),
    ("STOPSIGNAL SIGKILL", StopSignal(L(), "SIGKILL")),
    ("STOPSIGNAL 9", StopSignal(L(), "9")),
    ('SHELL ["powershell", "-command"]', Shell(L(), ("powershell", "-command"))),
    (
        'SHELL ["/bin/bash", "-o", "pipefail", "-c"]',
        Shell(L(), ("/bin/bash", "-o", "pipefail", "-c")),
    ),
    # HEALTHCHECK
    ("HEALTHCHECK NONE", Healthcheck(L(), None)),
    (
        "HEALTHCHECK --interval=5m --timeout=3s \\\n  CMD curl -f http://localhost/ || exit 1",
        Healthcheck(L(), ShellForm("curl -f http://localhost/ || exit 1"), "5m", "3s"),
    ),
    (
        'HEALTHCHECK --start-period=1m30s --start-interval=5s --retries=3 CMD ["/bin/check"]',
        Healthcheck(
            L(), ExecForm(("/bin/check",)), start_period="1m30s", start_interval="5s", retries=3
        ),
    ),
    # ARG
    ("ARG user1", Arg(L(), (ArgDecl("user1", None),))),
    ("ARG buildno=1", Arg(L(), (ArgDecl("buildno", "1"),))),
    ("ARG a=1 b c=", Arg(L(), (ArgDecl("a", "1"), ArgDecl("b", None), ArgDecl("c", "")))),
    ('ARG msg="hello world"', Arg(L(), (ArgDecl("msg", '"hello world"'),))),
    # ONBUILD
    ("ONBUILD ADD . /app/src", OnBuild(L(), Add(L(2, 9), (".",), "/app/src"), "ADD . /app/src")),
    (
        "ONBUILD RUN /usr/local/bin/python-build --dir /app/src",
        OnBuild(
            L(),
            Run(L(2, 9), ShellForm("/usr/local/bin/python-build --dir /app/src")),
            "RUN /usr/local/bin/python-build --dir /app/src",
        ),
    ),
    (
        "onbuild copy --from=x a /b",
        OnBuild(L(), Copy(L(2, 9), ("a",), "/b", from_="x"), "copy --from=x a /b"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), SINGLE, ids=[t for t, _ in SINGLE])
def test_instruction(text: str, expected: Instruction) -> None:
    assert one(text + "\n") == expected


# Heredocs (BuildKit 1.4+): (text after "FROM scratch\n", the node)
HEREDOCS: list[tuple[str, Instruction]] = [
    (
        "RUN <<EOF\napt-get update\napt-get install -y vim\nEOF\n",
        Run(
            L(),
            ShellForm("<<EOF"),
            heredocs=(Heredoc("EOF", "apt-get update\napt-get install -y vim\n", True, False),),
        ),
    ),
    (
        "RUN <<EOT bash\n  set -ex\n  apt-get update\nEOT\n",
        Run(
            L(),
            ShellForm("<<EOT bash"),
            heredocs=(Heredoc("EOT", "  set -ex\n  apt-get update\n", True, False),),
        ),
    ),
    (
        'RUN python3 <<"EOF"\nprint("$HOME")\nEOF\n',
        Run(
            L(),
            ShellForm('python3 <<"EOF"'),
            heredocs=(Heredoc("EOF", 'print("$HOME")\n', False, False),),
        ),
    ),
    (
        "RUN <<-EOF\n\t\techo tabbed\n\tEOF\n",
        Run(L(), ShellForm("<<-EOF"), heredocs=(Heredoc("EOF", "echo tabbed\n", True, True),)),
    ),
    (
        "RUN <<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2\n",
        Run(
            L(),
            ShellForm("<<FILE1 cat > file1 && <<FILE2 cat > file2"),
            heredocs=(
                Heredoc("FILE1", "I am\nfirst\n", True, False),
                Heredoc("FILE2", "I am\nsecond\n", True, False),
            ),
        ),
    ),
    (
        "COPY <<EOF /usr/share/nginx/html/index.html\n(your index page goes here)\nEOF\n",
        Copy(
            L(),
            ("<<EOF",),
            "/usr/share/nginx/html/index.html",
            heredocs=(Heredoc("EOF", "(your index page goes here)\n", True, False),),
        ),
    ),
    (
        "COPY <<robots.txt <<humans.txt /usr/share/nginx/html/\n"
        "(robots)\nrobots.txt\n(humans)\nhumans.txt\n",
        Copy(
            L(),
            ("<<robots.txt", "<<humans.txt"),
            "/usr/share/nginx/html/",
            heredocs=(
                Heredoc("robots.txt", "(robots)\n", True, False),
                Heredoc("humans.txt", "(humans)\n", True, False),
            ),
        ),
    ),
    (
        "ADD <<'EOT' /x\n$notexpanded\nEOT\n",
        Add(L(), ("<<'EOT'",), "/x", heredocs=(Heredoc("EOT", "$notexpanded\n", False, False),)),
    ),
    (
        "RUN 3<<EOF cat /dev/fd/3\nfd\nEOF\n",
        Run(
            L(),
            ShellForm("3<<EOF cat /dev/fd/3"),
            heredocs=(Heredoc("EOF", "fd\n", True, False, 3),),
        ),
    ),
    ("RUN <<EOF\nEOF\n", Run(L(), ShellForm("<<EOF"), heredocs=(Heredoc("EOF", "", True, False),))),
    # "<<" that is not a heredoc word stays shell text
    ("RUN echo a<<b", Run(L(), ShellForm("echo a<<b"))),
    ("RUN cat <<<here", Run(L(), ShellForm("cat <<<here"))),
    # heredocs only for RUN/COPY/ADD: in CMD "<<EOF" is plain text
    ("CMD cat <<EOF", Cmd(L(), ShellForm("cat <<EOF"))),
]


@pytest.mark.parametrize(
    ("text", "expected"), HEREDOCS, ids=[t.split("\n")[0] for t, _ in HEREDOCS]
)
def test_heredoc(text: str, expected: Instruction) -> None:
    assert one(text) == expected


def test_heredoc_body_is_not_parsed_as_instructions() -> None:
    df = parse("FROM scratch\nRUN <<EOF\nFROM evil\nNOTANINSTR x\nEOF\nUSER 1\n")
    assert [type(i).__name__ for i in df.stages[0].instructions] == ["Run", "User"]
    assert df.stages[0].instructions[1].location == L(6)


def test_multi_stage() -> None:
    df = parse(
        "ARG CODE_VERSION=latest\n"
        "ARG  A B=2\n"
        "FROM base:${CODE_VERSION} AS Build\n"
        "CMD  /code/run-app\n"
        "\n"
        "FROM extras:${CODE_VERSION}\n"
        "COPY --from=build /a /b\n"
        "FROM --platform=$BUILDPLATFORM golang@sha256:abc as final\n"
        "ARG CODE_VERSION\n"
    )
    assert df.global_args == (
        Arg(L(1), (ArgDecl("CODE_VERSION", "latest"),)),
        Arg(L(2), (ArgDecl("A", None), ArgDecl("B", "2"))),
    )
    assert [s.name for s in df.stages] == ["Build", None, "final"]
    assert [s.index for s in df.stages] == [0, 1, 2]
    assert df.stages[0].base == From(L(3), "base:${CODE_VERSION}", None, "Build")
    assert df.stages[0].instructions == (Cmd(L(4), ShellForm("/code/run-app")),)
    assert df.stages[1].base == From(L(6), "extras:${CODE_VERSION}")
    assert df.stages[2].base == From(L(8), "golang@sha256:abc", "$BUILDPLATFORM", "final")
    assert df.stages[2].instructions == (Arg(L(9), (ArgDecl("CODE_VERSION", None),)),)
    assert df.stage("BUILD") is df.stages[0]
    assert df.stage("1") is df.stages[1]
    assert df.stage("nope") is None
    assert df.stage("3") is None
    assert df.stage("\u00b2") is None


def test_directives() -> None:
    df = parse("# syntax=docker/dockerfile:1.4\n# check=skip=JSONArgsRecommended\nFROM scratch\n")
    assert df.syntax == "docker/dockerfile:1.4"
    assert df.directives == (
        ("syntax", "docker/dockerfile:1.4"),
        ("check", "skip=JSONArgsRecommended"),
    )
    assert df.escape == "\\"
    df = parse("#   ESCAPE = `  \nFROM scratch\n")
    assert df.escape == "`"


@pytest.mark.parametrize(
    "source",
    [
        "FROM scratch\n# escape=`\n",  # after an instruction
        "\n# escape=`\nFROM scratch\n",  # after a blank line
        "# a comment\n# escape=`\nFROM scratch\n",  # after a comment
        "# unknowndirective=x\n# escape=`\nFROM scratch\n",  # unknown ends directives
        "#escape=`\n",  # no FROM but escape recognised: see test_errors
    ][:4],
)
def test_directive_only_at_top(source: str) -> None:
    assert parse(source).escape == "\\"


def test_escape_backtick_continuation() -> None:
    df = parse(
        "# escape=`\n\nFROM microsoft/nanoserver\nCOPY testfile.txt c:\\\nRUN dir c:\\ `\n  /s\n"
    )
    (copy, run) = df.stages[0].instructions
    assert copy == Copy(L(4), ("testfile.txt",), "c:\\")
    assert run == Run(L(5), ShellForm("dir c:\\   /s"))


def test_continuation_comments_and_blank_lines_dropped() -> None:
    df = parse(
        "FROM scratch\n"
        "RUN echo hello \\\n"
        "# comment\n"
        "\n"
        "    # indented comment\n"
        "world\n"
        "  run   echo   spaced  \n"
        "RUN echo \\  \n"
        "last\n"
    )
    assert df.stages[0].instructions == (
        Run(L(2), ShellForm("echo hello world")),
        Run(L(7, 3), ShellForm("echo   spaced")),
        Run(L(8), ShellForm("echo last")),
    )


def test_blank_continuations_are_skipped() -> None:
    df = parse("\\\n  \\\n\nFROM scratch\n")
    assert df.stages[0].base.location == L(4)


def test_continuation_at_end_of_file() -> None:
    assert one("RUN echo hi \\") == Run(L(), ShellForm("echo hi"))


def test_comments_and_crlf_and_bom() -> None:
    df = parse(
        "\ufeff# comment\r\nFROM scratch\r\n  # indented comment\r\nUSER x # not a comment\r\n"
    )
    assert df.stages[0].instructions == (User(L(4), "x # not a comment"),)


def test_only_newline_ends_a_line() -> None:
    df = parse("FROM scratch\nRUN x\x0cy\u2028z\x85\r\nUSER u\n")
    run, user = df.stages[0].instructions
    assert run == Run(L(), ShellForm("x\x0cy\u2028z"))  # \x85 is trailing space
    assert user.location == L(3)


def test_heredoc_bodies_keep_crlf() -> None:
    df = parse("FROM scratch\r\nCOPY <<-EOF /x\r\n\ta\r\nb\n\tEOF\r\nUSER u\r\n")
    copy, user = df.stages[0].instructions
    assert isinstance(copy, Copy)
    assert copy.heredocs == (Heredoc("EOF", "a\r\nb\n", True, True),)
    assert user == User(L(6), "u")


def test_onbuild_positions_across_continuation() -> None:
    df = parse("FROM scratch\nONBUILD \\\n  RUN true\n")
    (node,) = df.stages[0].instructions
    assert isinstance(node, OnBuild)
    assert node.instruction == Run(L(3, 3), ShellForm("true"))


def test_nodes_are_frozen() -> None:
    node = one("USER x\n")
    assert isinstance(node, User)
    with pytest.raises(AttributeError):
        node.user = "y"  # type: ignore[misc]
