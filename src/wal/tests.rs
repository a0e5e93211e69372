//! Unit tests for `wal::Log`: appends, reads, truncation and recovery.

use super::*;
use proptest::prelude::*;

fn opts(segment_size_bytes: u64) -> LogOptions {
    LogOptions {
        segment_size_bytes,
        fsync: FsyncPolicy::Never,
        repair: false,
        preallocate_bytes: 0,
    }
}

fn record(i: u64) -> Vec<u8> {
    format!("record-{i}-")
        .repeat((i % 7) as usize + 1)
        .into_bytes()
}

fn read_all(log: &mut Log, from: u64) -> Vec<(u64, Vec<u8>)> {
    log.reader(from)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn round_trip_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), opts(256)).unwrap();
    for i in 0..500 {
        assert_eq!(log.append(&record(i)).unwrap(), i);
    }
    log.sync().unwrap();
    assert!(log.segments().len() > 20, "{}", log.segments().len());
    for s in log.segments() {
        assert!(s.size_bytes <= 256 || s.record_count == 1, "{s:?}");
    }
    let got = read_all(&mut log, 0);
    assert_eq!(got.len(), 500);
    for (i, (idx, r)) in got.iter().enumerate() {
        assert_eq!((*idx, r), (i as u64, &record(i as u64)));
    }
    // From every index, including ones between stored offsets.
    for from in [1, 31, 32, 33, 250, 499, 500] {
        let got = read_all(&mut log, from);
        assert_eq!(got.len() as u64, 500 - from);
        assert!(got.iter().all(|(i, r)| *r == record(*i)));
    }
    assert!(matches!(
        log.reader(501),
        Err(WalError::IndexOutOfRange { index: 501, .. })
    ));
}

#[test]
fn reader_sees_buffered_records_and_large_records_get_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), opts(128)).unwrap();
    log.append(b"small").unwrap();
    let big = vec![0xab; 1000];
    assert_eq!(log.append(&big).unwrap(), 1);
    log.append(b"after").unwrap();
    let segs = log.segments();
    assert_eq!(segs.len(), 3);
    assert_eq!(segs[1].record_count, 1);
    let got: Vec<Vec<u8>> = read_all(&mut log, 0).into_iter().map(|r| r.1).collect();
    assert_eq!(got, vec![b"small".to_vec(), big, b"after".to_vec()]);
}

#[test]
fn reopen_continues_indexes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = Log::open(dir.path(), opts(200)).unwrap();
        log.append_batch(&[b"a", b"b", b"c"]).unwrap();
        log.close().unwrap();
    }
    let mut log = Log::open(dir.path(), opts(200)).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (0, 3));
    assert_eq!(log.append_batch(&[b"d", b"e"]).unwrap(), 3);
    drop(log);
    let mut log = Log::open(dir.path(), opts(200)).unwrap();
    let got: Vec<Vec<u8>> = read_all(&mut log, 0).into_iter().map(|r| r.1).collect();
    assert_eq!(
        got,
        vec![
            b"a".to_vec(),
            b"b".to_vec(),
            b"c".to_vec(),
            b"d".to_vec(),
            b"e".to_vec()
        ]
    );
}

#[test]
fn truncate_after_drops_tail_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), opts(256)).unwrap();
    for i in 0..200 {
        log.append(&record(i)).unwrap();
    }
    log.truncate_after(1000).unwrap(); // past the end: nothing
    assert_eq!(log.next_index(), 200);
    log.truncate_after(70).unwrap();
    assert_eq!(log.next_index(), 71);
    assert_eq!(log.append(b"new-71").unwrap(), 71);
    let got = read_all(&mut log, 60);
    assert_eq!(got.len(), 12);
    assert_eq!(got.last().unwrap(), &(71, b"new-71".to_vec()));
    drop(log);
    // The truncation holds across a reopen.
    let mut log = Log::open(dir.path(), opts(256)).unwrap();
    assert_eq!(log.next_index(), 72);
    let got = read_all(&mut log, 0);
    assert!(got[..71].iter().all(|(i, r)| *r == record(*i)));
    // Truncating everything.
    log.truncate_after(u64::MAX).unwrap();
    assert!(log.truncate_after(0).is_ok());
    assert_eq!(log.next_index(), 1);
}

