//! Recovery of `wal::Log` from torn tails and corruption, through the public API.

use std::fs;
use std::path::{Path, PathBuf};

use hearth::wal::{FsyncPolicy, Log, LogOptions, WalError, SEGMENT_HEADER_LEN};
use proptest::prelude::*;

const FRAME_HEADER_LEN: usize = 8;

fn opts(segment_size_bytes: u64, repair: bool) -> LogOptions {
    LogOptions {
        segment_size_bytes,
        fsync: FsyncPolicy::Never,
        repair,
        preallocate_bytes: 0,
    }
}

fn record(i: u64) -> Vec<u8> {
    format!("rec{i:04}").into_bytes() // 7 bytes: a frame is 15 bytes
}

/// Writes `n` records and returns the segment paths, oldest first.
fn write_log(dir: &Path, n: u64, segment_size_bytes: u64) -> Vec<PathBuf> {
    let mut log = Log::open(dir, opts(segment_size_bytes, false)).unwrap();
    for i in 0..n {
        log.append(&record(i)).unwrap();
    }
    log.close().unwrap();
    segment_files(dir)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn read_all(log: &mut Log) -> Vec<(u64, Vec<u8>)> {
    let first = log.first_index();
    log.reader(first)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn assert_prefix(got: &[(u64, Vec<u8>)], n: usize) {
    assert_eq!(got.len(), n);
    for (k, (i, r)) in got.iter().enumerate() {
        assert_eq!(*i, k as u64);
        assert_eq!(*r, record(*i));
    }
}

/// Offset of record `k` in a segment of `record()`s starting at record 0.
fn offset_of(k: usize) -> u64 {
    (SEGMENT_HEADER_LEN + k * (FRAME_HEADER_LEN + 7)) as u64
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let segs = write_log(dir.path(), 10, 1 << 20);
    let last = segs.last().unwrap();
    let len = fs::metadata(last).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let mut log = Log::open(dir.path(), opts(1 << 20, false)).unwrap();
    assert_eq!(log.next_index(), 9);
    assert_eq!(fs::metadata(last).unwrap().len(), offset_of(9));
    assert_eq!(log.append(&record(9)).unwrap(), 9);
    log.sync().unwrap();
    assert_prefix(&read_all(&mut log), 10);
}

#[test]
fn trailing_zeros_and_partial_header_are_truncated() {
    for tail in [vec![0u8; 4096], vec![0u8; 3], vec![5u8, 0, 0]] {
        let dir = tempfile::tempdir().unwrap();
        let segs = write_log(dir.path(), 10, 1 << 20);
        let last = segs.last().unwrap();
        let mut data = fs::read(last).unwrap();
        data.extend_from_slice(&tail);
        fs::write(last, data).unwrap();

        let mut log = Log::open(dir.path(), opts(1 << 20, false)).unwrap();
        assert_eq!(fs::metadata(last).unwrap().len(), offset_of(10));
        assert_eq!(log.append(&record(10)).unwrap(), 10);
        assert_prefix(&read_all(&mut log), 11);
    }
}

#[test]
fn flipped_byte_in_the_middle_names_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let segs = write_log(dir.path(), 20, 1 << 20);
    let seg = &segs[0];
    let mut data = fs::read(seg).unwrap();
    data[offset_of(5) as usize + FRAME_HEADER_LEN + 2] ^= 0x10;
    fs::write(seg, &data).unwrap();

    let err = Log::open(dir.path(), opts(1 << 20, false)).unwrap_err();
    match &err {
        WalError::Corruption { path, offset, .. } => {
            assert_eq!(path, seg);
            assert_eq!(*offset, offset_of(5));
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("00000000") && msg.contains(&offset_of(5).to_string()),
        "{msg}"
    );
    // Nothing was changed by the failed open.
    assert_eq!(fs::read(seg).unwrap(), data);
}

#[test]
fn repair_truncates_at_the_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let segs = write_log(dir.path(), 20, 1 << 20);
    let mut data = fs::read(&segs[0]).unwrap();
    data[offset_of(5) as usize + 1] ^= 0xff; // the length field
    fs::write(&segs[0], &data).unwrap();

    let mut log = Log::open(dir.path(), opts(1 << 20, true)).unwrap();
    assert_eq!(log.next_index(), 5);
    assert_prefix(&read_all(&mut log), 5);
    assert_eq!(log.append(b"again").unwrap(), 5);
}

#[test]
fn corruption_in_a_non_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    // 100-byte segments hold 5 records each.
    let segs = write_log(dir.path(), 30, 100);
    assert_eq!(segs.len(), 6);
    // Torn-looking damage (cut at the end) is still corruption when not last.
    let len = fs::metadata(&segs[2]).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segs[2])
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    match Log::open(dir.path(), opts(100, false)) {
        Err(WalError::Corruption { path, offset, .. }) => {
            assert_eq!(path, segs[2]);
            assert_eq!(offset, offset_of(4));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Repair keeps records 0..14 and drops every later segment.
    let mut log = Log::open(dir.path(), opts(100, true)).unwrap();
    assert_prefix(&read_all(&mut log), 14);
    assert_eq!(segment_files(dir.path()), segs[..3].to_vec());
}

#[test]
fn damaged_header_and_missing_segment() {
    let dir = tempfile::tempdir().unwrap();
    let segs = write_log(dir.path(), 30, 100);
    let mut data = fs::read(&segs[3]).unwrap();
    data[9] ^= 1; // first index
    fs::write(&segs[3], &data).unwrap();
    assert!(matches!(
        Log::open(dir.path(), opts(100, false)),
        Err(WalError::Corruption { offset: 0, .. })
    ));
    fs::remove_file(&segs[3]).unwrap();
    let err = Log::open(dir.path(), opts(100, false)).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    let mut log = Log::open(dir.path(), opts(100, true)).unwrap();
    assert_prefix(&read_all(&mut log), 15);
}

#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    AppendBytes(Vec<u8>),
    Zero { at: usize, len: usize },
    Delete,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Damage::AppendBytes),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Damage::Zero { at, len }),
        Just(Damage::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever happens to one segment, opening never panics, and every record the
    /// log returns is the one written at that index.
    #[test]
    fn arbitrary_damage_never_returns_unwritten_records(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..60),
        segment_size_bytes in 64u64..400,
        which in any::<usize>(),
        damages in proptest::collection::vec(damage(), 1..3),
        repair in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = Log::open(dir.path(), opts(segment_size_bytes, false)).unwrap();
            for r in &records {
                log.append(r).unwrap();
            }
            log.close().unwrap();
        }
        let segs = segment_files(dir.path());
        let seg = &segs[which % segs.len()];
        let mut data = fs::read(seg).unwrap();
        let mut delete = false;
        for d in damages {
            match d {
                Damage::Flip { at, mask } if !data.is_empty() => {
                    let n = data.len();
                    data[at % n] ^= mask;
                }
                Damage::Truncate { at } => {
                    let n = data.len() + 1;
                    data.truncate(at % n);
                }
                Damage::AppendBytes(b) => data.extend_from_slice(&b),
                Damage::Zero { at, len } if !data.is_empty() => {
                    let start = at % data.len();
                    let end = (start + len).min(data.len());
                    data[start..end].fill(0);
                }
                Damage::Delete => delete = true,
                _ => {}
            }
        }
        if delete {
            fs::remove_file(seg).unwrap();
        } else {
            fs::write(seg, &data).unwrap();
        }

        if let Ok(mut log) = Log::open(dir.path(), opts(segment_size_bytes, repair)) {
            let first = log.first_index();
            let mut expect = first;
            for item in log.reader(first).unwrap() {
                let (i, r) = item.unwrap();
                prop_assert_eq!(i, expect);
                prop_assert!((i as usize) < records.len());
                prop_assert_eq!(&r, &records[i as usize]);
                expect += 1;
            }
            prop_assert_eq!(expect, log.next_index());
            // The recovered log takes new records.
            let next = log.next_index();
            prop_assert_eq!(log.append(b"new").unwrap(), next);
        }
    }
}
