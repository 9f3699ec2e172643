-- Store block data out of line without pglz: compression attempts cost more
-- than they save on the binary data agents stream, and uncompressed TOAST
-- reads measured ~1.8x faster here (bench/fs_bench.py, docs/benchmarks.md).
ALTER TABLE blocks ALTER COLUMN data SET STORAGE EXTERNAL;
