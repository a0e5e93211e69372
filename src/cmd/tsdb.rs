//! `hearth tsdb …`: promtool's TSDB tools (list, dump, analyze, backfill from
//! OpenMetrics), with the same output formats.

use crate::gofloat;
use crate::labels::{Labels, MatchType, Matcher};
use crate::storage::{Sample, SelectHints, Series, SeriesSet};
use crate::textparse::{Entry, OpenMetricsParser};
use crate::tsdb::block::{self, Block, BlockLineage};
use crate::tsdb::db::DEFAULT_BLOCK_DURATION_MS;
use crate::tsdb::head;
use crate::tsdb::meta::BlockMeta;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A tool failed; the message is for the user.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error(transparent)]
    Tsdb(#[from] crate::tsdb::TsdbError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Usage(String),
}

/// Lists the blocks in `dir`, like `promtool tsdb list`.
pub fn list(dir: &Path, human_readable: bool, out: &mut dyn Write) -> Result<(), ToolError> {
    let metas = read_block_metas(dir)?;
    writeln!(
        out,
        "{:<26}  {:<13}  {:<13}  {:<10}  {:<11}  {:<10}  {:<10}  SIZE",
        "BLOCK ULID", "MIN TIME", "MAX TIME", "DURATION", "NUM SAMPLES", "NUM CHUNKS", "NUM SERIES"
    )?;
    for (meta, size) in metas {
        let (mint, maxt) = if human_readable {
            (fmt_time(meta.min_time), fmt_time(meta.max_time))
        } else {
            (meta.min_time.to_string(), meta.max_time.to_string())
        };
        writeln!(
            out,
            "{:<26}  {:<13}  {:<13}  {:<10}  {:<11}  {:<10}  {:<10}  {}",
            meta.ulid.to_string(),
            mint,
            maxt,
            fmt_duration_ms(meta.max_time - meta.min_time),
            meta.stats.num_samples,
            meta.stats.num_chunks,
            meta.stats.num_series,
            size
        )?;
    }
    Ok(())
}

fn read_block_metas(dir: &Path) -> Result<Vec<(BlockMeta, u64)>, ToolError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.join("meta.json").is_file() {
            continue;
        }
        let meta = BlockMeta::read(&path).map_err(|e| ToolError::Input {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        out.push((meta, dir_size(&path)?));
    }
    out.sort_by_key(|(m, _)| m.min_time);
    Ok(out)
}

fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let md = entry.metadata()?;
        total += if md.is_dir() {
            dir_size(&entry.path())?
        } else {
            md.len()
        };
    }
    Ok(total)
}

