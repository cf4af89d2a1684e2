"""The system calls the probe children's seccomp filter names (``_seccomp.py``
says what it does with each, and why): their numbers on x86-64 and AArch64,
and which the filter refuses whatever their arguments, or unless they act on
the caller itself.

The numbers are the kernel's ``unistd`` tables' (x86-64's
``syscall_64.tbl``, AArch64's ``asm-generic/unistd.h``); a test compares
them with the headers installed (``tests/library/test_seccomp.py``).
"""

from __future__ import annotations

from typing import Final, NamedTuple

# Each call the filter names: its number on x86-64 and on AArch64 ("-": the
# architecture has no such call), from the kernel's tables.
_TABLE: Final = """
seccomp              317  277
clone                 56  220
clone3               435  435
fcntl                 72   25
ioctl                 16   29
socket                41  198
socketpair            53  199
io_uring_setup       425  425
ptrace               101  117
process_vm_readv     310  270
process_vm_writev    311  271
pidfd_getfd          438  438
pidfd_open           434  434
pidfd_send_signal    424  424
fork                  57    -
vfork                 58    -
execve                59  221
execveat             322  281
modify_ldt           154    -
memfd_create         319  279
shmget                29  194
shmat                 30  196
shmctl                31  195
msgget                68  186
msgsnd                69  189
msgrcv                70  188
msgctl                71  187
semget                64  190
semop                 65  193
semtimedop           220  192
semctl                66  191
mq_open              240  180
mq_unlink            241  181
reboot               169  142
kexec_load           246  104
kexec_file_load      320  294
init_module          175  105
finit_module         313  273
delete_module        176  106
bpf                  321  280
perf_event_open      298  241
unshare              272   97
setns                308  268
keyctl               250  219
add_key              248  217
request_key          249  218
mount                165   40
umount2              166   39
pivot_root           155   41
chroot               161   51
open_tree            428  428
open_tree_attr       467  467
move_mount           429  429
fsopen               430  430
fsconfig             431  431
fsmount              432  432
fspick               433  433
mount_setattr        442  442
chmod                 90    -
fchmod                91   52
fchmodat             268   53
fchmodat2            452  452
chown                 92    -
lchown                94    -
fchown                93   55
fchownat             260   54
utime                132    -
utimes               235    -
futimesat            261    -
utimensat            280   88
setxattr             188    5
lsetxattr            189    6
fsetxattr            190    7
setxattrat           463  463
removexattr          197   14
lremovexattr         198   15
fremovexattr         199   16
removexattrat        466  466
file_setattr         469  469
flock                 73   32
prlimit64            302  261
sched_setscheduler   144  119
sched_setparam       142  118
sched_setattr        314  274
sched_setaffinity    203  122
setpriority          141  140
ioprio_set           251   30
kill                  62  129
setpgid              109  154
setsid               112  157
inotify_init         253    -
inotify_init1        294   26
fanotify_init        300  262
userfaultfd          323  282
memfd_secret         447  447
tgkill               234  131
tkill                200  130
rt_sigqueueinfo      129  138
rt_tgsigqueueinfo    297  240
"""

DENIED: Final = (
    *("socket", "socketpair", "io_uring_setup"),
    *("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd"),
    *("pidfd_open", "pidfd_send_signal"),
    *("fork", "vfork", "execve", "execveat", "memfd_create", "modify_ldt"),
    *("shmget", "shmat", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl"),
    *("semget", "semop", "semtimedop", "semctl", "mq_open", "mq_unlink"),
    *("reboot", "kexec_load", "kexec_file_load"),
    *("init_module", "finit_module", "delete_module", "bpf", "perf_event_open"),
    *("unshare", "setns", "keyctl", "add_key", "request_key"),
    *("mount", "umount2", "pivot_root", "chroot", "open_tree", "open_tree_attr"),
    *("move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"),
    *("chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchown", "fchownat"),
    *("utime", "utimes", "futimesat", "utimensat"),
    *("setxattr", "lsetxattr", "fsetxattr", "setxattrat"),
    *("removexattr", "lremovexattr", "fremovexattr", "removexattrat"),
    *("file_setattr", "flock"),
    *("setpgid", "setsid", "inotify_init", "inotify_init1", "fanotify_init"),
    *("userfaultfd", "memfd_secret", "ioprio_set"),
)
"""The calls the filter fails whatever their arguments, as the module says
(those an architecture has)."""
ON_ITSELF: Final = (
    "prlimit64",
    "sched_setscheduler",
    "sched_setparam",
    "sched_setattr",
    "sched_setaffinity",
)
"""Failed unless their first argument, a process, is 0 or the caller's id."""
TO_ITSELF: Final = ("tgkill", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
"""Failed unless their first argument is the caller's id: its thread group
(``tgkill`` and the queued signals), its main thread (``tkill``)."""
DENIED_FCNTL: Final = {
    "F_SETOWN": 8,
    "F_SETOWN_EX": 15,
    "F_SETLK": 6,
    "F_SETLKW": 7,
    "F_OFD_SETLK": 37,
    "F_OFD_SETLKW": 38,
    "F_SETLEASE": 1024,
    "F_NOTIFY": 1026,
}
"""``fcntl``'s commands that set a ``SIGIO`` owner, a lock, a lease or a
directory's watch (dnotify)."""
DENIED_IOCTL: Final = {
    "FIOSETOWN": 0x8901,
    "SIOCSPGRP": 0x8902,
    "FS_IOC_SETFLAGS": 0x40086602,
    "FS_IOC_FSSETXATTR": 0x401C5820,
    "FS_IOC_SETVERSION": 0x40087602,
    "EXT4_IOC_SETVERSION": 0x40086604,  # ext4's own number for the same
    "FS_IOC_ENABLE_VERITY": 0x40806685,
    "TIOCSTI": 0x5412,  # a character typed into the terminal, which a child shares
    "TIOCLINUX": 0x541C,  # the console's, TIOCSTI's twin (a selection pasted)
    "TIOCSPGRP": 0x5410,  # its own group the terminal's foreground: what is typed, read
}
"""``ioctl``'s commands that set a ``SIGIO`` owner, a file's inode flags or
generation, or make it read-only for good (fs-verity, which a read-only
descriptor may ask for), or type into a terminal; the same numbers on both
machines."""
PRIO_PROCESS: Final = 0  # setpriority's "which": a process (not a group, nor a user)


class Calls(NamedTuple):
    """What the filter needs to know of one architecture."""

    audit_arch: int  # AUDIT_ARCH_*: seccomp_data.arch of this ABI's calls
    numbers: dict[str, int]  # each call's number, by its name in the kernel's table
    x32: bool  # call numbers at or above 0x40000000 are the x32 ABI's

    def of(self, names: tuple[str, ...]) -> list[int]:
        """The numbers of those of ``names`` this architecture has."""
        return [self.numbers[name] for name in names if name in self.numbers]


def _numbers(column: int) -> dict[str, int]:
    """One column of :data:`_TABLE`: 1 for x86-64, 2 for AArch64."""
    rows = (line.split() for line in _TABLE.strip().splitlines())
    return {row[0]: int(row[column]) for row in rows if row[column] != "-"}


CALLS: Final = {
    "x86_64": Calls(0xC000003E, _numbers(1), x32=True),
    "aarch64": Calls(0xC00000B7, _numbers(2), x32=False),
}
