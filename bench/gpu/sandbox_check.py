"""What the shim's shared region relies on, checked in the first seconds of a device check.

Lent GPU machines have been seen under gVisor (an emulated 4.4.0 kernel, the driver's folder
read-only) and Firecracker, where open-file-description locks, link(2), memfd, shared mappings
or futexes may behave differently. A failure here explains every later failure at once.

usage: sandbox_check.py [--dir DIR] [--json FILE]
Prints one line per check (`sandbox check=<name> ok=<0|1> detail=...`) and writes them as JSON;
always exits 0 (a failed check is data).
"""
import argparse
import ctypes
import json
import mmap
import os
import platform
import struct
import sys
import tempfile
import time

F_OFD_GETLK, F_OFD_SETLK = 36, 37
SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine())


def ofd_lock(d):
    """Two descriptions of one file in one process: a write lock through one must block the
    other (an OFD lock is per open file description, unlike a POSIX record lock)."""
    import fcntl

    p = os.path.join(d, "lock")
    a, b = os.open(p, os.O_RDWR | os.O_CREAT, 0o600), os.open(p, os.O_RDWR)
    try:
        lk = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)
        fcntl.fcntl(a, F_OFD_SETLK, lk)
        try:
            fcntl.fcntl(b, F_OFD_SETLK, lk)
            return False, "a second description got the same write lock (OFD locks not enforced)"
        except OSError as e:
            return True, f"second description refused ({e.strerror})"
    finally:
        os.close(a)
        os.close(b)


def link_publish(d):
    src, dst = os.path.join(d, "tmpfile"), os.path.join(d, "published")
    with open(src, "w") as f:
        f.write("x")
    os.link(src, dst)
    try:
        os.link(src, dst)
        return False, "link(2) over an existing name succeeded"
    except FileExistsError:
        return True, "link(2) publishes, and refuses an existing name"


def memfd(_d):
    fd = os.memfd_create("vgpu-check")
    try:
        os.ftruncate(fd, 4096)
        m = mmap.mmap(fd, 4096)
        m[:4] = b"abcd"
        return os.pread(fd, 4, 0) == b"abcd", "memfd_create + ftruncate + mmap"
    finally:
        os.close(fd)


def shared_mmap(d):
    """A MAP_SHARED file mapping written by a child is seen by the parent."""
    p = os.path.join(d, "region")
    with open(p, "wb") as f:
        f.truncate(4096)
    fd = os.open(p, os.O_RDWR)
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
    pid = os.fork()
    if pid == 0:
        m[0:8] = struct.pack("Q", 0xC0FFEE)
        m.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    v = struct.unpack("Q", m[0:8])[0]
    os.close(fd)
    return v == 0xC0FFEE, f"the parent read {v:#x}"


def futex(d):
    """FUTEX_WAIT on a shared mapping returns at once when the word differs, and a wake from
    another process ends a wait (the priority board's wake-up)."""
    if SYS_FUTEX is None:
        return None, f"no futex syscall number for {platform.machine()}"
    libc = ctypes.CDLL(None, use_errno=True)
    p = os.path.join(d, "futex")
    with open(p, "wb") as f:
        f.truncate(4096)
    fd = os.open(p, os.O_RDWR)
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    ts = struct.pack("qq", 2, 0)  # 2 s
    pid = os.fork()
    if pid == 0:
        time.sleep(0.2)
        m[0:4] = struct.pack("I", 1)
        libc.syscall(SYS_FUTEX, ctypes.c_void_p(addr), 1, 1, None, None, 0)  # FUTEX_WAKE (shared)
        os._exit(0)
    t0 = time.monotonic()
    libc.syscall(SYS_FUTEX, ctypes.c_void_p(addr), 0, 0, ctypes.c_char_p(ts), None, 0)  # FUTEX_WAIT on 0
    waited = time.monotonic() - t0
    os.waitpid(pid, 0)
    os.close(fd)
    return waited < 1.5, f"woken after {waited:.3f} s (a 2 s timeout means no cross-process wake)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    results = {"kernel": platform.release(), "machine": platform.machine()}
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        for name, fn in [("ofd_lock", ofd_lock), ("link", link_publish), ("memfd", memfd), ("shared_mmap", shared_mmap), ("futex", futex)]:
            try:
                ok, detail = fn(d)
            except Exception as e:  # noqa: BLE001 - a check that cannot run is a finding
                ok, detail = False, f"{type(e).__name__}: {e}"
            results[name] = {"ok": ok, "detail": detail}
            print(f"sandbox check={name} ok={'-' if ok is None else int(bool(ok))} detail={str(detail).replace(' ', '_')}", flush=True)
    results["all_ok"] = all(v["ok"] is not False for k, v in results.items() if isinstance(v, dict))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
