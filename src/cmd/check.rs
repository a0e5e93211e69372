//! `hearth check config` and `hearth check rules`: validate configuration and rule
//! files with promtool's output.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{Authorization, Config, TlsConfig};

/// Checks each file, printing promtool's lines (`SUCCESS` to `out`, `FAILED` to
/// `err`); true when all are valid. Rule files named by a config are checked too.
pub fn check_config(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> bool {
    let mut all_ok = true;
    for f in files {
        let shown = f.display().to_string();
        let _ = writeln!(out, "Checking {shown}");
        match Config::load_file(f)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                check_client_files(&cfg)?;
                Ok(cfg)
            }) {
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

/// What promtool checks beyond parsing for each HTTP client of the config: a
/// client certificate needs its key and the other way round, and the files named
/// for credentials, certificate and key exist. hearth also checks the CA file,
/// which promtool 2.42 leaves to the first scrape.
fn check_client_files(cfg: &Config) -> Result<(), String> {
    for sc in &cfg.scrape_configs {
        check_authorization(sc.authorization.as_ref(), sc.bearer_token_file.as_deref())?;
        if let Some(t) = &sc.tls_config {
            check_tls_files(t)?;
        }
    }
    for am in &cfg.alerting.alertmanagers {
        check_authorization(am.authorization.as_ref(), am.bearer_token_file.as_deref())?;
        if let Some(t) = &am.tls_config {
            check_tls_files(t)?;
        }
    }
    Ok(())
}

fn check_authorization(a: Option<&Authorization>, bearer_file: Option<&str>) -> Result<(), String> {
    let file = a
        .and_then(|a| a.credentials_file.as_deref())
        .or(bearer_file);
    if let Some(f) = file {
        stat(f).map_err(|e| {
            format!("error checking authorization credentials or bearer token file {f:?}: {e}")
        })?;
    }
    Ok(())
}

/// promtool's `checkTLSConfig`, with the CA file added.
pub fn check_tls_files(t: &TlsConfig) -> Result<(), String> {
    let cert = t.cert_file.as_deref().filter(|f| !f.is_empty());
    let key = t.key_file.as_deref().filter(|f| !f.is_empty());
    match (cert, key) {
        (Some(c), None) if t.key.is_none() => {
            return Err(format!(
                "client cert file {c:?} specified without client key file"
            ))
        }
        (None, Some(k)) if t.cert.is_none() => {
            return Err(format!(
                "client key file {k:?} specified without client cert file"
            ))
        }
        _ => {}
    }
    if let Some(c) = cert {
        stat(c).map_err(|e| format!("error checking client cert file {c:?}: {e}"))?;
    }
    if let Some(k) = key {
        stat(k).map_err(|e| format!("error checking client key file {k:?}: {e}"))?;
    }
    if let Some(ca) = t.ca_file.as_deref().filter(|f| !f.is_empty()) {
        stat(ca).map_err(|e| format!("error checking CA file {ca:?}: {e}"))?;
    }
    Ok(())
}

/// `os.Stat`, with Go's wording of the error (`stat PATH: no such file or
/// directory`).
fn stat(path: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => e.to_string(),
            };
            Err(format!("stat {path}: {why}"))
        }
    }
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
