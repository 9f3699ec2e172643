"""The complete ``wasi_snapshot_preview1`` ABI, over the descriptor core.

Every function is a Python host function (``Linker.define_func``); every file
call reaches Tarbox. Guest memory is untrusted: each pointer and length is
checked against the current memory size before use (EFAULT otherwise), and
strings must be UTF-8 (EILSEQ). Guest memory is read and written through one
memoryview over wasmtime's linear memory, so bulk data is copied once.
"""

from __future__ import annotations

import ctypes
import errno as E
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import wasmtime

from tarbox.errors import DatabaseError, QuotaExceededError, SandboxEscapeError, TarboxError
from tarbox.wasi.core import Descriptor
from tarbox.wasi.preview1_abi import (
    DIRENT,
    EVENT,
    FDF_APPEND,
    FDF_DSYNC,
    FDF_NONBLOCK,
    FDF_RSYNC,
    FDF_SYNC,
    FDSTAT,
    FILESTAT,
    FILETYPE,
    FST_ATIM,
    FST_ATIM_NOW,
    FST_MTIM,
    FST_MTIM_NOW,
    FT_DIR,
    FT_FILE,
    FT_UNKNOWN,
    IOVEC,
    LE_U32,
    LE_U64,
    MODULE,
    PRESTAT,
    SIGNATURES,
    SUBSCRIPTION_CLOCK,
    U32,
    U64,
)
from tarbox.wasi.preview1_errno import (
    BADF,
    FAULT,
    FROM_LINUX,
    INVAL,
    IO,
    MFILE,
    NOTCAPABLE,
    NOTDIR,
    NOTSUP,
    SPIPE,
    SUCCESS,
    WASI_ERRNO,
)
from tarbox.wasi.rights import (
    ALL_RIGHTS,
    DIR_RIGHTS,
    R_PATH_LINK_TARGET,
    R_PATH_RENAME_TARGET,
    RIGHT_NEEDED,
    STDIO_RIGHTS,
    may_open,
    open_access,
    opened_rights,
)
from tarbox.wasi.state import GuestExit, RunState
from tarbox.wasi.types import DescriptorFlags, DescriptorType, OpenFlags, PathFlags

ESCAPE = WASI_ERRNO["PERM"]  # what wasmtime returns for a path leaving the preopen (differential test)


class Fault(Exception):
    """A guest pointer or length outside linear memory."""


@dataclass
class Fd:
    desc: Descriptor | None  # None for stdio
    kind: str  # "stdin" | "stdout" | "stderr" | "file" | "dir"
    pos: int = 0
    append: bool = False
    preopen: str | None = None  # guest name of a preopened directory
    dirents: list | None = None  # readdir snapshot, taken at cookie 0
    rights: int = ALL_RIGHTS  # base rights, as fd_fdstat_get reports them
    inheriting: int = 0  # rights a descriptor opened from this one may have
    held: bool = False  # the guest narrowed the rights (here or on an ancestor): they are enforced


