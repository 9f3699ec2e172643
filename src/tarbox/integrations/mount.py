"""The ``tarbox mount`` process: parses its arguments, opens the tenant, picks a FUSE
backend (``fuse_inode`` on pyfuse3 when installed, else ``fuse`` on mfusepy) and
serves until unmounted. Above both backends, so neither imports the other."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """``python -m tarbox.integrations.mount``: what ``tarbox mount`` runs (in the foreground)."""
    import argparse

    import tarbox

    ap = argparse.ArgumentParser(prog="tarbox-mount")
    ap.add_argument("mountpoint")
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--url")
    ap.add_argument("--layer", type=int)
    ap.add_argument("--read-only", action="store_true")
    ap.add_argument("--allow-other", action="store_true")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--backend", choices=BACKENDS, default=None)
    a = ap.parse_args(argv)
    tb = tarbox.connect(a.url)
    fs = tb.filesystem(a.tenant, layer=a.layer, read_only=a.read_only)
    try:
        backend = a.backend or default_backend()
        if backend == "pyfuse3":
            from tarbox.integrations.fuse_inode import serve

            serve(fs, a.mountpoint, allow_other=a.allow_other, debug=a.debug)
        else:
            from tarbox.integrations.fuse import mount

            mount(fs, a.mountpoint, allow_other=a.allow_other, debug=a.debug)
    finally:
        tb.close()


BACKENDS = ("pyfuse3", "mfusepy")


def default_backend() -> str:
    """pyfuse3 when installed (measured faster: docs/fuse.md), else mfusepy."""
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        return "mfusepy"
    return "pyfuse3"


if __name__ == "__main__":
    main()
