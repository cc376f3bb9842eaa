"""A seccomp filter for sandboxes: the code inside cannot start a session of its own.

bwrap starts each sandbox in a new session (``--new-session``). With the kernel's autogroup
scheduling (``kernel.sched_autogroup_enabled``), each session is one CPU share, so a sandbox
whose processes all stay in its session gets one share however many processes it runs: a
student's 256 busy processes cannot take the CPU from the kernels of other sandboxes. Without
this filter, each process calling ``setsid()`` would add a share. ``setsid`` answers EPERM;
every other system call is allowed (bwrap's own options take care of the rest).

The filter is a classic BPF program, as bwrap's ``--seccomp FD`` reads it (what libseccomp's
``seccomp_export_bpf`` writes), assembled here for the architectures Linux runs this on.
"""

from __future__ import annotations

import os
import struct

__all__ = ["NO_NEW_SESSION", "filter_fd", "no_new_session_program"]

# struct seccomp_data: the system call number at offset 0, the audit architecture at offset 4
_LOAD_WORD, _JUMP_IF_EQUAL, _RETURN = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
_ALLOW = 0x7FFF0000  # SECCOMP_RET_ALLOW
_EPERM = 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM
_X32 = 0x40000000  # x86_64's x32 ABI: the same numbers with this bit

# (audit architecture, its setsid system call numbers)
NO_NEW_SESSION: tuple[tuple[int, tuple[int, ...]], ...] = (
    (0xC000003E, (112, _X32 | 112)),  # x86_64 and x32
    (0x40000003, (66,)),  # i386 (32-bit code on x86_64)
    (0xC00000B7, (157,)),  # aarch64
    (0x40000028, (66,)),  # arm (32-bit code on aarch64)
)


def _instruction(code: int, jump_true: int, jump_false: int, value: int) -> bytes:
    return struct.pack("=HBBI", code, jump_true, jump_false, value)


def no_new_session_program(
    denied: tuple[tuple[int, tuple[int, ...]], ...] = NO_NEW_SESSION,
) -> bytes:
    """The BPF program: EPERM for the listed system calls of each architecture, else allow."""
    blocks = [(arch, numbers, 2 + len(numbers)) for arch, numbers in denied]
    length = 1 + sum(1 + size for *_, size in blocks) + 2  # load, blocks, allow, deny
    deny = length - 1
    program = [_instruction(_LOAD_WORD, 0, 0, 4)]
    for arch, numbers, size in blocks:
        program.append(_instruction(_JUMP_IF_EQUAL, 0, size, arch))  # else: the next block
        program.append(_instruction(_LOAD_WORD, 0, 0, 0))
        for number in numbers:
            here = len(program)
            program.append(_instruction(_JUMP_IF_EQUAL, deny - here - 1, 0, number))
        program.append(_instruction(_RETURN, 0, 0, _ALLOW))
    program.append(_instruction(_RETURN, 0, 0, _ALLOW))  # an architecture not listed
    program.append(_instruction(_RETURN, 0, 0, _EPERM))
    assert len(program) == length
    return b"".join(program)


def filter_fd() -> int:
    """A readable descriptor holding the program, for ``bwrap --seccomp FD`` (close it after)."""
    read, write = os.pipe()
    os.write(write, no_new_session_program())  # a few hundred bytes: within the pipe's buffer
    os.close(write)
    return read
