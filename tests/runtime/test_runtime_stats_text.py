"""The pure half of `lamina stats` and `lamina top`: cgroup v1 and v2 files, /proc
files and ps output, as the kernel and procps write them, parsed into numbers."""

from __future__ import annotations

import pytest

from lamina.errors import InvalidArgument
from lamina.runtime.stats import cgroup_text as t
from lamina.runtime.stats.ps_table import filter_ps

CID = "ede843d36316ba8f81f2a1e93da21d7c4b8498fc8d3d315f81e6833fe827c0cf"

# ---------------------------------------------------------------- where the cgroups are

# this project's build host: v1 controllers each on its own hierarchy, plus cgroup2
HYBRID_MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

RUNC_HYBRID = f"""\
9:name=systemd:/lamina/{CID}
8:pids:/lamina/{CID}
7:blkio:/lamina/{CID}
4:memory:/lamina/{CID}
2:cpuacct:/lamina/{CID}
1:cpu:/lamina/{CID}
0::/lamina/{CID}
"""

# crun on the same host leaves the process at the root of the v2 hierarchy
CRUN_HYBRID = f"""\
8:pids:/{CID}
4:memory:/{CID}
2:cpuacct:/{CID}
0::/
"""

# a systemd host on cgroup v2 only
V2_MOUNTINFO = (
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)
V2_CGROUP = f"0::/system.slice/lamina-{CID}.scope\n"

# Docker-era v1 with cpu and cpuacct on one hierarchy, seen inside a cgroup namespace
# whose mount shows only /docker/abc
V1_NAMESPACED_MOUNTINFO = (
    "560 550 0:30 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime "
    "master:11 - cgroup cgroup rw,cpu,cpuacct\n"
    "561 550 0:31 /docker/abc /sys/fs/cgroup/my\\040mem rw,relatime - cgroup cgroup rw,memory\n"
)
V1_NAMESPACED_CGROUP = "4:cpu,cpuacct:/docker/abc/lamina/x\n3:memory:/other/y\n"


def test_hybrid_prefers_the_v1_controller_then_v2() -> None:
    lines, mounts = t.parse_proc_cgroup(RUNC_HYBRID), t.parse_mountinfo(HYBRID_MOUNTINFO)
    assert t.cgroup_dirs(lines, mounts, "memory") == [
        (1, f"/sys/fs/cgroup/memory/lamina/{CID}"),
        (2, f"/sys/fs/cgroup/unified/lamina/{CID}"),
    ]
    assert t.cgroup_dirs(lines, mounts, "cpuacct")[0] == (1, f"/sys/fs/cgroup/cpuacct/lamina/{CID}")


def test_the_root_cgroup_is_never_the_containers() -> None:
    lines, mounts = t.parse_proc_cgroup(CRUN_HYBRID), t.parse_mountinfo(HYBRID_MOUNTINFO)
    assert t.cgroup_dirs(lines, mounts, "pids") == [(1, f"/sys/fs/cgroup/pids/{CID}")]
    assert t.cgroup_dirs(lines, mounts, "blkio") == []  # neither v1 blkio nor v2 of its own


def test_v2_only_host() -> None:
    lines, mounts = t.parse_proc_cgroup(V2_CGROUP), t.parse_mountinfo(V2_MOUNTINFO)
    assert mounts == [t.CgroupMount(2, (), "/", "/sys/fs/cgroup")]
    expected = [(2, f"/sys/fs/cgroup/system.slice/lamina-{CID}.scope")]
    for controller in ("cpuacct", "memory", "pids", "blkio"):
        assert t.cgroup_dirs(lines, mounts, controller) == expected


def test_a_mount_that_shows_part_of_a_hierarchy() -> None:
    lines = t.parse_proc_cgroup(V1_NAMESPACED_CGROUP)
    mounts = t.parse_mountinfo(V1_NAMESPACED_MOUNTINFO)
    assert mounts[0].controllers == ("cpu", "cpuacct")
    assert mounts[1].mountpoint == "/sys/fs/cgroup/my mem"  # \040 unescaped
    assert t.cgroup_dirs(lines, mounts, "cpuacct") == [(1, "/sys/fs/cgroup/cpu,cpuacct/lamina/x")]
    assert t.cgroup_dirs(lines, mounts, "memory") == []  # /other/y is outside /docker/abc


# ---------------------------------------------------------------- cgroup v1 files

V1_MEMORY_STAT = """\
cache 9748480
rss 5005312
rss_huge 0
shmem 0
mapped_file 7462912
inactive_anon 4976640
active_anon 28672
inactive_file 2048000
active_file 4534272
hierarchical_memory_limit 67108864
hierarchical_memsw_limit 9223372036854771712
total_cache 9748480
total_rss 5005312
total_inactive_anon 4976640
total_active_anon 28672
total_inactive_file 9748480
total_active_file 4534272
"""

V1_BLKIO = """\
8:0 Read 1458176
8:0 Write 8388608
8:0 Sync 8388608
8:0 Async 1458176
8:0 Discard 0
8:0 Total 9846784
253:1 Read 4096
253:1 Write 0
253:1 Total 4096
Total 9850880
"""


