//! `hearth test rules` next to the real `promtool test rules` on the same rule
//! unit-test files (tests/data/rules_unittest/: `pass_*` files pass, `fail_*` files
//! fail), comparing exit status, standard output, and where the messages are ours
//! to match, standard error.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Files whose failure messages come from parsers with other wording (PromQL parse
/// errors without their position; the YAML library's unknown-field message), so only
/// the outcome and standard output are compared.
const MESSAGES_DIFFER: &[&str] = &["fail_expr.yml", "fail_unknown_field.yml"];

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rules_unittest")
}

/// The unit-test files, sorted: every `pass_*.yml` and `fail_*.yml`.
fn test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(data_dir())
        .expect("read tests/data/rules_unittest")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| (n.starts_with("pass_") || n.starts_with("fail_")) && n.ends_with(".yml"))
        .collect();
    files.sort();
    files
}

/// Runs `cmd test rules FILE…` in the data directory, so paths print the same.
fn run(mut cmd: Command, files: &[String]) -> Output {
    cmd.current_dir(data_dir())
        .args(["test", "rules"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (.ci/install-deps installs promtool)"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn test_rules_agrees_with_promtool_on_each_file() {
    let files = test_files();
    assert!(
        files.iter().filter(|f| f.starts_with("pass_")).count() >= 3
            && files.iter().filter(|f| f.starts_with("fail_")).count() >= 5,
        "{files:?}"
    );
    for f in &files {
        let one = std::slice::from_ref(f);
        let ours = run(Command::new(hearth_bin()), one);
        let theirs = run(promtool(), one);
        let should_pass = f.starts_with("pass_");
        assert_eq!(
            theirs.status.success(),
            should_pass,
            "promtool on {f}:\n{}{}",
            text(&theirs.stdout),
            text(&theirs.stderr)
        );
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "{f}: hearth\n{}{}\npromtool\n{}{}",
            text(&ours.stdout),
            text(&ours.stderr),
            text(&theirs.stdout),
            text(&theirs.stderr)
        );
        assert_eq!(text(&ours.stdout), text(&theirs.stdout), "stdout of {f}");
        if !MESSAGES_DIFFER.contains(&f.as_str()) {
            assert_eq!(text(&ours.stderr), text(&theirs.stderr), "stderr of {f}");
        } else {
            assert!(text(&ours.stderr).starts_with("  FAILED:\n"), "{f}");
        }
    }
}

#[test]
fn several_files_in_one_run_fail_if_any_fails() {
    let files: Vec<String> = vec![
        "pass_alerts.yml".into(),
        "fail_for_too_early.yml".into(),
        "pass_rates.yml".into(),
    ];
    let ours = run(Command::new(hearth_bin()), &files);
    let theirs = run(promtool(), &files);
    assert_eq!(ours.status.code(), Some(1));
    assert_eq!(ours.status.code(), theirs.status.code());
    assert_eq!(text(&ours.stdout), text(&theirs.stdout));
    assert_eq!(text(&ours.stderr), text(&theirs.stderr));
    let passing = run(Command::new(hearth_bin()), &files[..1]);
    assert_eq!(passing.status.code(), Some(0));
    assert_eq!(
        text(&passing.stdout),
        "Unit Testing:  pass_alerts.yml\n  SUCCESS\n\n"
    );
}

#[test]
fn a_missing_test_file_fails() {
    let files = vec!["no_such_file.yml".to_string()];
    let ours = run(Command::new(hearth_bin()), &files);
    let theirs = run(promtool(), &files);
    assert_eq!(ours.status.code(), Some(1));
    assert_eq!(ours.status.code(), theirs.status.code());
    assert_eq!(text(&ours.stdout), text(&theirs.stdout));
}