#[test]
fn remove_segments_before_keeps_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), opts(256)).unwrap();
    for i in 0..300 {
        log.append(&record(i)).unwrap();
    }
    let segs = log.segments();
    let cut = segs[5].first_index + 1;
    assert_eq!(log.remove_segments_before(cut).unwrap(), 5);
    assert_eq!(log.first_index(), segs[5].first_index);
    assert!(log.reader(segs[4].first_index).is_err());
    drop(log);
    let mut log = Log::open(dir.path(), opts(256)).unwrap();
    assert_eq!(log.first_index(), segs[5].first_index);
    assert_eq!(log.next_index(), 300);
    let first = log.first_index();
    let got = read_all(&mut log, first);
    assert!(got.iter().all(|(i, r)| *r == record(*i)));
    // Never removes the active segment.
    log.remove_segments_before(u64::MAX).unwrap();
    assert_eq!(log.segments().len(), 1);
    assert_eq!(log.next_index(), 300);
}

#[test]
fn reset_restarts_at_index_and_survives_interruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), opts(256)).unwrap();
    for i in 0..100 {
        log.append(&record(i)).unwrap();
    }
    log.reset(1000).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (1000, 1000));
    assert_eq!(log.append(b"x").unwrap(), 1000);
    let number = log.segments()[0].number;
    drop(log);
    // Simulate a crash before the old segments were deleted: put one back.
    let old = segment_path(dir.path(), number - 1);
    fs::write(
        &old,
        SegmentHeader {
            first_index: 5,
            flags: 0,
        }
        .encode(),
    )
    .unwrap();
    let mut log = Log::open(dir.path(), opts(256)).unwrap();
    assert!(!old.exists());
    assert_eq!(read_all(&mut log, 1000), vec![(1000, b"x".to_vec())]);
}

#[test]
fn cut_segment_and_empty_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), opts(1024)).unwrap();
    log.append(b"").unwrap();
    log.cut_segment().unwrap();
    log.cut_segment().unwrap();
    log.append(b"").unwrap();
    assert_eq!(log.segments().len(), 3);
    drop(log);
    let mut log = Log::open(dir.path(), opts(1024)).unwrap();
    assert_eq!(read_all(&mut log, 0), vec![(0, vec![]), (1, vec![])]);
    log.truncate_after(0).unwrap();
    assert_eq!((log.next_index(), log.segments().len()), (1, 3));
}

#[test]
fn invalid_options_and_oversized_records() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Log::open(dir.path(), opts(10)),
        Err(WalError::InvalidOptions(_))
    ));
    let mut log = Log::open(dir.path(), opts(1024)).unwrap();
    let huge = vec![0u8; RECORD_LEN_MAX + 1];
    assert!(matches!(
        log.append(&huge),
        Err(WalError::RecordTooLarge { .. })
    ));
    assert_eq!(log.next_index(), 0);
}

#[test]
fn torn_header_of_new_segment_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), opts(1024)).unwrap();
    log.append(b"a").unwrap();
    drop(log);
    fs::write(segment_path(dir.path(), 1), [0u8; 7]).unwrap();
    let mut log = Log::open(dir.path(), opts(1024)).unwrap();
    assert_eq!(log.segments().len(), 1);
    assert_eq!(log.append(b"b").unwrap(), 1);
}

#[test]
fn fsync_always_paths() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_size_bytes: 128,
        fsync: FsyncPolicy::Always,
        repair: false,
        preallocate_bytes: 0,
    };
    let mut log = Log::open(dir.path(), o.clone()).unwrap();
    for i in 0..40 {
        log.append(&record(i)).unwrap();
    }
    log.sync().unwrap();
    log.cut_segment().unwrap();
    log.truncate_after(30).unwrap();
    let second = log.segments()[1].first_index;
    log.remove_segments_before(second).unwrap();
    log.reset(100).unwrap();
    log.append(b"x").unwrap();
    log.close().unwrap();
    let mut log = Log::open(dir.path(), o).unwrap();
    assert_eq!(read_all(&mut log, 100), vec![(100, b"x".to_vec())]);
}

