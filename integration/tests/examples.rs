//! Every example ends as it documents: each Rust example in `examples/examples/` (but
//! `remote_closure`, which needs the test hosts: see `cluster_run`) and each YAML flow in
//! `examples/flows/` through `eventor-coord`, each in a temp dir of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{coord, coord_binary, example_flows, text, write};

/// The names (file stems) of the files in `dir` ending in `.ext`, sorted.
fn stems(dir: &Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == ext))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The built example `name` (target/<profile>/examples/NAME), next to `eventor-coord`.
fn example_binary(name: &str) -> PathBuf {
    let binary = coord_binary().parent().unwrap().join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so the examples are built",
        binary.display()
    );
    binary
}

#[test]
fn every_rust_example_exits_as_documented() {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/examples");
    let names = stems(&sources, "rs");
    assert!(names.len() >= 8, "examples found: {names:?}");
    for name in names.iter().filter(|n| *n != "remote_closure") {
        let dir = tempfile::tempdir().unwrap();
        // Each example keeps its store in the temp directory: one of this test's own.
        let out = Command::new(example_binary(name))
            .current_dir(dir.path())
            .env("TMPDIR", dir.path())
            .env("RUST_LOG", "info")
            .output()
            .unwrap_or_else(|e| panic!("run example {name}: {e}"));
        // Every example exits 0 when the flow ended as it says (stop_on_exception included:
        // it checks the run failed at s2).
        assert_eq!(
            out.status.code(),
            Some(0),
            "example {name}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// Runs `eventor-coord run FLOW ARGS` in `dir`; the exit code and everything it printed.
fn run_flow(dir: &Path, flow: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["run", flow.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = coord(dir, &all);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.code(), said)
}

fn ran(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ran.txt")).unwrap_or_default()
}

#[test]
fn every_example_flow_exits_with_the_status_it_documents() {
    let flows = example_flows();
    let names = stems(&flows, "yaml");
    assert!(names.len() >= 8, "flows found: {names:?}");
    for name in &names {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let flow = flows.join(format!("{name}.yaml"));
        match name.as_str() {
            // One loop per invocation, as from cron: exit 3 until every delay is over.
            "delays" => {
                let (code, said) = run_flow(dir, &flow, &["--max-loops", "1"]);
                assert_eq!(code, Some(3), "delays, first loop:\n{said}");
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let (code, said) =
                        run_flow(dir, &flow, &["--mode", "continue", "--max-loops", "1"]);
                    match code {
                        Some(0) => break,
                        Some(3) => {}
                        _ => panic!("delays, continue: {code:?}\n{said}"),
                    }
                    assert!(Instant::now() < deadline, "delays never finished:\n{said}");
                    std::thread::sleep(Duration::from_millis(300));
                }
                assert_eq!(ran(dir), "s1\ns2\ns3\n");
            }
            // A negative input fails the square root (exit 1); fixed, a recovery succeeds.
            "recovery" => {
                write(dir, "input.txt", "-4\n");
                let (code, said) = run_flow(dir, &flow, &[]);
                assert_eq!(code, Some(1), "recovery, negative input:\n{said}");
                write(dir, "input.txt", "16\n");
                let (code, said) = run_flow(dir, &flow, &["--mode", "recover"]);
                assert_eq!(code, Some(0), "recovery, fixed input:\n{said}");
                assert_eq!(ran(dir), "square\nsquare_root\ndivide\n");
            }
            // s2 fails with no failure trigger: exit 1.
            "stop_on_exception" => {
                let (code, said) = run_flow(dir, &flow, &[]);
                assert_eq!(code, Some(1), "{name}:\n{said}");
            }
            _ => {
                let (code, said) = run_flow(dir, &flow, &[]);
                assert_eq!(code, Some(0), "{name}:\n{said}");
            }
        }
    }
}
