"""Probe children confined by Landlock (``_sandbox.py``), where the kernel has it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stoat_ferret.library import ProbeError, Stop, ThreadPriority, _probeprocess
from stoat_ferret.library._probeprocess import ProbeProcess
from stoat_ferret.library._probewire import CONFINE_FAILED
from stoat_ferret.library._sandbox import confine, landlock_abi
from tests.videos import copy_video

if TYPE_CHECKING:
    from tests.videos import EncodedVideo

TIMEOUT = 60


needs_landlock = pytest.mark.skipif(not landlock_abi(), reason="needs Landlock (Linux 5.13)")


def test_landlock_is_found_where_the_kernel_lists_it() -> None:
    """The skips of this module hang on ``landlock_abi()``: told apart from the
    product's own detection, where the kernel lists its security modules
    (securityfs), Landlock is found exactly when it is listed."""
    modules = Path("/sys/kernel/security/lsm")
    try:
        listed = "landlock" in modules.read_text().split(",")
    except OSError:
        pytest.skip(f"{modules} cannot be read (securityfs not mounted)")

    assert (landlock_abi() > 0) == listed


_CONFINED = """
import os, socket, sys
from stoat_ferret.library._sandbox import confine
held = os.open(sys.argv[1], os.O_RDONLY)
print(confine(int(sys.argv[3])))
print(len(os.read(held, 4)))
def attempt(work):
    try:
        work()
        return "allowed"
    except OSError as exc:
        return type(exc).__name__
def connect():
    with socket.socket() as tcp:
        tcp.connect((b"127.0.0.1", int(sys.argv[2])))  # bytes: no idna import
