"""The Preview 1 errno numbering, and how a Linux errno maps onto it.

The names are the WASI snapshot's, in its order (the number is the index). A Linux
errno with the same name maps to it; EOPNOTSUPP is NOTSUP as on Linux, where the
two are one number.
"""

from __future__ import annotations

import errno as E

_NAMES = [
    "SUCCESS",
    "2BIG",
    "ACCES",
    "ADDRINUSE",
    "ADDRNOTAVAIL",
    "AFNOSUPPORT",
    "AGAIN",
    "ALREADY",
    "BADF",
    "BADMSG",
    "BUSY",
    "CANCELED",
    "CHILD",
    "CONNABORTED",
    "CONNREFUSED",
    "CONNRESET",
    "DEADLK",
    "DESTADDRREQ",
    "DOM",
    "DQUOT",
    "EXIST",
    "FAULT",
    "FBIG",
    "HOSTUNREACH",
    "IDRM",
    "ILSEQ",
    "INPROGRESS",
    "INTR",
    "INVAL",
    "IO",
    "ISCONN",
    "ISDIR",
    "LOOP",
    "MFILE",
    "MLINK",
    "MSGSIZE",
    "MULTIHOP",
    "NAMETOOLONG",
    "NETDOWN",
    "NETRESET",
    "NETUNREACH",
    "NFILE",
    "NOBUFS",
    "NODEV",
    "NOENT",
    "NOEXEC",
    "NOLCK",
    "NOLINK",
    "NOMEM",
    "NOMSG",
    "NOPROTOOPT",
    "NOSPC",
    "NOSYS",
    "NOTCONN",
    "NOTDIR",
    "NOTEMPTY",
    "NOTRECOVERABLE",
    "NOTSOCK",
    "NOTSUP",
    "NOTTY",
    "NXIO",
    "OVERFLOW",
    "OWNERDEAD",
    "PERM",
    "PIPE",
    "PROTO",
    "PROTONOSUPPORT",
    "PROTOTYPE",
    "RANGE",
    "ROFS",
    "SPIPE",
    "SRCH",
    "STALE",
    "TIMEDOUT",
    "TXTBSY",
    "XDEV",
    "NOTCAPABLE",
]
WASI_ERRNO = {name: i for i, name in enumerate(_NAMES)}
FROM_LINUX = {getattr(E, "E" + n): i for n, i in WASI_ERRNO.items() if hasattr(E, "E" + n)}
FROM_LINUX[E.EOPNOTSUPP] = WASI_ERRNO["NOTSUP"]
SUCCESS, BADF, FAULT, INVAL, IO, ILSEQ = (WASI_ERRNO[n] for n in ("SUCCESS", "BADF", "FAULT", "INVAL", "IO", "ILSEQ"))
ISDIR, NOTDIR, SPIPE, NOTSUP, MFILE, NOTCAPABLE = (
    WASI_ERRNO[n] for n in ("ISDIR", "NOTDIR", "SPIPE", "NOTSUP", "MFILE", "NOTCAPABLE")
)