fn fmt_time(ms: i64) -> String {
    // RFC 3339 in UTC without pulling in a date crate: days from the civil epoch.
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Go's `time.Duration` string for whole milliseconds, e.g. `2h0m0s`.
fn fmt_duration_ms(ms: i64) -> String {
    let secs = ms / 1000;
    let frac = ms % 1000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let s = if frac != 0 {
        format!("{s}.{frac:03}").trim_end_matches('0').to_string()
    } else {
        s.to_string()
    };
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Parses a `--match` selector such as `{job="a"}` or `up{job=~"a.*"}` into matchers.
pub fn parse_selector(sel: &str) -> Result<Vec<Matcher>, ToolError> {
    crate::labels::parse_selector(sel).map_err(|e| ToolError::Usage(e.to_string()))
}

/// Prints every sample in `dir` (blocks and head), like `promtool tsdb dump`:
/// `{labels} value timestamp_ms` per line, series in label order. Changes nothing in
/// `dir`: the head is read from the WAL as recovery would read it.
pub fn dump(
    dir: &Path,
    min_time: i64,
    max_time: i64,
    selectors: &[String],
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    let matcher_sets: Vec<Vec<Matcher>> = if selectors.is_empty() {
        vec![vec![Matcher::new(MatchType::Regexp, "__name__", ".+")
            .map_err(|e| ToolError::Usage(e.to_string()))?]]
    } else {
        selectors
            .iter()
            .map(|s| parse_selector(s))
            .collect::<Result<_, _>>()?
    };
    let hints = SelectHints {
        start_ms: min_time,
        end_ms: max_time,
        series_only: false,
        newest_only: false,
    };
    let mut sets: Vec<SeriesSet> = Vec::new();
    // The head first: its sample wins when a timestamp is also in a block.
    let wal_series = Arc::new(head::read_wal_series(dir)?);
    for ms in &matcher_sets {
        let ms = ms.clone();
        let src = wal_series.clone();
        sets.push(Box::new((0..src.len()).filter_map(move |i| {
            let s = &src[i];
            if !ms.iter().all(|m| m.matches(s.labels.get(&m.name))) {
                return None;
            }
            let samples: Vec<Sample> = s
                .samples
                .iter()
                .filter(|x| x.t >= min_time && x.t <= max_time)
                .copied()
                .collect();
            (!samples.is_empty()).then(|| {
                Ok(Series {
                    labels: s.labels.clone(),
                    samples,
                    start_times: Vec::new(),
                })
            })
        })));
    }
    for b in block_dirs(dir)? {
        let block = Arc::new(Block::open(&b)?);
        for ms in &matcher_sets {
            sets.push(block.select(min_time, max_time, &hints, ms)?);
        }
    }
    let mut w = std::io::BufWriter::new(out);
    for s in crate::storage::merge_series_sets(sets) {
        let s: Series = s?;
        let l = s.labels.to_string();
        for x in &s.samples {
            writeln!(w, "{l} {} {}", gofloat::g(x.v), x.t)?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Prints block statistics like `promtool tsdb analyze`: the block's summary, label
/// name cardinality, and the metrics with the most series.
pub fn analyze(
    dir: &Path,
    block_id: Option<&str>,
    limit: usize,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    let metas = read_block_metas(dir)?;
    let meta = match block_id {
        Some(id) => metas
            .into_iter()
            .find(|(m, _)| m.ulid.to_string() == id)
            .map(|(m, _)| m)
            .ok_or_else(|| {
                ToolError::Usage(format!("block {id} not found in {}", dir.display()))
            })?,
        None => metas
            .into_iter()
            .max_by_key(|(m, _)| m.max_time)
            .map(|(m, _)| m)
            .ok_or_else(|| ToolError::Usage(format!("no blocks found in {}", dir.display())))?,
    };
    let block = Arc::new(Block::open(&dir.join(meta.ulid.to_string()))?);
    writeln!(out, "Block ID: {}", meta.ulid)?;
    writeln!(
        out,
        "Duration: {}",
        fmt_duration_ms(meta.max_time - meta.min_time)
    )?;
    writeln!(out, "Series: {}", meta.stats.num_series)?;
    let hints = SelectHints {
        start_ms: i64::MIN,
        end_ms: i64::MAX,
        series_only: true,
        newest_only: false,
    };
    let all = Matcher::new(MatchType::Regexp, "__name__", ".*")
        .map_err(|e| ToolError::Usage(e.to_string()))?;
    let mut label_values: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut per_metric: HashMap<String, u64> = HashMap::new();
    let mut entries = 0u64;
    for s in block.select(i64::MIN, i64::MAX, &hints, &[all])? {
        let s = s?;
        for l in s.labels.iter() {
            entries += 1;
            label_values
                .entry(l.name.to_string())
                .or_default()
                .insert(l.value.to_string());
        }
        *per_metric
            .entry(s.labels.metric_name().to_string())
            .or_default() += 1;
    }
    writeln!(out, "Label names: {}", label_values.len())?;
    let pairs: usize = label_values.values().map(|v| v.len()).sum();
    writeln!(out, "Postings (unique label pairs): {pairs}")?;
    writeln!(out, "Postings entries (total label pairs): {entries}")?;
    let mut card: Vec<(String, u64)> = label_values
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    card.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    writeln!(out, "\nHighest cardinality labels:")?;
    for (k, n) in card.iter().take(limit) {
        writeln!(out, "{n} {k}")?;
    }
    let mut metrics: Vec<(String, u64)> = per_metric.into_iter().collect();
    metrics.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    writeln!(out, "\nHighest cardinality metric names:")?;
    for (k, n) in metrics.iter().take(limit) {
        writeln!(out, "{n} {k}")?;
    }
    Ok(())
}

/// Turns an OpenMetrics text file with timestamps into blocks in `output_dir`, one
/// per `block_duration_ms`-aligned window, like `promtool tsdb create-blocks-from
/// openmetrics`. Returns the blocks written.
pub fn create_blocks_from_openmetrics(
    input: &Path,
    output_dir: &Path,
    block_duration_ms: i64,
    progress: bool,
) -> Result<Vec<BlockMeta>, ToolError> {
    let input_err = |message: String| ToolError::Input {
        path: input.display().to_string(),
        message,
    };
    let body = std::fs::read(input).map_err(|e| input_err(e.to_string()))?;
    std::fs::create_dir_all(output_dir)?;
    let mut series: HashMap<Labels, Vec<Sample>> = HashMap::new();
    let mut parser = OpenMetricsParser::new(&body);
    let total = body.len().max(1);
    let mut last_pct = 0;
    // 1-based line of the entry about to be parsed, counted as the parser moves on.
    let mut line = 1usize;
    let mut counted_to = 0usize;
    loop {
        let start = parser.offset();
        line += body[counted_to..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        counted_to = start;
        let Some(entry) = parser.next() else { break };
        let entry = entry.map_err(|e| input_err(e.to_string()))?;
        let Entry::Sample {
            labels,
            value,
            timestamp_ms,
            ..
        } = entry
        else {
            continue;
        };
        let t = timestamp_ms.ok_or_else(|| {
            input_err(format!(
                "line {line}: sample for {labels} has no timestamp; backfilling needs one on every sample"
            ))
        })?;
        let list = series.entry(labels).or_default();
        if let Some(last) = list.last() {
            if t < last.t {
                return Err(input_err(format!("line {line}: out of order sample")));
            }
            if t == last.t {
                if last.v.to_bits() != value.to_bits() {
                    return Err(input_err(format!(
                        "line {line}: duplicate sample for timestamp"
                    )));
                }
                continue;
            }
        }
        list.push(Sample { t, v: value });
        if progress {
            let pct = parser.offset() * 100 / total;
            if pct != last_pct {
                last_pct = pct;
                eprint!("\rreading input: {pct:3}%");
            }
        }
    }
    if progress {
        eprintln!("\rreading input: 100%");
    }
    let (Some(mint), Some(maxt)) = (
        series.values().filter_map(|v| v.first()).map(|s| s.t).min(),
        series.values().filter_map(|v| v.last()).map(|s| s.t).max(),
    ) else {
        return Ok(Vec::new());
    };
    let mut sorted: Vec<(Labels, Vec<Sample>)> = series.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let sorted = Arc::new(sorted);
    let mut metas = Vec::new();
    let mut window = mint.div_euclid(block_duration_ms) * block_duration_ms;
    while window <= maxt {
        let end = window + block_duration_ms;
        let src = sorted.clone();
        let iter = (0..src.len()).filter_map(move |i| {
            let (labels, samples) = &src[i];
            let lo = samples.partition_point(|s| s.t < window);
            let hi = samples.partition_point(|s| s.t < end);
            (lo < hi).then(|| {
                Ok(Series {
                    labels: labels.clone(),
                    samples: samples[lo..hi].to_vec(),
                    start_times: Vec::new(),
                })
            })
        });
        if let Some(meta) = block::write_block(
            output_dir,
            window,
            end,
            block_duration_ms,
            BlockLineage {
                level: 1,
                ..Default::default()
            },
            Box::new(iter),
        )? {
            if progress {
                eprintln!("wrote block {} [{window}, {end})", meta.ulid);
            }
            metas.push(meta);
        }
        window = end;
    }
    Ok(metas)
}

/// The default block duration for backfill: Prometheus's two hours.
pub const BACKFILL_BLOCK_DURATION_MS: i64 = DEFAULT_BLOCK_DURATION_MS;

/// The data directory's blocks, for tools and tests.
pub fn block_dirs(dir: &Path) -> Result<Vec<PathBuf>, ToolError> {
    Ok(read_block_metas(dir)?
        .into_iter()
        .map(|(m, _)| dir.join(m.ulid.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        let ms = parse_selector(r#"up{job="a", instance=~"x.*"}"#).unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0].to_string(), r#"__name__="up""#);
        assert_eq!(ms[2].to_string(), r#"instance=~"x.*""#);
        assert!(parse_selector(r#"{job="a""#).is_err());
        assert!(parse_selector("").is_err());
    }

    #[test]
    fn times_and_durations_format_like_go() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(fmt_duration_ms(7_200_000), "2h0m0s");
        assert_eq!(fmt_duration_ms(90_500), "1m30.5s");
    }
}
