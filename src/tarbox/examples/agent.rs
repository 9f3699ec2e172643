// An agent in Rust (std only), built for wasm32-wasip1 and run in Tarbox's sandbox:
//
//     tarbox -t agent-1 run examples/agent.rs -- mytask
//
// It sees only /workspace. It counts the words of the text files there,
// writes a report and a log line, and prints a summary.
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

fn walk(dir: &Path, root: &Path, words: &mut BTreeMap<String, usize>) {
    let mut entries: Vec<_> = fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, root, words);
        } else if path.extension().map_or(false, |e| e == "txt") {
            let text = fs::read_to_string(&path).expect("read");
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            words.insert(rel, text.split_whitespace().count());
        }
    }
}

fn main() {
    let task = std::env::args().nth(1).unwrap_or_else(|| "none".to_string());
    let root = Path::new("/workspace");
    let mut words = BTreeMap::new();
    walk(root, root, &mut words);
    let total: usize = words.values().sum();
    fs::create_dir_all(root.join("out")).expect("mkdir");
    let mut report = format!("task {}\n", task);
    for (name, n) in &words {
        report.push_str(&format!("{} {}\n", name, n));
    }
    fs::write(root.join("out/report.txt"), report).expect("write report");
    let mut log = fs::OpenOptions::new().create(true).append(true).open(root.join("out/log.txt")).expect("log");
    writeln!(log, "rust agent ran task {}", task).expect("log line");
    println!("task {}: {} text files, {} words", task, words.len(), total);
}
