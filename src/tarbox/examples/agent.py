"""An agent in Python, run by CPython compiled to WASI inside Tarbox's sandbox:

    tarbox -t agent-1 run examples/agent.py -- mytask

It sees only /workspace (and the standard library, read-only). It reads the
text files there, writes a report and a log line, and prints a summary.
"""

import json
import os
import sys

task = sys.argv[1] if len(sys.argv) > 1 else "none"
root = "/workspace"
words = {}
for dirpath, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
        if name.endswith(".txt"):
            path = os.path.join(dirpath, name)
            with open(path, encoding="utf-8") as f:
                words[os.path.relpath(path, root)] = len(f.read().split())

os.makedirs(f"{root}/out", exist_ok=True)
with open(f"{root}/out/report.json", "w") as f:
    json.dump({"task": task, "words": words, "total": sum(words.values())}, f, indent=1, sort_keys=True)
with open(f"{root}/out/log.txt", "a") as f:
    f.write(f"python agent ran task {task}\n")
print(f"task {task}: {len(words)} text files, {sum(words.values())} words")