/// `SegmentClose` writes every sync to the file (a reopen sees it) but fsyncs only
/// segments being closed, and on `fsync`/`close`; `Always` fsyncs every sync.
#[test]
fn segment_close_policy_fsyncs_closed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_size_bytes: 1 << 20,
        fsync: FsyncPolicy::SegmentClose,
        repair: false,
        preallocate_bytes: 0,
    };
    let mut log = Log::open(dir.path(), o.clone()).unwrap();
    for i in 0..10 {
        log.append(&record(i)).unwrap();
        log.sync().unwrap();
    }
    assert_eq!(log.fsync_count(), 0);
    // Synced records are in the file: a second log opened on the same directory
    // (as after a crash of the process) reads them all.
    {
        let mut other = Log::open(dir.path(), o.clone()).unwrap();
        assert_eq!(read_all(&mut other, 0).len(), 10);
    }
    log.cut_segment().unwrap();
    assert_eq!(log.fsync_count(), 1);
    log.append(b"x").unwrap();
    log.sync().unwrap();
    assert_eq!(log.fsync_count(), 1);
    log.fsync().unwrap();
    assert_eq!(log.fsync_count(), 2);
    log.close().unwrap();
    let mut log = Log::open(dir.path(), o).unwrap();
    assert_eq!(read_all(&mut log, 10), vec![(10, b"x".to_vec())]);

    let dir = tempfile::tempdir().unwrap();
    let always = LogOptions {
        segment_size_bytes: 1 << 20,
        fsync: FsyncPolicy::Always,
        repair: false,
        preallocate_bytes: 0,
    };
    let mut log = Log::open(dir.path(), always).unwrap();
    for i in 0..3 {
        log.append(&record(i)).unwrap();
        log.sync().unwrap();
    }
    assert_eq!(log.fsync_count(), 3);
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), opts(1 << 20)).unwrap();
    log.append(b"y").unwrap();
    log.sync().unwrap();
    log.cut_segment().unwrap();
    log.fsync().unwrap();
    assert_eq!(log.fsync_count(), 0);
}

#[test]
fn reader_errors_when_segment_shrinks_underneath() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), opts(1 << 20)).unwrap();
    for i in 0..10 {
        log.append(&record(i)).unwrap();
    }
    let reader = log.reader(0).unwrap();
    let path = segment_path(dir.path(), 0);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(100).unwrap();
    let rest: Vec<_> = reader.collect();
    assert!(rest.last().unwrap().is_err());
    assert!(rest
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .all(|(i, r)| *r == record(*i)));
}

fn preallocated(segment_size_bytes: u64, preallocate_bytes: u64) -> LogOptions {
    LogOptions {
        segment_size_bytes,
        fsync: FsyncPolicy::Always,
        repair: false,
        preallocate_bytes,
    }
}

fn file_len(dir: &Path, number: u64) -> u64 {
    fs::metadata(segment_path(dir, number)).unwrap().len()
}

/// Zeros are written ahead of the records in the active segment only: a closed
/// segment is cut to its records, the zeros after the last record end the log
/// cleanly on reopen (as after a crash), and `close` drops them.
#[test]
fn preallocated_segments_hold_zeros_only_ahead_of_the_active_tail() {
    let dir = tempfile::tempdir().unwrap();
    let o = preallocated(4096, 1000);
    let mut log = Log::open(dir.path(), o.clone()).unwrap();
    log.append(b"first").unwrap();
    log.sync().unwrap();
    let size = log.segments()[0].size_bytes;
    assert_eq!(size, (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 5) as u64);
    assert_eq!(file_len(dir.path(), 0), SEGMENT_HEADER_LEN as u64 + 1000);
    let syncs = log.fsync_count();
    for i in 0..200 {
        log.append(&record(i)).unwrap();
        log.sync().unwrap();
    }
    let segs = log.segments();
    assert!(segs.len() >= 3, "{segs:?}");
    // One fsync per commit and per closed segment; the fsyncs of the zeros are not
    // counted.
    assert_eq!(log.fsync_count(), syncs + 200 + segs.len() as u64 - 1);
    for s in &segs[..segs.len() - 1] {
        assert_eq!(file_len(dir.path(), s.number), s.size_bytes, "{s:?}");
    }
    let last = *segs.last().unwrap();
    let last_len = file_len(dir.path(), last.number);
    assert!(
        last_len > last.size_bytes && last_len <= 4096,
        "{last_len} {last:?}"
    );

    // A second log on the same directory, as after a crash: every record, and the
    // zeros are gone from the file.
    let want: Vec<Vec<u8>> = std::iter::once(b"first".to_vec())
        .chain((0..200).map(record))
        .collect();
    {
        let mut other = Log::open(dir.path(), o.clone()).unwrap();
        let got: Vec<Vec<u8>> = read_all(&mut other, 0).into_iter().map(|r| r.1).collect();
        assert_eq!(got, want);
        assert_eq!(file_len(dir.path(), last.number), last.size_bytes);
        assert_eq!(other.segments(), segs);
        other.append(b"after").unwrap();
        other.close().unwrap();
    }
    assert_eq!(file_len(dir.path(), last.number), last.size_bytes + 13);
    let mut log = Log::open(dir.path(), o).unwrap();
    assert_eq!(log.next_index(), 202);
    assert_eq!(read_all(&mut log, 201), vec![(201, b"after".to_vec())]);
}

