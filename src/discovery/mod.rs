//! Service discovery: providers that find scrape targets and report them as target
//! groups on a bounded channel.
//!
//! A provider (`static_configs`, `file_sd_configs`, and later others) runs as a
//! task and sends its *whole* current list of target groups whenever it changes;
//! the receiver (a scrape pool) keeps the latest list from each provider. This is
//! the seam new mechanisms plug into: anything that can produce `TargetGroup`s.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{FileSdConfig, ScrapeConfig, StaticConfig};
use crate::labels::{Labels, LabelsBuilder};

/// Capacity of the channel from providers to a scrape pool. Each message is a full
/// state, so a slow receiver only ever needs the newest few.
pub const UPDATES_CHANNEL_CAPACITY: usize = 16;
/// Largest file_sd file read, in bytes.
pub const FILE_SD_BYTES_MAX: u64 = 64 << 20;
/// Most files one file_sd pattern may match.
pub const FILE_SD_FILES_MAX: usize = 10_000;
/// How often file_sd checks files for changes between full refreshes.
pub const FILE_SD_POLL: Duration = Duration::from_secs(5);

/// The label holding a target's address.
pub const ADDRESS_LABEL: &str = "__address__";

/// A set of targets sharing labels, from one source (a static config entry or one
/// entry of one file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    /// Identifies the group within its provider, e.g. `path/to/file.json:0`.
    pub source: String,
    /// One label set per target; each has at least `__address__`.
    pub targets: Vec<Labels>,
    /// Labels for every target of the group (a target's own labels win).
    pub labels: Labels,
}

/// A provider's full current set of groups. `provider` numbers the providers of
/// one scrape config, so the receiver can replace just that provider's groups.
#[derive(Debug, Clone)]
pub struct Update {
    pub provider: usize,
    pub groups: Vec<TargetGroup>,
}

/// Why discovery failed to read a source. Providers log these and keep their last
/// good state, as Prometheus does.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than {FILE_SD_BYTES_MAX} bytes")]
    TooLarge { path: String },
    #[error("parsing {path}: {message}")]
    Parse { path: String, message: String },
    #[error("pattern {pattern} matches more than {FILE_SD_FILES_MAX} files")]
    TooManyFiles { pattern: String },
}

/// Target groups of `static_configs` entries.
pub fn static_groups(job: &str, configs: &[StaticConfig]) -> Vec<TargetGroup> {
    configs
        .iter()
        .enumerate()
        .map(|(i, sc)| group_from_static(sc, format!("{job}/static/{i}"), None))
        .collect()
}

fn group_from_static(sc: &StaticConfig, source: String, file: Option<&str>) -> TargetGroup {
    let mut labels = LabelsBuilder::new();
    for (k, v) in &sc.labels {
        labels.set(k, v);
    }
    if let Some(f) = file {
        labels.set("__meta_filepath", f);
    }
    TargetGroup {
        source,
        targets: sc
            .targets
            .iter()
            .map(|t| Labels::from_pairs(&[(ADDRESS_LABEL, t.as_str())]))
            .collect(),
        labels: labels.build(),
    }
}

/// Starts every provider of `cfg`, sending updates on `tx` until `shutdown`.
/// Returns how many providers were started.
pub fn spawn_providers(
    cfg: &ScrapeConfig,
    tx: mpsc::Sender<Update>,
    shutdown: CancellationToken,
) -> usize {
    let mut n = 0;
    if !cfg.static_configs.is_empty() {
        let groups = static_groups(&cfg.job_name, &cfg.static_configs);
        let tx = tx.clone();
        let provider = n;
        tokio::spawn(async move {
            // Static targets never change: one update is the whole story.
            let _ = tx.send(Update { provider, groups }).await;
        });
        n += 1;
    }
    for fsd in &cfg.file_sd_configs {
        let provider = n;
        let fsd = fsd.clone();
        let tx = tx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { run_file_sd(provider, fsd, tx, shutdown).await });
        n += 1;
    }
    n
}

