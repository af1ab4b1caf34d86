//! The golden-file check shared by the engine's and the cluster's golden scripts: replay each
//! `*.txt` of a folder, compare the whole transcript, and rewrite it under `UPDATE_GOLDEN=1`.

use std::path::Path;

/// Replays every script in `dir` (relative to the crate) with `replay` and asserts that each
/// reads as `replay` answers; at least five scripts must be there.
pub(crate) fn check_golden_dir(dir: &str, replay: impl Fn(&str) -> String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("golden dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "txt") {
            continue;
        }
        count += 1;
        let text = std::fs::read_to_string(&path).expect("read golden");
        let actual = replay(&text);
        if actual == text {
            continue;
        }
        if update {
            std::fs::write(&path, &actual).expect("write golden");
        } else {
            failures.push(format!("{}:\n{actual}", path.display()));
        }
    }
    assert!(
        count >= 5,
        "expected at least five golden scripts in {}",
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "golden transcripts differ (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}
