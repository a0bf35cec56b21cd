//! The house rules CI holds the library to, beyond fmt and clippy: one error dialect per tier,
//! so no `Result<_, String>` or `Result<_, u8>` anywhere under `src/` (an error is a type that
//! says what went wrong, not text or a number passed along).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The error type of every `Result<T, E>` in `text`, with the line it starts on: `E` as
/// written (white space folded), the generic arguments matched by depth so that
/// `Result<HashMap<String, String>, E>` yields `E`. `Result<T>` aliases yield nothing.
fn error_types(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("Result<") {
        let preceded = text[..at].chars().next_back();
        if preceded.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `PolicyResult<`
        }
        let (mut depth, mut comma, mut end) = (0usize, None, None);
        for (i, c) in text[at + "Result".len()..].char_indices() {
            let i = at + "Result".len() + i;
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                ',' if depth == 1 => comma = Some(i),
                ';' | '{' => break,
                _ => {}
            }
        }
        if let (Some(comma), Some(end)) = (comma, end) {
            let error: String = text[comma + 1..end].split_whitespace().collect();
            found.push((text[..at].lines().count().max(1), error));
        }
    }
    found
}

#[test]
fn the_library_passes_no_error_as_text_or_a_number() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 50, "read src/: {files:?}");
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (line, error) in error_types(&text) {
            if error == "String" || error == "u8" {
                offenders.push(format!("{}:{line}: Result<_, {error}>", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "one error dialect: give these an error type of their own (thiserror):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_rule_sees_through_nested_generics_and_line_breaks() {
    let text = "fn a() -> Result<HashMap<String, String>, MyError> {}\n\
                fn b() -> Result<(u8, String),\n    String> {}\n\
                fn c() -> io::Result<String> {}\n\
                fn d() -> PolicyResult<u8, String> {}\n\
                fn e() -> Result<Vec<u8>, u8> {}";
    assert_eq!(
        error_types(text),
        [
            (1, "MyError".to_string()),
            (2, "String".to_string()),
            (6, "u8".to_string())
        ]
    );
}