/// File-based discovery: re-reads the matching files every `refresh_interval`
/// and whenever a file's modification time or the set of matching files changes
/// (checked every [`FILE_SD_POLL`]). A file that cannot be read or parsed keeps
/// its last good groups.
pub async fn run_file_sd(
    provider: usize,
    cfg: FileSdConfig,
    tx: mpsc::Sender<Update>,
    shutdown: CancellationToken,
) {
    let refresh = Duration::from_millis(cfg.refresh_interval_ms().max(1) as u64);
    let poll = FILE_SD_POLL.min(refresh);
    let mut last_good: BTreeMap<PathBuf, Vec<TargetGroup>> = BTreeMap::new();
    let mut stamps: BTreeMap<PathBuf, Option<SystemTime>> = BTreeMap::new();
    let mut last_sent: Option<Vec<TargetGroup>> = None;
    let mut since_refresh = Duration::ZERO;
    loop {
        let files = match matching_files(&cfg.files) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "file_sd: listing files");
                Vec::new()
            }
        };
        let now_stamps: BTreeMap<PathBuf, Option<SystemTime>> = files
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    std::fs::metadata(p).and_then(|m| m.modified()).ok(),
                )
            })
            .collect();
        if now_stamps != stamps || since_refresh >= refresh || last_sent.is_none() {
            since_refresh = Duration::ZERO;
            last_good.retain(|p, _| now_stamps.contains_key(p));
            for p in &files {
                match read_file_groups(p) {
                    Ok(g) => {
                        last_good.insert(p.clone(), g);
                    }
                    Err(e) => tracing::error!(error = %e, "file_sd: keeping the last good targets"),
                }
            }
            stamps = now_stamps;
            let groups: Vec<TargetGroup> = last_good.values().flatten().cloned().collect();
            if last_sent.as_ref() != Some(&groups) {
                let update = Update {
                    provider,
                    groups: groups.clone(),
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tx.send(update) => if r.is_err() { return },
                }
                last_sent = Some(groups);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        since_refresh += poll;
    }
}

/// Parses one file_sd file: a JSON or YAML list of `{targets, labels}`.
pub fn read_file_groups(path: &Path) -> Result<Vec<TargetGroup>, DiscoveryError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| DiscoveryError::Read {
        path: shown.clone(),
        source,
    })?;
    if meta.len() > FILE_SD_BYTES_MAX {
        return Err(DiscoveryError::TooLarge { path: shown });
    }
    let text = std::fs::read_to_string(path).map_err(|source| DiscoveryError::Read {
        path: shown.clone(),
        source,
    })?;
    let parse_err = |message: String| DiscoveryError::Parse {
        path: shown.clone(),
        message,
    };
    let configs: Vec<FileGroup> = if shown.ends_with(".json") {
        serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_str(&text).map_err(|e| parse_err(e.to_string()))?
    };
    let mut groups = Vec::with_capacity(configs.len());
    for (i, g) in configs.into_iter().enumerate() {
        let sc = StaticConfig {
            targets: g.targets,
            labels: g.labels,
        };
        for t in &sc.targets {
            crate::config::check_target_address(t).map_err(parse_err)?;
        }
        for name in sc.labels.keys() {
            if !crate::relabel::is_valid_label_name(name) {
                return Err(parse_err(format!("{name:?} is not a valid label name")));
            }
        }
        groups.push(group_from_static(&sc, format!("{shown}:{i}"), Some(&shown)));
    }
    Ok(groups)
}

/// A group as written in a file_sd file (null lists and maps read as empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileGroup {
    #[serde(deserialize_with = "null_default")]
    targets: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    labels: BTreeMap<String, String>,
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Files matching the patterns, sorted. Wildcards (`*`, `?`, `[...]`) may appear
/// only in the last path element, which config validation has checked.
pub fn matching_files(patterns: &[String]) -> Result<Vec<PathBuf>, DiscoveryError> {
    let mut out = Vec::new();
    for pattern in patterns {
        let p = Path::new(pattern);
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains(['*', '?', '[']) {
            if p.is_file() {
                out.push(p.to_path_buf());
            }
            continue;
        }
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let fname = e.file_name().to_string_lossy().into_owned();
            if glob_match(name.as_bytes(), fname.as_bytes()) && e.path().is_file() {
                n += 1;
                if n > FILE_SD_FILES_MAX {
                    return Err(DiscoveryError::TooManyFiles {
                        pattern: pattern.clone(),
                    });
                }
                out.push(e.path());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Shell-style matching of one path element (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`),
/// as Go's `filepath.Match` does.
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(&pat[p..], s[i]) {
                        if matched {
                            p += next;
                            i += 1;
                            continue;
                        }
                    }
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `pat` (`[...]`); returns whether
/// it matched and the class's length, or None for an unterminated class.
fn class_match(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut j = 1;
    let negate = j < pat.len() && (pat[j] == b'!' || pat[j] == b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pat.len() && (pat[j] != b']' || first) {
        first = false;
        let lo = pat[j];
        if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            if lo <= c && c <= pat[j + 2] {
                matched = true;
            }
            j += 3;
        } else {
            if lo == c {
                matched = true;
            }
            j += 1;
        }
    }
    if j >= pat.len() {
        return None;
    }
    Some((matched != negate, j + 1))
}
