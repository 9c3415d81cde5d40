"""What runs inside a namespace (stdlib only, started as a script by path):

agent.py fetch URL --at EPOCH --digest sha256:HEX   GET the blob at EPOCH, stream it
                                                    through sha256, print one JSON line
agent.py push URL REPO FILE DIGEST                  monolithic blob upload (POST + PUT)
agent.py get URL                                    print the body (metrics, scrape)
agent.py wait URL [SECONDS]                         until URL answers at all
agent.py at EPOCH CMD...                            sleep until EPOCH, then exec CMD
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CHUNK = 1 << 20


def _sleep_until(epoch: float) -> None:
    delay = epoch - time.time()
    if delay > 0:
        time.sleep(delay)


def fetch(url: str, at: float, digest: str) -> int:
    _sleep_until(at)
    start = time.time()
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=120)
    out: dict[str, object] = {"start": start}
    hasher = hashlib.sha256()
    got = 0
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path)
        resp = conn.getresponse()
        out["status"] = resp.status
        first = True
        while chunk := resp.read1(CHUNK):
            if first:
                out["ttfb"] = time.time()
                first = False
            hasher.update(chunk)
            got += len(chunk)
    except OSError as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    out["done"] = time.time()
    out["bytes"] = got
    out["ok"] = out.get("status") == 200 and f"sha256:{hasher.hexdigest()}" == digest
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


def push(url: str, repo: str, path: str, digest: str) -> int:
    req = urllib.request.Request(f"{url}/v2/{repo}/blobs/uploads/", method="POST", data=b"")
    with urllib.request.urlopen(req) as r:
        location = r.headers["Location"]
    if location.startswith("/"):
        location = url + location
    sep = "&" if "?" in location else "?"
    with open(path, "rb") as f:
        put = urllib.request.Request(
            f"{location}{sep}digest={digest}",
            method="PUT",
            data=f,
            headers={
                "Content-Length": str(os.fstat(f.fileno()).st_size),
                "Content-Type": "application/octet-stream",
            },
        )
        with urllib.request.urlopen(put) as r:
            return 0 if r.status == 201 else 1


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        sys.stdout.buffer.write(r.read())
    return 0


def wait(url: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return 0
        except urllib.error.HTTPError:
            return 0  # it answered
        except OSError:
            time.sleep(0.1)
    print(f"{url} did not answer in {seconds:g}s", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "fetch":
        return fetch(args[0], float(args[args.index("--at") + 1]),
                     args[args.index("--digest") + 1])  # fmt: skip
    if cmd == "push":
        return push(*args[:4])
    if cmd == "get":
        return get(args[0])
    if cmd == "wait":
        return wait(args[0], float(args[1]) if len(args) > 1 else 30.0)
    if cmd == "at":
        _sleep_until(float(args[0]))
        os.execvp(args[1], args[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
