"""Thin adapters that let ordinary tools reach a tenant's files: fsspec (and with it
pandas, dask, ...), tar archives. They use only the public ``tarbox.fs`` API."""
