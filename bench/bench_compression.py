"""Layer pipeline throughput on a Debian minbase tree (~200 MB, ~6,800 entries).

commit: os.walk + TarWriter + LayerSink (diff_id, compression, digest, blob file)
    lamina gzip (ISA-L level 3, 2 cores), lamina zstd (level 3, -T0)
    vs  umoci repack  vs  tar --sort=name -cf - | gzip -6 (or pigz -6 -p2) | sha256sum
read:   blob -> decompress -> read_entries -> diff_id check (the apply side, no writes)
    lamina gzip / zstd  vs  gzip -dc | sha256sum  /  zstd -dc | sha256sum

Each contender is a child process, interleaved A B A B, on tmpfs (/dev/shm). Ratios are
against peers measured in the same run (the machine is shared and noisy).

Run:  .venv/bin/python -m bench.bench_compression [ROUNDS]
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import Sample, debian_tree, fresh, interleave, report, run_timed  # noqa: E402

PY = str(REPO / ".venv" / "bin" / "python")
ME = str(Path(__file__).resolve())
WORK = Path(os.environ.get("LAMINA_BENCH_TMPFS", "/dev/shm/lamina-bench-compression"))


# --------------------------------------------------------------------------- workers


def _commit_worker(kind: str, level: str, tree: str, out_path: str) -> None:
    from lamina.layers.api import Entry, EntryType
    from lamina.layers.pipeline import LayerSink
    from lamina.layers.tar import TarWriter

    seen: dict[tuple[int, int], str] = {}
    with (
        open(out_path, "wb") as out,
        LayerSink(out, kind, level=int(level) if level else None) as sink,
    ):
        writer = TarWriter(sink)
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames.sort()
            rel = os.path.relpath(dirpath, tree)
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                arc = name if rel == "." else f"{rel}/{name}"
                mode = st.st_mode
                common = {
                    "mode": stat.S_IMODE(mode),
                    "uid": st.st_uid,
                    "gid": st.st_gid,
                    "mtime_ns": st.st_mtime_ns,
                }
                if stat.S_ISREG(mode):
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1 and key in seen:
                        writer.add(Entry(arc, EntryType.HARDLINK, linkname=seen[key], **common))
                        continue
                    seen[key] = arc
                    with open(path, "rb", buffering=0) as f:
                        writer.add(Entry(arc, EntryType.FILE, size=st.st_size, **common), f)
                elif stat.S_ISDIR(mode):
                    writer.add(Entry(arc, EntryType.DIR, **common))
                elif stat.S_ISLNK(mode):
                    writer.add(Entry(arc, EntryType.SYMLINK, linkname=os.readlink(path), **common))
                else:
                    kind_ = {stat.S_IFCHR: EntryType.CHAR, stat.S_IFBLK: EntryType.BLOCK}.get(
                        stat.S_IFMT(mode), EntryType.FIFO
                    )
                    dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
                    writer.add(Entry(arc, kind_, devmajor=dev[0], devminor=dev[1], **common))
        writer.close()
        result = sink.close()
    print(
        json.dumps(
            {
                "diff_id": str(result.diff_id),
                "digest": str(result.digest),
                "size": result.size,
                "uncompressed": result.uncompressed_size,
            }
        )
    )


def _read_worker(blob: str, diff_id: str) -> None:
    from lamina.layers.pipeline import verified_layer_stream
    from lamina.layers.tar import read_entries
    from lamina.oci.digest import Digest

    buf = bytearray(1 << 20)
    with open(blob, "rb") as f:
        stream = verified_layer_stream(f, None, Digest.parse(diff_id))
        for _, content in read_entries(stream):
            while content.readinto(buf):
                pass
        assert stream.verified


# --------------------------------------------------------------------------- driver


def _commit_once(kind: str, level: str, tree: Path, out: Path) -> Sample:
    return run_timed([PY, ME, "--commit", kind, level, str(tree), str(out)])


def main(rounds: int = 3) -> None:
    tree = debian_tree()
    fresh(WORK)
    try:
        _run(tree, rounds)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


def _run(tree: Path, rounds: int) -> None:
    # commit
    print("layer commit (tree -> compressed blob + digest + diff_id):", file=sys.stderr)
    layout = WORK / "umoci-layout"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:base"], check=True)

    # repack moves the tag it names onto the new image, so every round repacks into a
    # tag of its own and the next round unpacks the empty base again
    tags = iter(range(1, 1000))

    def before(name: str) -> None:
        if name == "umoci repack":
            bundle = fresh(WORK / "bundle")
            shutil.rmtree(bundle)
            subprocess.run(
                ["umoci", "unpack", "--image", f"{layout}:base", str(bundle)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            subprocess.run(["cp", "-a", f"{tree}/.", str(bundle / "rootfs")], check=True)

    contenders = {
        "umoci repack": lambda: run_timed(
            ["umoci", "repack", "--image", f"{layout}:r{next(tags)}", str(WORK / "bundle")]
        ),
        "tar | gzip -6 | sha256sum": lambda: run_timed(
            f"tar --sort=name -cf - -C {tree} . | gzip -6 | sha256sum", shell=True
        ),
        "tar | pigz -6 -p2 | sha256sum": lambda: run_timed(
            f"tar --sort=name -cf - -C {tree} . | pigz -6 -p 2 | sha256sum", shell=True
        ),
        "lamina gzip": lambda: _commit_once("gzip", "", tree, WORK / "layer.gz"),
        "lamina gzip -6 (zlib)": lambda: _commit_once("gzip", "6", tree, WORK / "layer6.gz"),
        "lamina zstd": lambda: _commit_once("zstd", "", tree, WORK / "layer.zst"),
    }
    commit = interleave(rounds, contenders, before)
    sizes = {
        "lamina gzip": (WORK / "layer.gz").stat().st_size,
        "lamina gzip -6 (zlib)": (WORK / "layer6.gz").stat().st_size,
        "lamina zstd": (WORK / "layer.zst").stat().st_size,
        "umoci repack": max(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir()),
    }
    report("compression-commit", commit, "umoci repack", {"blob_bytes": sizes})

    # read (the apply side, without the filesystem)
    print("layer read (blob -> decompress -> tar entries -> diff_id):", file=sys.stderr)
    out = subprocess.run(
        [PY, ME, "--commit", "gzip", "", str(tree), str(WORK / "layer.gz")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    diff_id = json.loads(out)["diff_id"]
    read = interleave(
        rounds,
        {
            "gzip -dc | sha256sum": lambda: run_timed(
                f"gzip -dc {WORK / 'layer.gz'} | sha256sum", shell=True
            ),
            "lamina read gzip": lambda: run_timed(
                [PY, ME, "--read", str(WORK / "layer.gz"), diff_id]
            ),
            "zstd -dc | sha256sum": lambda: run_timed(
                f"zstd -dc {WORK / 'layer.zst'} | sha256sum", shell=True
            ),
            "lamina read zstd": lambda: run_timed(
                [PY, ME, "--read", str(WORK / "layer.zst"), diff_id]
            ),
        },
    )
    report("compression-read", read, "gzip -dc | sha256sum")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--commit":
        _commit_worker(*sys.argv[2:6])
    elif len(sys.argv) > 1 and sys.argv[1] == "--read":
        _read_worker(*sys.argv[2:4])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
