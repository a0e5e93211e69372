//! `hearth check config` and `hearth check rules`: validate configuration and rule
//! files with promtool's output.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Checks each file, printing promtool's lines (`SUCCESS` to `out`, `FAILED` to
/// `err`); true when all are valid. Rule files named by a config are checked too.
pub fn check_config(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> bool {
    let mut all_ok = true;
    for f in files {
        let shown = f.display().to_string();
        let _ = writeln!(out, "Checking {shown}");
        match Config::load_file(f) {
            Ok(cfg) => match rule_files(&cfg) {
                Ok(rules) => {
                    if !rules.is_empty() {
                        let _ = writeln!(out, "  SUCCESS: {} rule files found", rules.len());
                    }
                    let _ = writeln!(
                        out,
                        " SUCCESS: {shown} is valid prometheus config file syntax"
                    );
                    let _ = writeln!(out);
                    if !check_rules(&rules, out, err) {
                        all_ok = false;
                    }
                }
                Err(e) => {
                    let _ = writeln!(err, "  FAILED: {e}");
                    let _ = writeln!(out);
                    all_ok = false;
                }
            },
            Err(e) => {
                let _ = writeln!(err, "  FAILED: {e}");
                let _ = writeln!(out);
                all_ok = false;
            }
        }
    }
    all_ok
}

/// The files the config's `rule_files` patterns match.
fn rule_files(cfg: &Config) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for pattern in &cfg.rule_files {
        let name = Path::new(pattern)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains(['*', '?', '[']) {
            let matched = crate::discovery::matching_files(std::slice::from_ref(pattern))
                .map_err(|e| e.to_string())?;
            out.extend(matched);
        } else if Path::new(pattern).is_file() {
            out.push(PathBuf::from(pattern));
        } else {
            return Err(format!(
                "checking rule file {pattern:?}: file does not exist"
            ));
        }
    }
    Ok(out)
}

/// Checks rule files like `promtool check rules`; true when all are valid.
pub fn check_rules(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> bool {
    let mut all_ok = true;
    for f in files {
        let _ = writeln!(out, "Checking {}", f.display());
        match crate::rules::RuleGroups::load_file(f) {
            Ok(groups) => {
                let _ = writeln!(out, "  SUCCESS: {} rules found", groups.num_rules());
            }
            Err(e) => {
                let _ = writeln!(err, "  FAILED:");
                let _ = writeln!(err, "{e}");
                all_ok = false;
            }
        }
        let _ = writeln!(out);
    }
    all_ok
}
