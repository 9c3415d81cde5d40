"""ImageConfig: parsing, validation, verbatim round trip of unknown fields, building."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from lamina.errors import InvalidArgument, InvalidFormat, LimitExceeded
from lamina.oci.canonical import MAX_DOCUMENT_BYTES
from lamina.oci.config import (
    ContainerConfig,
    Healthcheck,
    History,
    ImageConfig,
    RootFS,
    parse_rfc3339,
)
from lamina.oci.digest import Digest
from lamina.oci.platform import Platform

D1 = Digest.from_bytes(b"layer1")
D2 = Digest.from_bytes(b"layer2")

# What `docker inspect`-era Docker writes: many fields the OCI spec does not define.
DOCKER_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-02-01T12:34:56.123456789Z",
    "author": "someone",
    "docker_version": "20.10.23",
    "container": "f1e2d3",
    "container_config": {"Hostname": "f1e2d3", "Cmd": ["/bin/sh", "-c", '#(nop) CMD ["sh"]']},
    "config": {
        "Hostname": "",
        "Domainname": "",
        "User": "1000:1000",
        "AttachStdin": False,
        "Tty": False,
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
        "Entrypoint": ["/entry.sh"],
        "Cmd": ["sh"],
        "Image": "sha256:" + "b" * 64,
        "Volumes": {"/data": {}},
        "WorkingDir": "/srv",
        "Labels": {"org.opencontainers.image.title": "demo"},
        "StopSignal": "SIGQUIT",
        "ArgsEscaped": True,
        "Healthcheck": {
            "Test": ["CMD-SHELL", "curl -f http://localhost/"],
            "Interval": 30_000_000_000,
            "Timeout": 5_000_000_000,
            "StartPeriod": 1_000_000_000,
            "StartInterval": 2_000_000_000,
            "Retries": 3,
        },
        "OnBuild": ["RUN echo hi"],
        "Shell": ["/bin/bash", "-c"],
    },
    "rootfs": {"type": "layers", "diff_ids": [str(D1), str(D2)]},
    "history": [
        {"created": "2024-02-01T12:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:x in /"},
        {"created": "2024-02-01T12:00:01Z", "created_by": 'CMD ["sh"]', "empty_layer": True},
        {"created_by": "RUN make", "author": "a", "comment": "buildkit.dockerfile.v0"},
    ],
}


def test_parse_docker_config() -> None:
    c = ImageConfig.parse(json.dumps(DOCKER_CONFIG).encode())
    assert (c.architecture, c.os, c.variant) == ("amd64", "linux", "")
    assert c.created == "2024-02-01T12:34:56.123456789Z"
    assert c.author == "someone"
    assert c.diff_ids == (D1, D2)
    assert c.rootfs == RootFS((D1, D2))
    assert c.history[1] == History(
        "2024-02-01T12:00:01Z", 'CMD ["sh"]', None, None, empty_layer=True
    )
    assert c.history[2].comment == "buildkit.dockerfile.v0"
    cc = c.config
    assert cc.user == "1000:1000"
    assert cc.exposed_ports == ("53/udp", "80/tcp")  # sorted: a Go map has no order
    assert cc.env == ("PATH=/usr/bin:/bin", "LANG=C.UTF-8")
    assert cc.env_dict() == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    assert cc.entrypoint == ("/entry.sh",)
    assert cc.cmd == ("sh",)
    assert cc.volumes == ("/data",)
    assert cc.working_dir == "/srv"
    assert dict(cc.labels) == {"org.opencontainers.image.title": "demo"}
    assert cc.stop_signal == "SIGQUIT"
    assert cc.args_escaped is True
    assert cc.healthcheck == Healthcheck(
        ("CMD-SHELL", "curl -f http://localhost/"),
        30_000_000_000,
        5_000_000_000,
        1_000_000_000,
        2_000_000_000,
        3,
    )
    assert cc.on_build == ("RUN echo hi",)
    assert cc.shell == ("/bin/bash", "-c")
    assert set(cc.extra) == {"Hostname", "Domainname", "AttachStdin", "Tty", "Image"}
    assert set(c.extra) == {"docker_version", "container", "container_config"}
    assert c.history_consistent
    assert c.platform == Platform("linux", "amd64")


def test_round_trip_keeps_unknown_fields_verbatim() -> None:
    c = ImageConfig.parse(json.dumps(DOCKER_CONFIG).encode())
    out = json.loads(c.to_bytes())
    assert out == DOCKER_CONFIG  # nothing lost, nothing added
    # unknown fields, even falsy ones, come back exactly
    assert out["config"]["Hostname"] == "" and out["config"]["AttachStdin"] is False
    assert out["container_config"] == DOCKER_CONFIG["container_config"]
    assert ImageConfig.parse(c.to_bytes()) == c
    assert ImageConfig.parse(c.to_bytes()).to_bytes() == c.to_bytes()


def test_extra_fields_are_not_shared_with_the_input() -> None:
    obj = copy.deepcopy(DOCKER_CONFIG)
    c = ImageConfig.from_json(obj)
    obj["container_config"]["Hostname"] = "changed"
    assert c.extra["container_config"]["Hostname"] == "f1e2d3"
    out = c.to_json()
    out["container_config"]["Hostname"] = "changed again"
    assert c.to_json()["container_config"]["Hostname"] == "f1e2d3"


def test_minimal_oci_config() -> None:
    data = (
        b'{"architecture":"arm64","os":"linux",'
        b'"rootfs":{"diff_ids":[],"type":"layers"},"variant":"v8"}'
    )
    c = ImageConfig.parse(data)
    assert c.config == ContainerConfig()
    assert c.diff_ids == () and c.history == ()
    assert c.platform == Platform("linux", "arm64", "v8")
    assert c.to_bytes() == data


def test_windows_fields() -> None:
    c = ImageConfig.parse(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "windows",
                "os.version": "10.0.17763.1040",
                "os.features": ["win32k"],
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        ).encode()
    )
    assert c.platform == Platform("windows", "amd64", "", "10.0.17763.1040", ("win32k",))
    assert json.loads(c.to_bytes())["os.features"] == ["win32k"]


def test_null_fields_read_as_unset() -> None:
    c = ImageConfig.parse(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "Env": None,
                    "Cmd": None,
                    "Entrypoint": None,
                    "Labels": None,
                    "ExposedPorts": None,
                    "Volumes": None,
                    "Healthcheck": None,
                    "ArgsEscaped": None,
                    "User": None,
                },
                "rootfs": {"type": "layers", "diff_ids": None},
                "history": None,
            }
        ).encode()
    )
    assert c.config == ContainerConfig()
    assert c.config.cmd is None and c.config.entrypoint is None


def test_empty_cmd_is_not_unset() -> None:
    c = ImageConfig.new(Platform("linux", "amd64")).with_config(ContainerConfig(entrypoint=[]))  # type: ignore[arg-type]
    assert c.config.entrypoint == ()
    again = ImageConfig.parse(c.to_bytes())
    assert again.config.entrypoint == ()
    assert again.config.cmd is None


def base(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [str(D1)]},
    }
    obj.update(over)
    return obj


INVALID: list[tuple[str, dict[str, Any] | bytes, str]] = [
    ("not an object", b"[]", "JSON object"),
    ("not JSON", b"{", "not valid JSON"),
    ("no architecture", {"os": "linux", "rootfs": {"type": "layers"}}, "'architecture'"),
    ("empty os", base(os=""), "'os'"),
    ("os not a string", base(os=1), "'os'"),
    ("no rootfs", {"architecture": "amd64", "os": "linux"}, "'rootfs'"),
    ("rootfs not an object", base(rootfs=[]), "JSON object"),
    ("rootfs type wrong", base(rootfs={"type": "layer", "diff_ids": []}), "must be 'layers'"),
    ("rootfs type missing", base(rootfs={"diff_ids": []}), "must be 'layers'"),
    ("diff_ids not a list", base(rootfs={"type": "layers", "diff_ids": "x"}), "list of strings"),
    (
        "diff_id not a digest",
        base(rootfs={"type": "layers", "diff_ids": ["sha256:zz"]}),
        "diff_ids\\[0\\]",
    ),
    ("diff_id without algorithm", base(rootfs={"type": "layers", "diff_ids": ["abc"]}), "diff_ids"),
    ("history not a list", base(history={}), "'history' must be a list"),
    ("history entry not an object", base(history=[1]), "history\\[0\\]"),
    ("history created not a string", base(history=[{"created": 5}]), "'created'"),
    ("history empty_layer not bool", base(history=[{"empty_layer": "yes"}]), "'empty_layer'"),
    ("created not a string", base(created=1700000000), "'created'"),
    ("author not a string", base(author=["a"]), "'author'"),
    ("variant not a string", base(variant=8), "'variant'"),
    ("os.features not a list", base(**{"os.features": "x"}), "os.features"),
    ("config not an object", base(config=[]), "JSON object"),
    ("Env not a list", base(config={"Env": "A=1"}), "'Env'"),
    ("Env item not a string", base(config={"Env": [1]}), "'Env'"),
    ("Cmd a string", base(config={"Cmd": "sh"}), "'Cmd'"),
    ("Entrypoint with null", base(config={"Entrypoint": [None]}), "'Entrypoint'"),
    ("ExposedPorts a list", base(config={"ExposedPorts": ["80/tcp"]}), "'ExposedPorts'"),
    ("Volumes a list", base(config={"Volumes": ["/d"]}), "'Volumes'"),
    ("Labels not strings", base(config={"Labels": {"a": 1}}), "'Labels'"),
    ("User not a string", base(config={"User": 0}), "'User'"),
    ("WorkingDir not a string", base(config={"WorkingDir": 0}), "'WorkingDir'"),
    ("StopSignal not a string", base(config={"StopSignal": 9}), "'StopSignal'"),
    ("ArgsEscaped not bool", base(config={"ArgsEscaped": "true"}), "'ArgsEscaped'"),
    ("OnBuild not a list", base(config={"OnBuild": "RUN x"}), "'OnBuild'"),
    ("Shell not a list", base(config={"Shell": "/bin/sh"}), "'Shell'"),
    ("Healthcheck not an object", base(config={"Healthcheck": "x"}), "Healthcheck"),
    ("Healthcheck Interval float", base(config={"Healthcheck": {"Interval": 1.5}}), "'Interval'"),
    ("Healthcheck Retries bool", base(config={"Healthcheck": {"Retries": True}}), "'Retries'"),
    ("Healthcheck Test string", base(config={"Healthcheck": {"Test": "CMD x"}}), "'Test'"),
]


@pytest.mark.parametrize(("doc", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid(doc: dict[str, Any] | bytes, message: str) -> None:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(InvalidFormat, match=message):
        ImageConfig.parse(data)


def test_over_cap() -> None:
    data = json.dumps(base(pad="x" * MAX_DOCUMENT_BYTES)).encode()
    with pytest.raises(LimitExceeded):
        ImageConfig.parse(data)


@pytest.mark.parametrize(
    ("history", "diff_ids", "consistent"),
    [
        ([], [D1, D2], True),
        ([History(created_by="a"), History(created_by="b")], [D1, D2], True),
        ([History(created_by="a"), History(empty_layer=True), History()], [D1, D2], True),
        ([History(created_by="a")], [D1, D2], False),
        ([History(), History(), History()], [D1, D2], False),
        ([History(empty_layer=True)], [], True),
        ([History(empty_layer=True)], [D1], False),
    ],
)
def test_history_consistent(
    history: list[History], diff_ids: list[Digest], consistent: bool
) -> None:
    c = ImageConfig("amd64", "linux", diff_ids=diff_ids, history=history)  # type: ignore[arg-type]
    assert c.history_consistent is consistent
    # inconsistent configs are still read and written, not refused
    assert ImageConfig.parse(c.to_bytes()) == c


def test_layer_history() -> None:
    h1, h2, h3 = History(created_by="ADD"), History(created_by="ENV", empty_layer=True), History()
    c = ImageConfig("amd64", "linux", diff_ids=(D1, D2), history=(h1, h2, h3))
    assert c.layer_history() == [(h1, D1), (h2, None), (h3, D2)]
    short = ImageConfig("amd64", "linux", diff_ids=(D1,), history=(h1, h3))
    assert short.layer_history() == [(h1, D1), (h3, None)]


def test_building() -> None:
    p = Platform("linux", "arm", "v7")
    c = ImageConfig.new(p, created="2024-01-01T00:00:00Z")
    assert c.platform == p and c.created == "2024-01-01T00:00:00Z"
    assert c.diff_ids == () and c.history == ()
    c = c.with_layer(D1, History(created="2024-01-01T00:00:00Z", created_by="import"))
    c = c.with_history(History(created_by="CMD", empty_layer=True))
    c = c.with_layer(D2)
    c = c.with_config(ContainerConfig(cmd=("sh",)).with_env("A", "1"))
    assert c.diff_ids == (D1, D2)
    assert [h.created_by for h in c.history] == ["import", "CMD"]
    assert c.config.env == ("A=1",)
    out = json.loads(c.to_bytes())
    assert out["rootfs"] == {"type": "layers", "diff_ids": [str(D1), str(D2)]}
    assert out["variant"] == "v7"
    assert out["history"][1] == {"created_by": "CMD", "empty_layer": True}
    with pytest.raises(InvalidArgument, match="empty_layer"):
        c.with_layer(D1, History(empty_layer=True))


def test_constructor_requires_platform_fields() -> None:
    with pytest.raises(InvalidFormat):
        ImageConfig("", "linux")
    with pytest.raises(InvalidFormat):
        ImageConfig("amd64", "")


def test_to_bytes_is_canonical() -> None:
    c = ImageConfig.parse(json.dumps(DOCKER_CONFIG, indent=4).encode())
    data = c.to_bytes()
    assert (
        data
        == json.dumps(
            json.loads(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )
    assert c.config.to_json()["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}


def test_with_env() -> None:
    cc = ContainerConfig(env=("A=1", "B=2"))
    assert cc.with_env("A", "3").env == ("A=3", "B=2")
    assert cc.with_env("C", "x=y").env == ("A=1", "B=2", "C=x=y")
    with pytest.raises(InvalidArgument):
        cc.with_env("", "1")
    with pytest.raises(InvalidArgument):
        cc.with_env("A=B", "1")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2024-02-01T12:34:56Z", datetime(2024, 2, 1, 12, 34, 56, tzinfo=UTC)),
        ("2024-02-01T12:34:56.123456789Z", datetime(2024, 2, 1, 12, 34, 56, 123456, tzinfo=UTC)),
        (
            "2024-02-01T12:34:56.5+02:00",
            datetime(2024, 2, 1, 12, 34, 56, 500000, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2024-02-01 12:34:56z", datetime(2024, 2, 1, 12, 34, 56, tzinfo=UTC)),
        ("2024-02-01", None),
        ("2024-13-01T00:00:00Z", None),
        ("yesterday", None),
    ],
)
def test_parse_rfc3339(text: str, want: datetime | None) -> None:
    assert parse_rfc3339(text) == want
    c = ImageConfig("amd64", "linux", created=text)
    assert c.created_datetime == want
    assert c.created == text  # kept as given