def test_v1_cpu_memory_pids() -> None:
    assert t.cpu_usage_v1("36872718\n") == 36872718
    # Docker's CLI: usage_in_bytes minus total_inactive_file (not inactive_file)
    assert t.memory_usage(20967424, V1_MEMORY_STAT, version=1) == 20967424 - 9748480
    assert t.memory_usage(4096, V1_MEMORY_STAT, version=1) == 4096  # stat bigger: as is
    assert t.memory_limit_v1("67108864\n") == 64 << 20
    assert t.memory_limit_v1("9223372036854771712\n") is None
    assert t.single_int("7\n") == 7
    assert t.single_int("") is None


def test_v1_blkio_throttle() -> None:
    assert t.io_bytes_v1(V1_BLKIO) == (1458176 + 4096, 8388608)
    assert t.io_bytes_v1("Total 0\n") is None  # the kernel counted nothing


# ---------------------------------------------------------------- cgroup v2 files

V2_CPU_STAT = """\
usage_usec 2539181
user_usec 1815467
system_usec 723714
core_sched.force_idle_usec 0
nr_periods 12
nr_throttled 3
throttled_usec 81234
nr_bursts 0
burst_usec 0
"""

V2_MEMORY_STAT = """\
anon 5005312
file 14282752
kernel 1540096
kernel_stack 65536
pagetables 131072
sock 0
shmem 0
file_mapped 7462912
file_dirty 0
inactive_anon 4976640
active_anon 28672
inactive_file 9748480
active_file 4534272
unevictable 0
slab_reclaimable 905216
pgfault 21845
workingset_refault_anon 0
"""

V2_IO_STAT = """\
8:0 rbytes=1458176 wbytes=8388608 rios=45 wios=3 dbytes=0 dios=0
253:0 rbytes=4096 wbytes=512 rios=1 wios=1 dbytes=0 dios=0
"""


def test_v2_cpu_memory_io() -> None:
    assert t.cpu_usage_v2(V2_CPU_STAT) == 2539181 * 1000
    assert t.cpu_usage_v2("nr_periods 0\n") is None
    assert t.memory_usage(20967424, V2_MEMORY_STAT, version=2) == 20967424 - 9748480
    assert t.memory_limit_v2("max\n") is None
    assert t.memory_limit_v2("67108864\n") == 64 << 20
    assert t.io_bytes_v2(V2_IO_STAT) == (1458176 + 4096, 8388608 + 512)
    assert t.io_bytes_v2("") is None


def test_cpu_percent_is_cpu_time_over_wall_time() -> None:
    second = 1_000_000_000
    assert t.cpu_percent(0, second // 2, second) == pytest.approx(50.0)
    assert t.cpu_percent(0, 3 * second, 2 * second) == pytest.approx(150.0)  # two cores
    assert t.cpu_percent(5, 4, second) == 0.0  # a counter reset
    assert t.cpu_percent(0, 5, 0) == 0.0


# ---------------------------------------------------------------- /proc files

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   52000     400    0    0    0     0          0         0    52000     400    0    0    0     0       0          0
  eth0: 1053912     742    0    0    0     0          0         0     7216      98    0    0    0     0       0          0
  eth1:    1000      10    0    0    0     0          0         3      200       2    0    0    0     0       0          0
"""  # noqa: E501

PROC_IO = """\
rchar: 8442397
wchar: 8395292
syscr: 56
syscw: 14
read_bytes: 4096
write_bytes: 8396800
cancelled_write_bytes: 0
"""


def test_net_dev_skips_loopback() -> None:
    assert t.net_bytes(NET_DEV) == (1053912 + 1000, 7216 + 200)
    assert t.net_bytes("") == (0, 0)


def test_proc_io_and_meminfo() -> None:
    assert t.proc_io_bytes(PROC_IO) == (4096, 8396800)
    meminfo = "MemTotal:       24683772 kB\nMemFree:         1234 kB\n"
    assert t.mem_total(meminfo) == 24683772 * 1024
    assert t.mem_total("") is None


# ---------------------------------------------------------------- ps output

PS_EF = """\
UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 20:01 ?        00:00:01 /sbin/init
root        1387    1384  0 20:49 ?        00:00:00 sh -c for i in 1 2; do sleep 300 & done; wait
root        1390    1387  0 20:49 ?        00:00:00 sleep 300
root       13900    1387  0 20:49 ?        00:00:00 sleep 301
root        4242       1  0 20:50 pts/0    00:00:00 bash
"""


def test_ps_rows_of_the_containers_pids() -> None:
    table = filter_ps(PS_EF, [1387, 1390, 13900])
    assert table.titles == ("UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD")
    assert [row[1] for row in table.rows] == ["1387", "1390", "13900"]
    assert table.rows[0][-1] == "sh -c for i in 1 2; do sleep 300 & done; wait"
    doc = table.to_json()
    assert doc[1] == {
        "uid": "root",
        "pid": 1390,
        "ppid": 1387,
        "c": "0",
        "stime": "20:49",
        "tty": "?",
        "time": "00:00:00",
        "cmd": "sleep 300",
    }
    assert filter_ps(PS_EF, [139]).rows == ()  # a prefix of a pid is not the pid


def test_ps_output_without_a_pid_column() -> None:
    with pytest.raises(InvalidArgument, match="PID"):
        filter_ps("COMMAND\nsleep\n", [1])
    with pytest.raises(InvalidArgument):
        filter_ps("", [1])
