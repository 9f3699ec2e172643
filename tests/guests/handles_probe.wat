(module
  (import "wasi:cli/stdout@0.2.12" "get-stdout" (func $stdout (result i32)))
  (memory (export "memory") 1)
  ;; asks for a million handles and drops none: the host must stop it, not grow forever
  (func (export "wasi:cli/run@0.2.12#run") (result i32)
    (local $i i32)
    (loop $again
      (drop (call $stdout))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 1000000))))
    (i32.const 0)))