/// Truncation, restarts and a record larger than the preallocation keep the file
/// consistent with the records.
#[test]
fn preallocated_log_truncates_resets_and_takes_large_records() {
    let dir = tempfile::tempdir().unwrap();
    let o = preallocated(1 << 20, 512);
    let mut log = Log::open(dir.path(), o.clone()).unwrap();
    for i in 0..50 {
        log.append(&record(i)).unwrap();
    }
    log.sync().unwrap();
    log.truncate_after(9).unwrap();
    assert_eq!(file_len(dir.path(), 0), log.segments()[0].size_bytes);
    let big = vec![7u8; 3000];
    assert_eq!(log.append(&big).unwrap(), 10);
    log.sync().unwrap();
    assert_eq!(file_len(dir.path(), 0), log.segments()[0].size_bytes);
    log.append(b"small").unwrap();
    log.sync().unwrap();
    assert!(file_len(dir.path(), 0) > log.segments()[0].size_bytes);
    drop(log);
    let mut log = Log::open(dir.path(), o.clone()).unwrap();
    let got = read_all(&mut log, 0);
    assert_eq!(got.len(), 12);
    assert_eq!(got[10].1, big);
    assert_eq!(got[11].1, b"small");

    log.reset(500).unwrap();
    log.append(b"x").unwrap();
    log.sync().unwrap();
    let segs = log.segments();
    assert_eq!(segs.len(), 1);
    drop(log);
    let mut log = Log::open(dir.path(), o).unwrap();
    assert_eq!(read_all(&mut log, 500), vec![(500, b"x".to_vec())]);
}

/// A write torn inside the preallocated zeros (part of a frame, then zeros) is a
/// torn tail like any other: the records before it are kept.
#[test]
fn a_write_torn_inside_preallocated_zeros_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let o = preallocated(1 << 20, 4096);
    let mut log = Log::open(dir.path(), o.clone()).unwrap();
    for i in 0..5 {
        log.append(&record(i)).unwrap();
    }
    log.sync().unwrap();
    let end = log.segments()[0].size_bytes;
    drop(log);
    let mut frame = Vec::new();
    segment::put_frame(&mut frame, &record(5));
    let f = OpenOptions::new()
        .write(true)
        .open(segment_path(dir.path(), 0))
        .unwrap();
    f.write_all_at(&frame[..frame.len() - 3], end).unwrap();
    drop(f);
    let mut log = Log::open(dir.path(), o).unwrap();
    assert_eq!(log.next_index(), 5);
    assert_eq!(file_len(dir.path(), 0), end);
    assert_eq!(read_all(&mut log, 0).len(), 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn arbitrary_records_round_trip(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..80),
        segment_size_bytes in 64u64..2048,
        reopen in any::<bool>(),
        preallocate_bytes in prop_oneof![Just(0u64), 1u64..600],
        sync_every in 1usize..10,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let o = LogOptions { preallocate_bytes, ..opts(segment_size_bytes) };
        let mut log = Log::open(dir.path(), o.clone()).unwrap();
        for (i, r) in records.iter().enumerate() {
            prop_assert_eq!(log.append(r).unwrap(), i as u64);
            if i % sync_every == 0 {
                log.sync().unwrap();
            }
        }
        if reopen {
            drop(log);
            log = Log::open(dir.path(), o).unwrap();
        }
        let segs = log.segments();
        for s in &segs[..segs.len() - 1] {
            prop_assert_eq!(file_len(dir.path(), s.number), s.size_bytes);
        }
        let got: Vec<Vec<u8>> = read_all(&mut log, 0).into_iter().map(|r| r.1).collect();
        prop_assert_eq!(got, records);
    }
}