class Preview1(RunState):
    """State of one run: descriptors, args, environment, stdio, and the guest memory view."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.args = [a.encode() + b"\0" for a in self.argv]
        self.env = [f"{k}={v}".encode() + b"\0" for k, v in self.environ.items()]
        self.fds: dict[int, Fd] = {n: Fd(None, k, rights=STDIO_RIGHTS) for n, k in enumerate(_STDIO)}
        for i, (name, desc) in enumerate(self.preopens):
            self.fds[3 + i] = Fd(desc, "dir", preopen=name, rights=DIR_RIGHTS, inheriting=ALL_RIGHTS)
        self.store: wasmtime.Store | None = None
        self.memory: wasmtime.Memory | None = None
        self._len = 0
        self._mv = memoryview(b"")

    # ------------------------------------------------------------------ memory

    def attach(self, store: wasmtime.Store, memory: wasmtime.Memory | None) -> None:
        self.store, self.memory = store, memory
        self._len = -1
        self._mv = memoryview(b"")

    def detach(self) -> None:
        """Let go of the run's store and memory. Wasmtime-py keeps host functions in a
        process-wide table until their store is deleted, and ours (bound methods of this
        object) would keep the store alive through ``self.store``: every run's linear
        memory would stay allocated for good."""
        self.store = self.memory = None
        self._len = -1
        self._mv = memoryview(b"")

    def _view(self, end: int) -> memoryview:
        """The guest memory, checked to reach ``end``. Refreshed only when memory grew."""
        if end <= self._len:
            return self._mv
        if self.memory is None or self.store is None:
            raise Fault("module exports no memory")
        n = self.memory.data_len(self.store)
        if n != self._len:
            base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
            self._mv = memoryview((ctypes.c_ubyte * n).from_address(base)).cast("B")
            self._len = n
        if end > n:
            raise Fault(f"guest range ends at {end}, memory is {n} bytes")
        return self._mv

    def _slice(self, ptr: int, n: int) -> memoryview:
        ptr &= U32
        n &= U32
        return self._view(ptr + n)[ptr : ptr + n]

    def _get_u32(self, ptr: int) -> int:
        ptr &= U32
        return LE_U32.unpack_from(self._view(ptr + 4), ptr)[0]

    def _put(self, st: struct.Struct, ptr: int, *vals) -> None:
        ptr &= U32
        st.pack_into(self._view(ptr + st.size), ptr, *vals)

    def _str(self, ptr: int, n: int) -> str:
        raw = bytes(self._slice(ptr, n))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise OSError(E.EILSEQ, "path is not valid UTF-8") from None

    def _iovs(self, ptr: int, count: int) -> list[memoryview]:
        count &= U32
        if count > 1024:  # IOV_MAX
            raise OSError(E.EINVAL, "too many iovecs")
        ptr &= U32
        mv = self._view(ptr + 8 * count)
        out = []
        for i in range(count):
            buf, n = IOVEC.unpack_from(mv, ptr + 8 * i)
            out.append(self._slice(buf, n))
        return out

    # ------------------------------------------------------------- descriptors

    def _fd(self, fd: int) -> Fd:
        f = self.fds.get(fd & U32)
        if f is None:
            raise OSError(E.EBADF, "bad file descriptor")
        return f

    def _dirfd(self, fd: int) -> Descriptor:
        f = self._fd(fd)
        if f.kind != "dir":
            raise OSError(E.ENOTDIR, "not a directory")
        assert f.desc is not None
        return f.desc

    def _dropped(self, fd: int, right: int) -> bool:
        """Whether the guest dropped ``right`` on ``fd`` (the second descriptor of a
        two-directory call; ``_guard`` checks the first)."""
        f = self._fd(fd)
        return f.held and not f.rights & right

    def _filefd(self, fd: int) -> Fd:
        f = self._fd(fd)
        if f.kind == "dir":
            raise OSError(E.EBADF, "a directory descriptor")  # wasmtime: EBADF, not EISDIR
        return f

    def _new_fd(self, f: Fd) -> int:
        if len(self.fds) >= self.max_fds:
            if f.desc is not None:
                f.desc.close()
            raise OSError(E.EMFILE, "too many open descriptors")
        n = 3
        while n in self.fds:
            n += 1
        self.fds[n] = f
        return n

    def close_all(self) -> None:
        """End of run: close what the guest left open (publishes its writes)."""
        errors = []
        for f in list(self.fds.values()):
            if f.desc is not None:
                try:
                    f.desc.close()
                except (OSError, TarboxError) as exc:
                    errors.append(exc)
        self.fds.clear()
        if errors:
            raise errors[0]

    # ----------------------------------------------------------------- linking

    def define(self, linker: wasmtime.Linker) -> None:
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        for name, sig in SIGNATURES.items():
            params = [i64 if c == "I" else i32 for c in sig]
            results = [] if name == "proc_exit" else [i32]
            impl = getattr(self, name)
            need = RIGHT_NEEDED.get(name)
            linker.define_func(MODULE, name, wasmtime.FuncType(params, results), self._guard(impl, need))

    def _guard(self, impl: Callable[..., int | None], need: tuple[int, int] | None) -> Callable[..., int | None]:
        """Errors become WASI errno values; only exits and limits unwind the guest.
        ``need``: (argument index of the descriptor, the right the call uses on it),
        refused with NOTCAPABLE once the guest has dropped that right."""
        stats = self.stats
        fds = self.fds
        at, right = need if need is not None else (0, 0)

        def call(*args):
            stats.host_calls += 1
            if right:
                f = fds.get(args[at] & U32)
                if f is not None and f.held and not f.rights & right:
                    return NOTCAPABLE
            try:
                return impl(*args)
            except Fault:
                return FAULT
            except SandboxEscapeError:
                return ESCAPE
            except QuotaExceededError:
                return WASI_ERRNO["DQUOT"]
            except OSError as exc:
                return FROM_LINUX.get(exc.errno or 0, IO)
            except (DatabaseError, TarboxError):
                return IO
            except (OverflowError, struct.error):
                return INVAL

        return call

    # -------------------------------------------------------------- args, env

    def _sizes(self, items: list[bytes], count_ptr: int, size_ptr: int) -> int:
        self._put(LE_U32, count_ptr, len(items))
        self._put(LE_U32, size_ptr, sum(len(x) for x in items))
        return SUCCESS

    def _fill(self, items: list[bytes], ptrs: int, buf: int) -> int:
        size = sum(len(x) for x in items)
        mv = self._slice(buf, size)
        self._slice(ptrs, 4 * len(items))  # bounds
        off = 0
        for i, item in enumerate(items):
            mv[off : off + len(item)] = item
            self._put(LE_U32, ptrs + 4 * i, (buf & U32) + off)
            off += len(item)
        return SUCCESS

    def args_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        return self._sizes(self.args, count_ptr, size_ptr)

    def args_get(self, ptrs: int, buf: int) -> int:
        return self._fill(self.args, ptrs, buf)

    def environ_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        return self._sizes(self.env, count_ptr, size_ptr)

    def environ_get(self, ptrs: int, buf: int) -> int:
        return self._fill(self.env, ptrs, buf)

    # ------------------------------------------------------------ clocks, etc.

    _CLOCKS = {0: time.time_ns, 1: time.monotonic_ns, 2: time.process_time_ns, 3: time.thread_time_ns}

    def clock_res_get(self, clock: int, res_ptr: int) -> int:
        if clock not in self._CLOCKS:
            return INVAL
        if not self.allow_clocks:
            return NOTCAPABLE
        self._put(LE_U64, res_ptr, 1000)
        return SUCCESS

    def clock_time_get(self, clock: int, precision: int, time_ptr: int) -> int:
        fn = self._CLOCKS.get(clock)
        if fn is None:
            return INVAL
        if not self.allow_clocks:
            return NOTCAPABLE
        self._put(LE_U64, time_ptr, fn())
        return SUCCESS

    def random_get(self, buf: int, n: int) -> int:
        mv = self._slice(buf, n)
        if not self.allow_random:
            return NOTCAPABLE
        mv[:] = secrets.token_bytes(len(mv))
        return SUCCESS

    def sched_yield(self) -> int:
        time.sleep(0)
        return SUCCESS

    def proc_exit(self, code: int) -> None:
        self.exit_code = code & U32
        raise GuestExit(code)

    def proc_raise(self, sig: int) -> int:
        return NOTSUP

    def poll_oneoff(self, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
        nsubs &= U32
        if nsubs == 0:
            return INVAL
        in_ptr &= U32
        mv = self._view(in_ptr + 48 * nsubs)
        self._slice(out_ptr, 32 * nsubs)  # bounds
        events = []
        timers = []
        for i in range(nsubs):
            base = in_ptr + 48 * i
            userdata = LE_U64.unpack_from(mv, base)[0]
            tag = mv[base + 8]
            if tag == 0:
                clock, timeout, _precision, flags = SUBSCRIPTION_CLOCK.unpack_from(mv, base + 16)
                if clock not in self._CLOCKS:
                    events.append((userdata, INVAL, 0, 0))
                    continue
                if not self.allow_clocks:
                    events.append((userdata, NOTCAPABLE, 0, 0))
                    continue
                if flags & 1:  # absolute
                    timeout = max(0, timeout - self._CLOCKS[clock]())
                timers.append((timeout, userdata))
            elif tag in (1, 2):
                fd = LE_U32.unpack_from(mv, base + 16)[0]
                f = self.fds.get(fd)
                if f is None:
                    events.append((userdata, BADF, tag, 0))
                elif tag == 1:
                    nbytes = len(self.stdin) - f.pos if f.kind == "stdin" else 0
                    if f.kind == "file" and f.desc is not None:
                        nbytes = max(0, f.desc.stat().size - f.pos)
                    events.append((userdata, SUCCESS, tag, max(0, nbytes)))
                else:
                    events.append((userdata, SUCCESS, tag, 0))
            else:
                return INVAL
        if not events and timers:
            timeout, userdata = min(timers)
            self.sleep_within_deadline(timeout / 1e9)
            events.append((userdata, SUCCESS, 0, 0))
        for i, (userdata, err, typ, nbytes) in enumerate(events):
            self._put(EVENT, out_ptr + 32 * i, userdata, err, typ, nbytes, 0)
        self._put(LE_U32, nevents_ptr, len(events))
        return SUCCESS

    # ------------------------------------------------------------- fd calls

    def fd_advise(self, fd: int, offset: int, length: int, advice: int) -> int:
        f = self._filefd(fd)
        if advice & U32 > 5 or offset < 0 or length < 0:
            return INVAL
        if f.desc is None:
            return SPIPE
        return SUCCESS

    def fd_allocate(self, fd: int, offset: int, length: int) -> int:
        f = self._filefd(fd)
        if f.desc is None:
            return BADF
        return NOTSUP

    def fd_close(self, fd: int) -> int:
        f = self._fd(fd)
        del self.fds[fd & U32]
        if f.desc is not None:
            f.desc.close()
        return SUCCESS

    def fd_datasync(self, fd: int) -> int:
        f = self._fd(fd)
        if f.desc is None:
            return INVAL
        f.desc.sync()
        return SUCCESS

    fd_sync = fd_datasync

    def fd_fdstat_get(self, fd: int, ptr: int) -> int:
        f = self._fd(fd)
        if f.desc is None:
            self._put(FDSTAT, ptr, FT_UNKNOWN, 0, f.rights, f.inheriting)
            return SUCCESS
        flags = FDF_APPEND if f.append else 0
        for bit, fdflag in _SYNC_FLAGS:
            if f.desc.flags & bit:
                flags |= fdflag
        self._put(FDSTAT, ptr, FT_DIR if f.kind == "dir" else FT_FILE, flags, f.rights, f.inheriting)
        return SUCCESS

    def fd_fdstat_set_flags(self, fd: int, flags: int) -> int:
        f = self._fd(fd)
        if flags & ~0x1F:  # bits fdflags does not define (wasmtime traps on them)
            return INVAL
        if f.kind != "file" or f.desc is None:
            return BADF if f.kind != "dir" else SUCCESS
        if flags & ~(FDF_APPEND | FDF_NONBLOCK):
            return NOTSUP
        f.append = bool(flags & FDF_APPEND)
        f.desc.set_append(f.append)
        return SUCCESS

    def fd_fdstat_set_rights(self, fd: int, base: int, inheriting: int) -> int:
        """Rights only shrink (NOTCAPABLE otherwise); from then on they are enforced on this
        descriptor and on what is opened through it. Rights a guest merely did not ask
        for at path_open are reported but not enforced, as wasmtime does not either:
        toolchains ask for them inconsistently."""
        f = self._fd(fd)
        base, inheriting = base & U64, inheriting & U64
        if base & ~f.rights or inheriting & ~f.inheriting:
            return NOTCAPABLE
        f.rights, f.inheriting, f.held = base, inheriting, True
        return SUCCESS

    def _put_stat(self, ptr: int, s) -> None:
        self._put(FILESTAT, ptr, 0, s.ino, FILETYPE[s.type], s.link_count, s.size, s.atime_ns, s.mtime_ns, s.ctime_ns)

    def fd_filestat_get(self, fd: int, ptr: int) -> int:
        f = self._fd(fd)
        if f.desc is None:
            self._put(FILESTAT, ptr, 0, 0, FT_UNKNOWN, 1, 0, 0, 0, 0)
            return SUCCESS
        self._put_stat(ptr, f.desc.stat())
        return SUCCESS

    def fd_filestat_set_size(self, fd: int, size: int) -> int:
        f = self._filefd(fd)
        if f.desc is None or size < 0:
            return INVAL
        f.desc.set_size(size)
        return SUCCESS

    @staticmethod
    def _times(atim: int, mtim: int, fst: int) -> tuple[int | None, int | None]:
        if (fst & FST_ATIM and fst & FST_ATIM_NOW) or (fst & FST_MTIM and fst & FST_MTIM_NOW) or fst & ~15:
            raise OSError(E.EINVAL, "conflicting time flags")
        now = time.time_ns()
        a = atim & U64 if fst & FST_ATIM else now if fst & FST_ATIM_NOW else None
        m = mtim & U64 if fst & FST_MTIM else now if fst & FST_MTIM_NOW else None
        return a, m

    def fd_filestat_set_times(self, fd: int, atim: int, mtim: int, fst: int) -> int:
        f = self._fd(fd)
        if f.desc is None:
            return BADF
        f.desc.set_times(*self._times(atim, mtim, fst))
        return SUCCESS

    def fd_prestat_get(self, fd: int, ptr: int) -> int:
        f = self._fd(fd)
        if f.preopen is None:
            return BADF
        self._put(PRESTAT, ptr, 0, len(f.preopen.encode()))
        return SUCCESS

    def fd_prestat_dir_name(self, fd: int, ptr: int, n: int) -> int:
        f = self._fd(fd)
        if f.preopen is None:
            return BADF
        name = f.preopen.encode()
        if (n & U32) < len(name):
            return WASI_ERRNO["NAMETOOLONG"]
        self._slice(ptr, len(name))[:] = name
        return SUCCESS

    def _read(self, f: Fd, iovs: list[memoryview], offset: int | None) -> int:
        if f.kind == "stdin":
            if offset is not None:
                return -SPIPE
            total = 0
            for mv in iovs:
                chunk = self.stdin[f.pos : f.pos + len(mv)]
                mv[: len(chunk)] = chunk
                f.pos += len(chunk)
                total += len(chunk)
                if len(chunk) < len(mv):
                    break
            return total
        if f.desc is None or not f.desc.flags & DescriptorFlags.READ:
            return -BADF
        pos = f.pos if offset is None else offset
        total = 0
        for mv in iovs:
            if not len(mv):
                continue
            n = f.desc.readinto(mv, pos + total)
            total += n
            if n < len(mv):
                break
        if offset is None:
            f.pos += total
        self.stats.bytes_read += total
        return total

    def _transfer(self, op, fd: int, iovs: int, n: int, offset: int | None, count_ptr: int) -> int:
        """fd_read, fd_pread, fd_write, fd_pwrite: ``op`` over the iovecs, then the count."""
        f = self._filefd(fd)
        if offset is not None and offset < 0:
            return INVAL
        done = op(f, self._iovs(iovs, n), offset)
        if done < 0:
            return -done
        self._put(LE_U32, count_ptr, done)
        return SUCCESS

    def fd_read(self, fd: int, iovs: int, n: int, nread_ptr: int) -> int:
        return self._transfer(self._read, fd, iovs, n, None, nread_ptr)

    def fd_pread(self, fd: int, iovs: int, n: int, offset: int, nread_ptr: int) -> int:
        return self._transfer(self._read, fd, iovs, n, offset, nread_ptr)

    def _write(self, f: Fd, iovs: list[memoryview], offset: int | None) -> int:
        if f.kind in ("stdout", "stderr"):
            if offset is not None:
                return -SPIPE
            data = b"".join(iovs)
            self.write_output(f.kind, data)
            return len(data)
        if f.desc is None or not f.desc.flags & DescriptorFlags.WRITE:
            return -BADF
        pos = f.pos if offset is None else offset
        total = 0
        for mv in iovs:
            if len(mv):
                total += f.desc.write(mv, pos + total)
        if offset is None:
            f.pos = f.desc.position_after_write() if f.append else f.pos + total
        self.stats.bytes_written += total
        return total

    def fd_write(self, fd: int, iovs: int, n: int, nwritten_ptr: int) -> int:
        return self._transfer(self._write, fd, iovs, n, None, nwritten_ptr)

    def fd_pwrite(self, fd: int, iovs: int, n: int, offset: int, nwritten_ptr: int) -> int:
        return self._transfer(self._write, fd, iovs, n, offset, nwritten_ptr)

    def fd_readdir(self, fd: int, buf: int, buf_len: int, cookie: int, used_ptr: int) -> int:
        f = self._fd(fd)
        if f.kind != "dir" or f.desc is None:
            return NOTDIR if f.kind == "file" else BADF
        cookie &= U64
        if cookie == 0 or f.dirents is None:
            s = f.desc.stat()
            f.dirents = [(".", s.ino, FT_DIR), ("..", 0, FT_DIR)] + [
                (e.name, e.ino, FILETYPE[e.type]) for e in f.desc.read_directory()
            ]
        out = self._slice(buf, buf_len)
        used = 0
        for i in range(cookie, len(f.dirents)):
            name, ino, ft = f.dirents[i]
            raw = name.encode()
            rec = DIRENT.pack(i + 1, ino, len(raw), ft) + raw
            take = min(len(rec), len(out) - used)
            out[used : used + take] = rec[:take]
            used += take
            if used == len(out):
                break
        self._put(LE_U32, used_ptr, used)
        return SUCCESS

    def fd_renumber(self, fd: int, to: int) -> int:
        f = self._fd(fd)
        old = self._fd(to)
        if (fd & U32) == (to & U32):
            return SUCCESS
        if old.desc is not None:
            old.desc.close()
        self.fds[to & U32] = f
        del self.fds[fd & U32]
        return SUCCESS

    def fd_seek(self, fd: int, offset: int, whence: int, new_ptr: int) -> int:
        f = self._fd(fd)
        if f.kind == "dir":
            return BADF
        if f.desc is None:
            return SPIPE
        if whence == 0:
            pos = offset
        elif whence == 1:
            pos = f.pos + offset
        elif whence == 2:
            pos = f.desc.end() + offset
        else:
            return INVAL
        if pos < 0:
            return INVAL
        f.pos = pos
        self._put(LE_U64, new_ptr, pos)
        return SUCCESS

    def fd_tell(self, fd: int, ptr: int) -> int:
        f = self._fd(fd)
        if f.kind == "dir":
            return BADF
        if f.desc is None:
            return SPIPE
        self._put(LE_U64, ptr, f.pos)
        return SUCCESS

    # ----------------------------------------------------------- path calls

    def path_create_directory(self, fd: int, path: int, n: int) -> int:
        self._dirfd(fd).create_directory_at(self._str(path, n))
        return SUCCESS

    def path_filestat_get(self, fd: int, flags: int, path: int, n: int, ptr: int) -> int:
        d = self._dirfd(fd)
        self._slice(ptr, 64)
        self._put_stat(ptr, d.stat_at(PathFlags(flags & 1), self._str(path, n)))
        return SUCCESS

    def path_filestat_set_times(self, fd: int, flags: int, path: int, n: int, atim: int, mtim: int, fst: int) -> int:
        d = self._dirfd(fd)
        times = self._times(atim, mtim, fst)
        d.set_times_at(PathFlags(flags & 1), self._str(path, n), *times)
        return SUCCESS

    def path_link(self, old_fd: int, old_flags: int, old: int, old_n: int, new_fd: int, new: int, new_n: int) -> int:
        d, nd = self._dirfd(old_fd), self._dirfd(new_fd)
        if self._dropped(new_fd, R_PATH_LINK_TARGET):
            return NOTCAPABLE
        d.link_at(PathFlags(old_flags & 1), self._str(old, old_n), nd, self._str(new, new_n))
        return SUCCESS

    def path_open(
        self,
        fd: int,
        dirflags: int,
        path: int,
        n: int,
        oflags: int,
        base: int,
        inheriting: int,
        fdflags: int,
        fd_ptr: int,
    ) -> int:
        d = self._dirfd(fd)
        parent = self.fds[fd & U32]  # its Fd (rights), found by _dirfd just now
        rel = self._str(path, n)
        self._slice(fd_ptr, 4)
        if len(self.fds) >= self.max_fds:
            return MFILE
        if parent.held and not may_open(parent.rights, oflags):
            return NOTCAPABLE
        base &= U64
        flags = open_access(base)
        if not d.read_only:
            flags |= DescriptorFlags.MUTATE_DIRECTORY
        for bit, fdflag in _SYNC_FLAGS:
            if fdflags & fdflag:
                flags |= bit
        new = d.open_at(PathFlags(dirflags & 1), rel, OpenFlags(oflags & 15), flags)
        append = bool(fdflags & FDF_APPEND)
        if append and new.file is not None:
            new.set_append(True)
        self.stats.files_opened += 1
        kind = "dir" if new.type is DescriptorType.DIRECTORY else "file"
        # what it asked for, within what the directory passes on, and what such a descriptor can have
        base, inherit = opened_rights(base, inheriting & U64, parent.inheriting, kind == "dir")
        num = self._new_fd(Fd(new, kind, append=append, rights=base, inheriting=inherit, held=parent.held))
        self._put(LE_U32, fd_ptr, num)
        return SUCCESS

    def path_readlink(self, fd: int, path: int, n: int, buf: int, buf_len: int, used_ptr: int) -> int:
        d = self._dirfd(fd)
        target = d.readlink_at(self._str(path, n)).encode()
        out = self._slice(buf, buf_len)
        take = min(len(target), len(out))
        out[:take] = target[:take]
        self._put(LE_U32, used_ptr, take)
        return SUCCESS

    def path_remove_directory(self, fd: int, path: int, n: int) -> int:
        self._dirfd(fd).remove_directory_at(self._str(path, n))
        return SUCCESS

    def path_rename(self, fd: int, old: int, old_n: int, new_fd: int, new: int, new_n: int) -> int:
        d, nd = self._dirfd(fd), self._dirfd(new_fd)
        if self._dropped(new_fd, R_PATH_RENAME_TARGET):
            return NOTCAPABLE
        d.rename_at(self._str(old, old_n), nd, self._str(new, new_n))
        return SUCCESS

    def path_symlink(self, old: int, old_n: int, fd: int, new: int, new_n: int) -> int:
        target = self._str(old, old_n)
        self._dirfd(fd).symlink_at(target, self._str(new, new_n))
        return SUCCESS

    def path_unlink_file(self, fd: int, path: int, n: int) -> int:
        self._dirfd(fd).unlink_file_at(self._str(path, n))
        return SUCCESS

    # -------------------------------------------------------------- sockets

    def _sock(self, fd: int) -> int:
        self._fd(fd)
        return WASI_ERRNO["NOTSOCK"]

    def sock_accept(self, fd: int, flags: int, fd_ptr: int) -> int:
        return self._sock(fd)

    def sock_recv(self, fd: int, iovs: int, n: int, flags: int, len_ptr: int, flags_ptr: int) -> int:
        return self._sock(fd)

    def sock_send(self, fd: int, iovs: int, n: int, flags: int, len_ptr: int) -> int:
        return self._sock(fd)

    def sock_shutdown(self, fd: int, how: int) -> int:
        return self._sock(fd)


_STDIO = ("stdin", "stdout", "stderr")
_SYNC_FLAGS = (  # descriptor flag, fdflag (as wasmtime maps them)
    (DescriptorFlags.FILE_INTEGRITY_SYNC, FDF_SYNC),
    (DescriptorFlags.DATA_INTEGRITY_SYNC, FDF_DSYNC),
    (DescriptorFlags.REQUESTED_WRITE_SYNC, FDF_RSYNC),
)
