;; Syscall-level abuse: every call gets pointers or lengths outside memory, or
;; bad UTF-8, and prints the errno it got as one byte per call (then exits 0).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "ok\ff\fe")
  (global $out (mut i32) (i32.const 1024))
  (func $record (param $e i32)
    (i32.store8 (global.get $out) (i32.add (local.get $e) (i32.const 32)))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))
  (func (export "_start")
    ;; iovec array itself out of bounds
    (call $record (call $fd_write (i32.const 1) (i32.const 65530) (i32.const 4) (i32.const 200)))
    ;; iovec pointing outside memory
    (i32.store (i32.const 300) (i32.const 65000))
    (i32.store (i32.const 304) (i32.const 10000))
    (call $record (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 200)))
    ;; huge iovec count
    (call $record (call $fd_write (i32.const 1) (i32.const 300) (i32.const -1) (i32.const 200)))
    ;; result pointer out of bounds
    (i32.store (i32.const 300) (i32.const 100))
    (i32.store (i32.const 304) (i32.const 0))
    (call $record (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const -4)))
    ;; read into memory past the end
    (i32.store (i32.const 300) (i32.const 65535))
    (i32.store (i32.const 304) (i32.const 100))
    (call $record (call $fd_read (i32.const 0) (i32.const 300) (i32.const 1) (i32.const 200)))
    ;; path out of bounds, path not UTF-8, fd out of range
    (call $record (call $path_open (i32.const 3) (i32.const 0) (i32.const 65530) (i32.const 100)
      (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 200)))
    (call $record (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 4)
      (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 200)))
    (call $record (call $path_open (i32.const 99) (i32.const 0) (i32.const 100) (i32.const 2)
      (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 200)))
    (call $record (call $args_get (i32.const 65534) (i32.const 0)))
    (call $record (call $random_get (i32.const 65000) (i32.const 1000)))
    (call $record (call $dir_name (i32.const 3) (i32.const 65535) (i32.const 100)))
    (call $record (call $readdir (i32.const 3) (i32.const 65000) (i32.const 4096) (i64.const 0) (i32.const 200)))
    (call $record (call $mkdir (i32.const 3) (i32.const -1) (i32.const 5)))
    (call $record (call $close (i32.const -7)))
    (call $record (call $poll (i32.const 65000) (i32.const 0) (i32.const 1000) (i32.const 200)))
    ;; print the recorded errno bytes
    (i32.store (i32.const 300) (i32.const 1024))
    (i32.store (i32.const 304) (i32.sub (global.get $out) (i32.const 1024)))
    (drop (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 200))))
)