print(attempt(lambda: open(sys.argv[1], "rb").close()))
print(attempt(lambda: os.listdir("/")))
print(attempt(lambda: os.truncate(sys.argv[1], 0)))
print(attempt(connect))
print(attempt(lambda: os.kill(os.getppid(), 0)))
"""


@needs_landlock
@pytest.mark.parametrize("abi", range(1, 8))
def test_a_confined_process_keeps_its_descriptors_and_loses_what_its_abi_covers(
    tmp_path: Path, abi: int
) -> None:
    """By Landlock ABI: no path opened or listed (1), none truncated (3), no
    TCP connection (4), no signal to the service (6); a descriptor held from
    before still reads."""
    if abi > landlock_abi():
        pytest.skip(f"this kernel offers Landlock ABI {landlock_abi()}")
    held = tmp_path / "held"
    held.write_bytes(b"data")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", _CONFINED, str(held), str(port), str(abi)],
            capture_output=True,
            check=True,
            text=True,
            timeout=TIMEOUT,
        )

    def refused(since: int) -> str:
        return "PermissionError" if abi >= since else "allowed"

    assert done.stdout.split() == [
        str(abi),
        "4",
        "PermissionError",
        "PermissionError",
        refused(3),
        refused(4),
        refused(6),
    ]


@needs_landlock
def test_a_probe_child_is_confined_before_it_is_ready(
    clip: EncodedVideo, tmp_path: Path, directory: int
) -> None:
    """It says so in its first datagram, after ``landlock_restrict_self``
    returned; and it can never gain privileges (Landlock's condition)."""
    copy_video(clip, tmp_path / "a.mp4")
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    try:
        process.probe("a.mp4", directory, Stop())
        child = process.pid
        with open(f"/proc/{child}/status", encoding="ascii") as status:
            flags = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    finally:
        process.close()
    assert process.confinement == landlock_abi()
    assert flags["NoNewPrivs"] == "1"


def test_a_child_that_cannot_confine_itself_says_why_for_the_file(
    tmp_path: Path, directory: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: no file is probed unconfined where the kernel offers
    Landlock, and the error says why (a stand-in child here)."""
    (tmp_path / "a.mp4").write_bytes(b"not read")
    theirs: list[socket.socket] = []

    def starting(name: str, priority: ThreadPriority, memory: int) -> tuple[Any, socket.socket]:
        ours, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        other.send(CONFINE_FAILED + b"landlock_restrict_self: Invalid\nargument")
        theirs.append(other)
        return subprocess.Popen(["sleep", "3600"]), ours

    monkeypatch.setattr(_probeprocess, "start_child", starting)
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    try:
        with pytest.raises(ProbeError) as refused:
            process.probe("a.mp4", directory, Stop())
    finally:
        process.close()
        for other in theirs:
            other.close()
    assert refused.value.reason == (
        "the probe process could not confine itself (landlock_restrict_self: Invalid argument)"
    )
    assert process.pid is None


def test_confine_to_abi_0_changes_nothing_and_a_negative_one_is_refused() -> None:
    assert confine(0) == 0
    with pytest.raises(ValueError, match="abi must be >= 0"):
        confine(-1)


def _status(pid: int | str) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def _overflow(name: str) -> str:
    with open(f"/proc/sys/kernel/{name}", encoding="ascii") as text:
        return text.read().strip()


_NO_CAPABILITY = "0000000000000000"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a service run as root, as these tests are not")
def test_a_child_of_a_root_service_runs_as_the_overflow_user_with_no_capability(
    clip: EncodedVideo, tmp_path: Path, directory: int
) -> None:
    """Seen from the service: its real, effective, saved and file-system
    ids are the kernel's overflow uid and gid (nobody), it is in no other
    group and holds no capability; and it still probes the file it was
    handed (the service's, which nobody could not open)."""
    copy_video(clip, tmp_path / "a.mp4")
    (tmp_path / "a.mp4").chmod(0o600)
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    try:
        probe = process.probe("a.mp4", directory, Stop())
        child = _status(process.pid or 0)
    finally:
        process.close()
    uid, gid = _overflow("overflowuid"), _overflow("overflowgid")

    assert (probe.width, probe.height) == (clip.width, clip.height)
    assert child["Uid"].split() == [uid] * 4
    assert child["Gid"].split() == [gid] * 4
    assert child["Groups"].split() == []
    for capabilities in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert child[capabilities] == _NO_CAPABILITY, capabilities
    assert child["NoNewPrivs"] == "1"


def _core_limit(pid: int | str) -> tuple[str, str]:
    with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
        for line in limits:
            if line.startswith("Max core file size"):
                soft, hard = line.split()[4:6]
                return soft, hard
    raise AssertionError("no core file size in the limits")


def test_a_probe_child_writes_no_core_dump(
    clip: EncodedVideo, tmp_path: Path, directory: int
) -> None:
    """Its core file size is 0, and it cannot raise it again: a crash of
    FFmpeg on a hostile file leaves no dump of up to its memory limit."""
    if _core_limit("self")[1] == "0":
        pytest.skip("core dumps are off for this process already, and so for its children")
    copy_video(clip, tmp_path / "a.mp4")
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    try:
        process.probe("a.mp4", directory, Stop())
        limit = _core_limit(process.pid or 0)
    finally:
        process.close()

    assert limit == ("0", "0")


# Becomes root of a user namespace of its own, and once the test has mapped
# its id 0 (only: nobody is not mapped there), gives up its privileges.
_NAMESPACED = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
    print("cannot", ctypes.get_errno(), flush=True)
    sys.exit()
print("unshared", flush=True)
sys.stdin.readline()
from stoat_ferret.library._sandbox import drop_privileges
drop_privileges()
print(open("/proc/self/status").read(), flush=True)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to map a user namespace's root")
def test_a_root_process_that_cannot_become_nobody_clears_every_capability() -> None:
    """In a user namespace that maps no overflow uid, setresgid fails
    (EINVAL): the process stays root there, but with no capability left in
    any set, bounding and ambient too, and no_new_privs."""
    with subprocess.Popen(
        [sys.executable, "-c", _NAMESPACED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdin is not None
            assert child.stdout is not None
            unshared = child.stdout.readline().split()
            if unshared != ["unshared"]:
                pytest.skip(f"no user namespace here (errno {unshared[-1]})")
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{child.pid}/{name}", "w", encoding="ascii") as mapping:
                    mapping.write("0 0 1\n")
            out, _ = child.communicate("go\n", timeout=TIMEOUT)
        finally:
            child.kill()
    status = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)

    assert child.returncode == 0
    assert status["Uid"].split() == ["0"] * 4
    for capabilities in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert status[capabilities] == _NO_CAPABILITY, capabilities
    assert status["NoNewPrivs"] == "1"


# The child's main, where neither the ids nor the capabilities can be given
# up (stand-ins for the kernel's refusals); its service end reads no request.
_KEEPS_A_CAPABILITY = """
import errno, os, socket, sys
from stoat_ferret.library import _probechild, _sandbox
def refused(*arguments):
    raise OSError(errno.EINVAL, "Invalid argument")
def kept(libc):
    raise OSError(errno.EPERM, "capset: Operation not permitted")
os.getresuid = lambda: (0, 0, 0)
os.setgroups = refused
held = 1 << 22 | 1 << 5  # CAP_SYS_BOOT, CAP_KILL
_sandbox._capabilities = lambda libc, pid=0: (held, held, 0)
_sandbox._clear_capabilities = kept
service, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
service.shutdown(socket.SHUT_WR)  # no request: a child that got ready ends at once
_probechild.main([str(child.fileno()), "normal", str(2**31)])
print(service.recv(4096).decode())
"""


def test_a_child_that_keeps_a_capability_says_why_and_ends() -> None:
    """Fail closed, as when Landlock refuses: instead of ``ready`` its first
    datagram says why (the service then refuses every file with it)."""
    done = subprocess.run(
        [sys.executable, "-c", _KEEPS_A_CAPABILITY],
        capture_output=True,
        check=True,
        text=True,
        timeout=TIMEOUT,
    )

    assert done.stdout == (
        CONFINE_FAILED.decode()
        + "[Errno 1] setgroups([]): Invalid argument; capset: Operation not permitted\n"
    )


# As nobody (a root test becomes nobody first, as a service that is not root
# would be); then asks to give up its privileges.
_UNPRIVILEGED = """
import os
from stoat_ferret.library._sandbox import drop_privileges
if os.geteuid() == 0:
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
def ids():
    status = open("/proc/self/status").read().splitlines()
    return [line for line in status if line.startswith(("Uid", "Gid", "Cap", "NoNewPrivs"))]
before = ids()
drop_privileges()
print(before == ids(), before)
"""


def test_a_process_neither_root_nor_holding_a_capability_is_left_as_it_is() -> None:
    """As a child of a service that is not root: nothing to give up, and
    nothing changed (not even no_new_privs)."""
    done = subprocess.run(
        [sys.executable, "-c", _UNPRIVILEGED],
        capture_output=True,
        check=True,
        text=True,
        timeout=TIMEOUT,
    )

    assert done.stdout.startswith("True "), done.stdout
    assert "'NoNewPrivs:\\t0'" in done.stdout


# A root service without CAP_KILL in its effective set (its bounding set, which
# its child inherits, keeps it); its child gives up its privileges, and says
# what it has left.
_WITHOUT_CAP_KILL = """
import ctypes, subprocess, sys
from stoat_ferret.library import _sandbox
libc = ctypes.CDLL(None, use_errno=True)
effective, permitted, inheritable = _sandbox._capabilities(libc)
sets = (_sandbox._CapabilitySets * 2)()
for word, shift in enumerate((0, 32)):
    sets[word].effective = (effective & ~(1 << 5)) >> shift & 0xFFFFFFFF
    sets[word].permitted = permitted >> shift & 0xFFFFFFFF
    sets[word].inheritable = inheritable >> shift & 0xFFFFFFFF
header = _sandbox._CapabilityHeader(0x20080522, 0)
assert libc.capset(ctypes.byref(header), sets) == 0
child = (
    "from stoat_ferret.library import _sandbox; _sandbox.drop_privileges();"
    " print(open('/proc/self/status').read())"
)
sys.stdout.write(subprocess.run([sys.executable, "-c", child], capture_output=True,
    check=True, text=True).stdout)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to give up CAP_KILL")
def test_the_child_of_a_root_service_without_cap_kill_stays_root_with_no_capability() -> None:
    """A service that cannot signal another user's processes could not end
    a child that became nobody: such a child (which reads its parent's
    effective set: its own holds CAP_KILL, from the bounding set) clears its
    capabilities instead, and the service, root too, can still end it."""
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_CAP_KILL],
        capture_output=True,
        check=True,
        text=True,
        timeout=TIMEOUT,
    )
    status = dict(line.split(":\t", 1) for line in done.stdout.splitlines() if ":\t" in line)

    assert status["Uid"].split() == ["0"] * 4
    for capabilities in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert status[capabilities] == _NO_CAPABILITY, capabilities
