"""A seccomp filter for sandboxed commands: the kernel interfaces a shell never needs, refused.

Dropped capabilities already make most of these fail; the filter is the second wall, for the
calls that need no capability or whose kernel code is a frequent source of escapes (keyrings,
io_uring, userfaultfd, BPF, mount APIs, file handles, namespaces, terminal injection). Refused
calls fail with EPERM, as they would for an unprivileged user, so programs report a clear error
instead of dying. Calls from other ABIs (32-bit, x32) are refused whole, so no second syscall
table slips past the list. Built by hand as classic BPF, so no library is needed.
"""

from __future__ import annotations

import errno
import platform
import struct

# struct seccomp_data: nr (u32) @0, arch (u32) @4, instruction_pointer (u64) @8, args @16.
_NR, _ARCH, _ARG1_LOW = 0, 4, 24
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_ARG0_LOW = 16
_RET_ENOSYS = 0x00050000 | errno.ENOSYS
_CLONE_NEWUSER = 0x10000000
_CLONE3 = 435
_RET_EAFNOSUPPORT = 0x00050000 | errno.EAFNOSUPPORT
# AF_UNIX, AF_INET, AF_INET6, AF_NETLINK: what programs use, all confined by the sandbox's own
# namespaces. Others (AF_VSOCK above all, which no network namespace isolates: on a VM it can
# reach the hypervisor's services) are refused.
_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK = 1, 2, 10, 16
_NETLINK_ROUTE, _NETLINK_SOCK_DIAG = 0, 4
_ARG2_LOW = 32
_RET_EPROTONOSUPPORT = 0x00050000 | errno.EPROTONOSUPPORT
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_EPERM = 0x00050000 | errno.EPERM
_X32_BIT = 0x40000000
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C

# Names shared by both tables below (new calls have one number on every architecture).
_COMMON = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
_X86_64 = {
    "ioctl": 16,
    "clone": 56,
    "socket": 41,
    "socketpair": 53,
    "syslog": 103,
    "vhangup": 153,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    **_COMMON,
}
_AARCH64 = {
    "ioctl": 29,
    "clone": 220,
    "socket": 198,
    "socketpair": 199,
    "vhangup": 58,
    "quotactl": 60,
    "umount2": 39,
    "mount": 40,
    "pivot_root": 41,
    "chroot": 51,
    "acct": 89,
    "unshare": 97,
    "kexec_load": 104,
    "init_module": 105,
    "delete_module": 106,
    "clock_settime": 112,
    "syslog": 116,
    "reboot": 142,
    "settimeofday": 170,
    "adjtimex": 171,
    "add_key": 217,
    "request_key": 218,
    "keyctl": 219,
    "swapon": 224,
    "swapoff": 225,
    "perf_event_open": 241,
    "name_to_handle_at": 264,
    "open_by_handle_at": 265,
    "clock_adjtime": 266,
    "setns": 268,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "kcmp": 272,
    "finit_module": 273,
    "bpf": 280,
    "userfaultfd": 282,
    "kexec_file_load": 294,
    **_COMMON,
}
# audit architecture, syscall table, whether the x32 ABI shares the architecture value
_ARCHES = {
    "x86_64": (0xC000003E, _X86_64, True),
    "aarch64": (0xC00000B7, _AARCH64, False),
}


# Refused only for some arguments: `clone` with CLONE_NEWUSER, `socket` for other families,
# `ioctl` for TIOCSTI/TIOCLINUX; every other call in the tables is refused whole.
_FILTERED_BY_ARGUMENT = {"ioctl", "clone", "socket", "socketpair"}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def seccomp_program(machine: str | None = None) -> bytes | None:
    """The compiled filter for this machine's architecture (bwrap's `--seccomp` format), or
    None where Reverie has no table for it (the sandbox then runs without one, and says so)."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, table, has_x32 = arch
    denied = sorted(number for name, number in table.items() if name not in _FILTERED_BY_ARGUMENT)
    program = [_insn(_LD_W_ABS, _ARCH), _insn(_JEQ_K, audit_arch, 1, 0)]
    program.append(_insn(_RET_K, _RET_EPERM))  # another ABI of this kernel
    program.append(_insn(_LD_W_ABS, _NR))
    if has_x32:
        program += [_insn(_JGE_K, _X32_BIT, 0, 1), _insn(_RET_K, _RET_EPERM)]
    for number in denied:
        program += [_insn(_JEQ_K, number, 0, 1), _insn(_RET_K, _RET_EPERM)]
    # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall back to
    # clone, whose flags it can. A new user namespace would hand the command capabilities there.
    program += [_insn(_JEQ_K, _CLONE3, 0, 1), _insn(_RET_K, _RET_ENOSYS)]
    program += [
        _insn(_JEQ_K, table["clone"], 0, 4),
        _insn(_LD_W_ABS, _ARG0_LOW),
        _insn(_JSET_K, _CLONE_NEWUSER, 0, 1),
        _insn(_RET_K, _RET_EPERM),
        _insn(_RET_K, _RET_ALLOW),
    ]
    program += [
        _insn(_JEQ_K, table["socket"], 1, 0),
        _insn(_JEQ_K, table["socketpair"], 0, 11),
        _insn(_LD_W_ABS, _ARG0_LOW),
        _insn(_JEQ_K, _AF_UNIX, 8, 0),
        _insn(_JEQ_K, _AF_INET, 7, 0),
        _insn(_JEQ_K, _AF_INET6, 6, 0),
        _insn(_JEQ_K, _AF_NETLINK, 0, 4),
        # Netlink: routing (the sandbox's own interfaces) and socket diagnostics only; kernel
        # uevents would tell the sandbox about the host's devices.
        _insn(_LD_W_ABS, _ARG2_LOW),
        _insn(_JEQ_K, _NETLINK_ROUTE, 3, 0),
        _insn(_JEQ_K, _NETLINK_SOCK_DIAG, 2, 0),
        _insn(_RET_K, _RET_EPROTONOSUPPORT),
        _insn(_RET_K, _RET_EAFNOSUPPORT),
        _insn(_RET_K, _RET_ALLOW),
    ]
    # ioctl: only terminal input injection is refused; the kernel reads the request as 32 bits.
    program += [
        _insn(_JEQ_K, table["ioctl"], 0, 5),
        _insn(_LD_W_ABS, _ARG1_LOW),
        _insn(_JEQ_K, _TIOCSTI, 2, 0),
        _insn(_JEQ_K, _TIOCLINUX, 1, 0),
        _insn(_RET_K, _RET_ALLOW),
        _insn(_RET_K, _RET_EPERM),
    ]
    program.append(_insn(_RET_K, _RET_ALLOW))
    return b"".join(program)
