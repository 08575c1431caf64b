//! Integration tests of deskmail-mailparse: the real-world corpus, hostile input, a
//! property test over mutated corpus mails, and the test kit's sample generator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod corpus;
mod features;
mod fuzz;
mod hostile;
mod samples;

use std::path::PathBuf;

/// The corpus copied into the repository (`tests/corpus/` at the workspace root).
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

/// Every mail file below a corpus folder, sorted.
pub fn mail_files(folder: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![corpus_dir().join(folder)];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus folder {} unreadable: {e}", dir.display()));
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
                if !matches!(ext, "json" | "yml" | "md" | "jsonl") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}
