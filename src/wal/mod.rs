//! A reusable segmented write-ahead log (`wal::Log`): CRC-framed records in
//! numbered segment files, with torn-tail repair on recovery.
//!
//! The log stores opaque byte records, each with an index one higher than the one
//! before. The TSDB writes its WAL records (`tsdb::record`) into it, and each Raft
//! group keeps its log in it, so it offers what Raft needs besides appending:
//! reading from an index, dropping a conflicting tail (`truncate_after`), dropping
//! whole old segments (`remove_segments_before`) and restarting at a snapshot's
//! index (`reset`). `checkpoint` writes a set of records into a `checkpoint.N`
//! directory in the same format, for the TSDB's head truncation.
//!
//! Durability: `append` only buffers. `sync` is the commit point: it writes the
//! buffer out to the file (so a crash of the process loses nothing synced) and, with
//! `FsyncPolicy::Always`, fsyncs it (so neither does a crash of the machine). With
//! `FsyncPolicy::SegmentClose` a segment is fsynced when it is closed, as in
//! Prometheus's WAL. The byte format is in `docs/format/wal.md`.

pub mod checkpoint;
mod reader;
mod segment;

pub use reader::LogReader;
pub use segment::{RECORD_LEN_MAX, SEGMENT_HEADER_LEN};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use segment::{
    offset_u32, parse_segment_name, put_frame, read_header, scan_records, segment_path,
    HeaderState, SegmentHeader, FLAG_RESET, FRAME_HEADER_LEN, OFFSET_STRIDE,
};

/// Default segment size, as Prometheus's WAL: 128 MiB.
pub const SEGMENT_SIZE_DEFAULT: u64 = 128 << 20;
/// Smallest segment size accepted (small sizes are for tests).
pub const SEGMENT_SIZE_MIN: u64 = 64;
/// Largest segment size accepted; keeps in-segment offsets in 32 bits.
pub const SEGMENT_SIZE_MAX: u64 = 1 << 30;
/// Appends are written out once this many bytes are buffered, even before `sync`.
const WRITE_BUFFER_BYTES: usize = 256 << 10;
/// What `LogOptions::preallocate_bytes` is set to by logs that fsync every commit.
pub const PREALLOCATE_BYTES_DEFAULT: u64 = 4 << 20;
/// Zeros written per call while preallocating.
const ZEROS_BYTES: usize = 64 << 10;
/// Largest segment file recovery will read: a full segment plus one oversized record.
const SEGMENT_FILE_LEN_MAX: u64 =
    SEGMENT_SIZE_MAX + (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + RECORD_LEN_MAX) as u64;

/// Errors from the write-ahead log. Corruption names the file and byte offset.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("wal: corruption in {path} at byte {offset}: {reason}")]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("wal: index {index} is outside the log [{first_index}, {next_index})")]
    IndexOutOfRange {
        index: u64,
        first_index: u64,
        next_index: u64,
    },
    #[error("wal: record of {len} bytes is over the limit of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    #[error("wal: invalid options: {0}")]
    InvalidOptions(String),
    #[error("wal: log in {0} is unusable after an earlier write error; reopen it")]
    Broken(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// When the log calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync on every `sync()` (a commit), on segment cuts and on directory changes.
    Always,
    /// What Prometheus's WAL does: `sync()` writes to the file without fsync; a
    /// segment is fsynced when it is closed (a cut, `close`, `fsync`), and segment
    /// creations and deletions fsync the directory. A crash of the process loses
    /// nothing synced; a crash of the machine can lose what was synced into the
    /// active segment since it was started, and can leave that segment damaged.
    SegmentClose,
    /// Never fsync; leave it to the OS. For tests and benchmarks only: a machine
    /// crash can lose acknowledged records and leave damage that needs `repair`.
    Never,
}

impl FsyncPolicy {
    /// The `LogOptions::preallocate_bytes` a log with this policy gets: zeros
    /// ahead of the records only when every commit is fsynced, the case they
    /// make cheaper.
    pub fn preallocate_bytes(self) -> u64 {
        if self == FsyncPolicy::Always {
            PREALLOCATE_BYTES_DEFAULT
        } else {
            0
        }
    }
}

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A new segment is started when the next record would take the active one past
    /// this size. A record bigger than this gets a segment of its own.
    pub segment_size_bytes: u64,
    pub fsync: FsyncPolicy,
    /// On corruption in the middle of the log, truncate the log at the corruption
    /// (dropping everything after it, later segments included) instead of failing.
    pub repair: bool,
    /// When above 0, the active segment's file is kept this many bytes ahead of the
    /// records (up to the segment size) by writing zeros and fsyncing them, so a
    /// commit's fsync rewrites blocks that already exist instead of growing the
    /// file (which also writes the file's size and block maps). Zeros after the
    /// last record are the clean end of a log; a closed segment is cut to its records.
    pub preallocate_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            segment_size_bytes: SEGMENT_SIZE_DEFAULT,
            fsync: FsyncPolicy::Always,
            repair: false,
            preallocate_bytes: 0,
        }
    }
}

/// One segment file, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The number in the file name.
    pub number: u64,
    /// Index of the first record in the segment (the next index, when empty).
    pub first_index: u64,
    pub record_count: u64,
    /// File size including buffered, not yet written, bytes.
    pub size_bytes: u64,
}

/// In-memory state of one segment.
#[derive(Debug, Clone)]
struct Segment {
    number: u64,
    first_index: u64,
    records: u64,
    size_bytes: u64,
    /// Offset of every `OFFSET_STRIDE`-th record, starting with the first.
    offsets: Vec<u32>,
}

impl Segment {
    fn end_index(&self) -> u64 {
        self.first_index + self.records
    }

    fn info(&self) -> SegmentInfo {
        SegmentInfo {
            number: self.number,
            first_index: self.first_index,
            record_count: self.records,
            size_bytes: self.size_bytes,
        }
    }
}

/// A segmented write-ahead log of opaque records. See the module docs.
pub struct Log {
    /// Directory holding the segment files (other files in it are ignored).
    dir: PathBuf,
    opts: LogOptions,
    /// All segments in order; never empty. The last one is active (appended to).
    segments: Vec<Segment>,
    /// The active segment's file, opened for writing; records are written at
    /// `flushed_bytes`.
    file: File,
    /// Bytes of the active segment already written to `file`.
    flushed_bytes: u64,
    /// Length of the active segment's file: `flushed_bytes`, plus the zeros written
    /// ahead of the records when preallocating.
    allocated_bytes: u64,
    /// Framed records appended but not yet written to `file`.
    buf: Vec<u8>,
    /// Set after a failed write: the file's state is unknown, so refuse further use.
    broken: bool,
    /// Segment fsyncs since the log was opened.
    fsyncs: u64,
}

impl Log {
    /// Opens the log in `dir`, creating the directory and a first segment (starting
    /// at index 0) when there is none, and checks every record of every segment.
    ///
    /// A torn tail — a partial or checksum-bad record at the very end of the last
    /// segment with nothing valid after it, or trailing zeros — is truncated with a
    /// warning. Any other damage is `WalError::Corruption` naming the segment file and
    /// byte offset, unless `opts.repair` is set: then the log is truncated at the
    /// damage (later segments are deleted) with a warning.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<Log, WalError> {
        validate(&opts)?;
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let mut segments = recover(
            dir,
            Recovery::Write {
                repair: opts.repair,
            },
        )?;
        if segments.is_empty() {
            create_segment(
                dir,
                0,
                SegmentHeader {
                    first_index: 0,
                    flags: 0,
                },
                opts.fsync,
            )?;
            segments.push(Segment {
                number: 0,
                first_index: 0,
                records: 0,
                size_bytes: SEGMENT_HEADER_LEN as u64,
                offsets: Vec::new(),
            });
        }
        let active = segments.last().expect("at least one segment");
        let path = segment_path(dir, active.number);
        let file = open_write(&path)?;
        let flushed_bytes = active.size_bytes;
        let allocated_bytes = file
            .metadata()
            .map_err(io_err("stat segment", &path))?
            .len()
            .max(flushed_bytes);
        Ok(Log {
            dir: dir.to_path_buf(),
            opts,
            segments,
            file,
            flushed_bytes,
            allocated_bytes,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            broken: false,
            fsyncs: 0,
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Index of the oldest record still in the log (equal to `next_index` when empty).
    pub fn first_index(&self) -> u64 {
        self.segments[0].first_index
    }

    /// Index the next appended record will get.
    pub fn next_index(&self) -> u64 {
        self.active().end_index()
    }

    /// Appends one record and returns its index. The record is buffered: it is
    /// durable only after `sync`.
    pub fn append(&mut self, record: &[u8]) -> Result<u64, WalError> {
        self.check_usable()?;
        if record.len() > RECORD_LEN_MAX {
            return Err(WalError::RecordTooLarge {
                len: record.len(),
                max: RECORD_LEN_MAX,
            });
        }
        let frame_len = (FRAME_HEADER_LEN + record.len()) as u64;
        let active = self.active();
        if active.records > 0 && active.size_bytes + frame_len > self.opts.segment_size_bytes {
            self.cut_segment()?;
        }
        let seg = self.segments.last_mut().expect("at least one segment");
        if seg.records.is_multiple_of(OFFSET_STRIDE) {
            seg.offsets.push(offset_u32(seg.size_bytes));
        }
        let index = seg.end_index();
        seg.records += 1;
        seg.size_bytes += frame_len;
        put_frame(&mut self.buf, record);
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(index)
    }

    /// Appends records in order and returns the index of the first (or `next_index`
    /// when `records` is empty). Records that fit are kept in the active segment.
    pub fn append_batch(&mut self, records: &[&[u8]]) -> Result<u64, WalError> {
        let first = self.next_index();
        for r in records {
            self.append(r)?;
        }
        Ok(first)
    }

    /// Writes buffered records to the file and, with `FsyncPolicy::Always`, fsyncs
    /// it. The durability point: records appended before a successful `sync` survive
    /// a crash of the process, and with `Always` a crash of the machine.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        self.flush()?;
        if self.opts.fsync == FsyncPolicy::Always {
            self.fsync_active()?;
        }
        Ok(())
    }

    /// Writes buffered records to the file and fsyncs it, unless the policy is
    /// `Never`: what a clean shutdown does under any other policy.
    pub fn fsync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        self.flush()?;
        if self.opts.fsync != FsyncPolicy::Never {
            self.fsync_active()?;
        }
        Ok(())
    }

    /// How many times the log fsynced a segment file since it was opened.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs
    }

    fn fsync_active(&mut self) -> Result<(), WalError> {
        let path = self.active_path();
        if let Err(e) = self.file.sync_data() {
            self.broken = true;
            return Err(io_err("fsync", &path)(e));
        }
        self.fsyncs += 1;
        Ok(())
    }

    /// A reader over the records from `from_index` up to the current `next_index`.
    /// Buffered records are written out first (without fsync) so the reader sees them.
    /// `from_index` must be within `[first_index, next_index]`.
    ///
    /// The reader holds its own file handles. Truncating or removing the segments it
    /// reads while it runs makes it return an error, never a wrong record.
    pub fn reader(&mut self, from_index: u64) -> Result<LogReader, WalError> {
        self.check_usable()?;
        if from_index < self.first_index() || from_index > self.next_index() {
            return Err(self.out_of_range(from_index));
        }
        self.flush()?;
        Ok(LogReader::new(&self.dir, &self.segments, from_index))
    }

    /// Drops every record with an index above `index`, as Raft does with entries that
    /// conflict with the leader's. Indexes at or past the end are a no-op; `index`
    /// may be `first_index - 1` to empty the log.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), WalError> {
        self.check_usable()?;
        let Some(keep_end) = index.checked_add(1) else {
            return Ok(());
        };
        if keep_end >= self.next_index() {
            return Ok(());
        }
        if keep_end < self.first_index() {
            return Err(self.out_of_range(index));
        }
        self.flush()?;
        // The segment holding record `keep_end`, the first one to go. With empty
        // segments around, the last segment starting at or before it is the one.
        let si = self
            .segments
            .iter()
            .rposition(|s| s.first_index <= keep_end)
            .expect("keep_end >= first_index");
        let later: Vec<u64> = self.segments[si + 1..].iter().map(|s| s.number).collect();
        for n in later.iter().rev() {
            let path = segment_path(&self.dir, *n);
            fs::remove_file(&path).map_err(io_err("remove segment", &path))?;
        }
        self.segments.truncate(si + 1);
        if !later.is_empty() {
            self.sync_dir()?;
        }

        let seg = &self.segments[si];
        let path = segment_path(&self.dir, seg.number);
        let offset = locate(&path, seg, keep_end)?;
        let file = open_write(&path)?;
        file.set_len(offset)
            .map_err(io_err("truncate segment", &path))?;
        if self.opts.fsync != FsyncPolicy::Never {
            file.sync_all().map_err(io_err("fsync", &path))?;
        }
        let seg = &mut self.segments[si];
        seg.records = keep_end - seg.first_index;
        seg.size_bytes = offset;
        seg.offsets
            .truncate(seg.records.div_ceil(OFFSET_STRIDE) as usize);
        self.file = file;
        self.flushed_bytes = offset;
        self.allocated_bytes = offset;
        Ok(())
    }

    /// Deletes whole segments all of whose records have indexes below `index` (Raft
    /// log compaction, TSDB WAL truncation). The active segment is never deleted, so
    /// `first_index` may stay below `index`. Returns how many segments were deleted.
    pub fn remove_segments_before(&mut self, index: u64) -> Result<usize, WalError> {
        self.check_usable()?;
        let n = self
            .segments
            .windows(2)
            .take_while(|w| w[1].first_index <= index)
            .count();
        // Oldest first, so a crash part-way leaves a log that is still contiguous.
        for s in &self.segments[..n] {
            let path = segment_path(&self.dir, s.number);
            fs::remove_file(&path).map_err(io_err("remove segment", &path))?;
        }
        self.segments.drain(..n);
        if n > 0 {
            self.sync_dir()?;
        }
        Ok(n)
    }

    /// Discards every record and restarts the log so the next record gets index
    /// `next_index` (Raft installing a snapshot past the end of the log). A new segment
    /// marked as a restart is written first, then the old ones are deleted; if a crash
    /// interrupts the deletion, `open` finishes it.
    pub fn reset(&mut self, next_index: u64) -> Result<(), WalError> {
        self.check_usable()?;
        self.flush()?;
        self.start_segment(SegmentHeader {
            first_index: next_index,
            flags: FLAG_RESET,
        })?;
        let old: Vec<u64> = self.segments[..self.segments.len() - 1]
            .iter()
            .map(|s| s.number)
            .collect();
        for n in old {
            let path = segment_path(&self.dir, n);
            fs::remove_file(&path).map_err(io_err("remove segment", &path))?;
        }
        let active = self.segments.pop().expect("just started");
        self.segments = vec![active];
        self.sync_dir()
    }

    /// Segment files in order, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments.iter().map(Segment::info).collect()
    }

    /// Starts a new segment now, even if the active one has room (and even if it is
    /// empty). The TSDB cuts before a checkpoint so the checkpoint covers whole
    /// segments.
    pub fn cut_segment(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        self.flush()?;
        self.start_segment(SegmentHeader {
            first_index: self.next_index(),
            flags: 0,
        })
    }

    /// Syncs and closes the log; the active segment is cut to its records (zeros
    /// written ahead of them are dropped) and fsynced unless the policy is `Never`.
    pub fn close(mut self) -> Result<(), WalError> {
        self.check_usable()?;
        self.flush()?;
        self.trim_active()?;
        self.fsync()
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("at least one segment")
    }

    fn active_path(&self) -> PathBuf {
        segment_path(&self.dir, self.active().number)
    }

    fn out_of_range(&self, index: u64) -> WalError {
        WalError::IndexOutOfRange {
            index,
            first_index: self.first_index(),
            next_index: self.next_index(),
        }
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.broken {
            return Err(WalError::Broken(self.dir.clone()));
        }
        Ok(())
    }

    /// Writes the buffer to the active file (no fsync).
    fn flush(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let end = self.flushed_bytes + self.buf.len() as u64;
        if self.opts.preallocate_bytes > 0 && end > self.allocated_bytes {
            self.preallocate(end)?;
        }
        if let Err(e) = self.file.write_all_at(&self.buf, self.flushed_bytes) {
            // Some of the buffer may be on disk; the in-memory view no longer
            // matches the file, so only a reopen (which rescans) can continue.
            self.broken = true;
            return Err(io_err("write segment", &self.active_path())(e));
        }
        self.flushed_bytes += self.buf.len() as u64;
        self.buf.clear();
        debug_assert_eq!(self.flushed_bytes, self.active().size_bytes);
        Ok(())
    }

    /// Extends the active file with zeros to at least `end`, and to
    /// `preallocate_bytes` past the records when the segment size allows, then
    /// fsyncs them (unless the policy is `Never`) so that writing records over them
    /// later changes no metadata.
    fn preallocate(&mut self, end: u64) -> Result<(), WalError> {
        let target = end.max(
            (self.flushed_bytes + self.opts.preallocate_bytes).min(self.opts.segment_size_bytes),
        );
        let zeros = [0u8; ZEROS_BYTES];
        let mut at = self.allocated_bytes.max(self.flushed_bytes);
        let result = (|| {
            while at < target {
                let n = (target - at).min(ZEROS_BYTES as u64) as usize;
                self.file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            if self.opts.fsync != FsyncPolicy::Never {
                self.file.sync_data()?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.broken = true;
            return Err(io_err("preallocate segment", &self.active_path())(e));
        }
        self.allocated_bytes = target;
        Ok(())
    }

    /// Cuts the active file to its records, dropping preallocated zeros. The buffer
    /// must be flushed.
    fn trim_active(&mut self) -> Result<(), WalError> {
        if self.allocated_bytes <= self.flushed_bytes {
            return Ok(());
        }
        if let Err(e) = self.file.set_len(self.flushed_bytes) {
            self.broken = true;
            return Err(io_err("truncate segment", &self.active_path())(e));
        }
        self.allocated_bytes = self.flushed_bytes;
        Ok(())
    }

    /// Makes a new segment the active one. The buffer must be flushed.
    fn start_segment(&mut self, header: SegmentHeader) -> Result<(), WalError> {
        assert!(self.buf.is_empty());
        // A closed segment holds only records: zeros after them would read as damage
        // in a segment that is not the last.
        self.trim_active()?;
        // The segment being closed is fsynced before the next one exists, so a
        // crash never leaves a later segment after a damaged one.
        if self.opts.fsync != FsyncPolicy::Never {
            self.fsync_active()?;
        }
        let number = self.active().number + 1;
        let file = match create_segment(&self.dir, number, header, self.opts.fsync) {
            Ok(f) => f,
            Err(e) => {
                self.broken = true;
                return Err(e);
            }
        };
        self.segments.push(Segment {
            number,
            first_index: header.first_index,
            records: 0,
            size_bytes: SEGMENT_HEADER_LEN as u64,
            offsets: Vec::new(),
        });
        self.file = file;
        self.flushed_bytes = SEGMENT_HEADER_LEN as u64;
        self.allocated_bytes = SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), WalError> {
        if self.opts.fsync != FsyncPolicy::Never {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Log {
    /// Leaves out the write buffer, which can hold hundreds of KiB.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("first_index", &self.first_index())
            .field("next_index", &self.next_index())
            .field("segments", &self.segments.len())
            .field("buffered_bytes", &self.buf.len())
            .field("broken", &self.broken)
            .finish()
    }
}

impl Drop for Log {
    /// Writes out buffered records (without fsync) so a clean shutdown loses nothing
    /// that was appended; callers that need durability call `sync` or `close`.
    fn drop(&mut self) {
        if !self.broken {
            if let Err(e) = self.flush() {
                tracing::warn!(error = %e, "wal: could not write buffered records on drop");
            }
        }
    }
}

fn validate(opts: &LogOptions) -> Result<(), WalError> {
    if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX).contains(&opts.segment_size_bytes) {
        return Err(WalError::InvalidOptions(format!(
            "segment_size_bytes {} is outside [{SEGMENT_SIZE_MIN}, {SEGMENT_SIZE_MAX}]",
            opts.segment_size_bytes
        )));
    }
    Ok(())
}

fn open_write(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open segment", path))
}

/// Creates segment `number` with `header` and returns it opened for writing.
fn create_segment(
    dir: &Path,
    number: u64,
    header: SegmentHeader,
    fsync: FsyncPolicy,
) -> Result<File, WalError> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err("create segment", &path))?;
    file.write_all(&header.encode())
        .map_err(io_err("write segment header", &path))?;
    if fsync != FsyncPolicy::Never {
        file.sync_all().map_err(io_err("fsync", &path))?;
        sync_dir(dir)?;
    }
    Ok(file)
}

/// fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Byte offset of record `index` in `seg`, found from the nearest stored offset by
/// stepping over frame headers. The frames were checked when the log was opened or
/// written; bounds are still checked, since the file could have changed under us.
fn locate(path: &Path, seg: &Segment, index: u64) -> Result<u64, WalError> {
    assert!(index >= seg.first_index && index < seg.end_index());
    let rel = index - seg.first_index;
    let mut offset = u64::from(seg.offsets[(rel / OFFSET_STRIDE) as usize]);
    let skip = rel % OFFSET_STRIDE;
    if skip == 0 {
        return Ok(offset);
    }
    let mut f = File::open(path).map_err(io_err("open segment", path))?;
    let mut hdr = [0u8; FRAME_HEADER_LEN];
    for _ in 0..skip {
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut hdr))
            .map_err(io_err("read segment", path))?;
        offset += (FRAME_HEADER_LEN + segment::le_u32(&hdr) as usize) as u64;
        if offset > seg.size_bytes {
            return Err(WalError::Corruption {
                path: path.to_path_buf(),
                offset,
                reason: "record length changed since the log was opened".into(),
            });
        }
    }
    Ok(offset)
}

/// What recovery may do to the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// Truncate torn tails; with `repair`, also truncate at corruption.
    Write { repair: bool },
    /// Touch nothing; any damage, even a torn tail, is an error.
    ReadOnly,
    /// Touch nothing; a torn tail ends the log (as a writer would truncate it there),
    /// any other damage is an error. For tools that inspect a crashed node's data.
    Inspect,
}

/// Lists segment numbers in `dir`, ascending. Other entries are ignored.
fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_segment_name) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn read_segment_file(path: &Path) -> Result<Vec<u8>, WalError> {
    let mut f = File::open(path).map_err(io_err("open segment", path))?;
    let len = f.metadata().map_err(io_err("stat segment", path))?.len();
    if len > SEGMENT_FILE_LEN_MAX {
        return Err(WalError::Corruption {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "segment file of {len} bytes is over the limit of {SEGMENT_FILE_LEN_MAX}"
            ),
        });
    }
    let mut data = Vec::with_capacity(len as usize);
    f.read_to_end(&mut data)
        .map_err(io_err("read segment", path))?;
    Ok(data)
}

fn read_header_of(path: &Path) -> Result<HeaderState, WalError> {
    let mut f = File::open(path).map_err(io_err("open segment", path))?;
    let mut data = Vec::with_capacity(SEGMENT_HEADER_LEN);
    (&mut f)
        .take(SEGMENT_HEADER_LEN as u64)
        .read_to_end(&mut data)
        .map_err(io_err("read segment", path))?;
    Ok(read_header(&data))
}

/// Scans every segment in `dir` and returns their in-memory state, repairing what
/// `mode` allows. See `Log::open` for the rules.
fn recover(dir: &Path, mode: Recovery) -> Result<Vec<Segment>, WalError> {
    let mut numbers = list_segments(dir)?;

    // A restart marker makes every older segment obsolete: a `reset` was
    // interrupted after writing the new segment but before deleting the old ones.
    let mut restart_at = None;
    for (i, &n) in numbers.iter().enumerate().skip(1) {
        if let HeaderState::Valid(h) = read_header_of(&segment_path(dir, n))? {
            if h.flags & FLAG_RESET != 0 {
                restart_at = Some(i);
            }
        }
    }
    if let Some(i) = restart_at {
        if !matches!(mode, Recovery::Write { .. }) {
            numbers.drain(..i);
        } else {
            for n in numbers.drain(..i) {
                let path = segment_path(dir, n);
                tracing::info!(segment = %path.display(), "wal: removing segment left by an interrupted reset");
                fs::remove_file(&path).map_err(io_err("remove segment", &path))?;
            }
            sync_dir(dir)?;
        }
    }

    let mut segments: Vec<Segment> = Vec::with_capacity(numbers.len());
    for (i, &number) in numbers.iter().enumerate() {
        let path = segment_path(dir, number);
        let is_last = i + 1 == numbers.len();
        let data = read_segment_file(&path)?;
        let corrupt = |offset: u64, reason: String| WalError::Corruption {
            path: path.clone(),
            offset,
            reason,
        };

        // Problems that make this whole segment unusable: its records can't be
        // placed in the log.
        let header_problem: Option<(String, bool)> = match read_header(&data) {
            HeaderState::Torn => Some(("segment header incomplete".into(), is_last)),
            HeaderState::Bad(r) => Some((r.into(), false)),
            HeaderState::Valid(h) => match segments.last() {
                Some(prev) if number != prev.number + 1 => {
                    Some((format!("segment {} is missing", prev.number + 1), false))
                }
                Some(prev) if h.first_index != prev.end_index() && h.flags & FLAG_RESET == 0 => {
                    Some((
                        format!(
                            "first index {} does not follow the previous segment's end {}",
                            h.first_index,
                            prev.end_index()
                        ),
                        false,
                    ))
                }
                _ => None,
            },
        };
        if let Some((reason, torn)) = header_problem {
            // Without an earlier segment the log's first index is unknown, so a
            // damaged first segment can't be repaired by dropping it... except a torn
            // segment 0, which is a brand-new log that crashed while being created.
            let droppable = !segments.is_empty() || (number == 0 && torn);
            match mode {
                Recovery::Write { repair } if droppable && (torn || repair) => {
                    tracing::warn!(segment = %path.display(), %reason, "wal: dropping damaged segment and all later ones");
                    remove_from(dir, &numbers[i..])?;
                    break;
                }
                Recovery::Inspect if droppable && torn => {
                    tracing::warn!(segment = %path.display(), %reason, "wal: ignoring a torn last segment");
                    break;
                }
                _ => return Err(corrupt(0, reason)),
            }
        }
        let HeaderState::Valid(header) = read_header(&data) else {
            unreachable!("header problems handled above");
        };

        let scan = scan_records(&data);
        let mut seg = Segment {
            number,
            first_index: header.first_index,
            records: scan.records,
            size_bytes: scan.valid_len,
            offsets: scan.offsets,
        };
        let Some(problem) = scan.problem else {
            segments.push(seg);
            continue;
        };
        let reason = problem.reason;
        let torn = problem.torn && is_last;
        match mode {
            Recovery::Write { repair } if torn || repair => {
                if torn && data[problem.offset as usize..].iter().all(|&b| b == 0) {
                    // The clean end of a log whose segment was preallocated.
                    tracing::debug!(segment = %path.display(), offset = problem.offset, "wal: dropping the zeros after the last record");
                } else if torn {
                    tracing::warn!(segment = %path.display(), offset = problem.offset, %reason, "wal: truncating torn tail");
                } else {
                    tracing::warn!(segment = %path.display(), offset = problem.offset, %reason, "wal: repairing corruption by truncating the log here");
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open segment", &path))?;
                f.set_len(problem.offset)
                    .and_then(|_| f.sync_all())
                    .map_err(io_err("truncate segment", &path))?;
                seg.size_bytes = problem.offset;
                segments.push(seg);
                remove_from(dir, &numbers[i + 1..])?;
                break;
            }
            Recovery::Inspect if torn => {
                tracing::warn!(segment = %path.display(), offset = problem.offset, %reason, "wal: reading up to a torn tail");
                seg.size_bytes = problem.offset;
                segments.push(seg);
                break;
            }
            _ => {
                let what = if problem.torn && !is_last {
                    "in a segment that is not the last"
                } else if problem.torn {
                    "torn tail"
                } else {
                    "followed by valid records"
                };
                return Err(corrupt(problem.offset, format!("{reason} ({what})")));
            }
        }
    }
    Ok(segments)
}

/// Deletes segments `numbers`, newest first, and syncs the directory.
fn remove_from(dir: &Path, numbers: &[u64]) -> Result<(), WalError> {
    for &n in numbers.iter().rev() {
        let path = segment_path(dir, n);
        fs::remove_file(&path).map_err(io_err("remove segment", &path))?;
    }
    sync_dir(dir)
}

/// Opens the log in `dir` for reading only, from its first record. Nothing is
/// written, and any damage — a torn tail included — is an error. Used for
/// checkpoints (written atomically, so never torn) and by inspection tools.
pub fn open_read_only(dir: &Path) -> Result<LogReader, WalError> {
    let segments = recover(dir, Recovery::ReadOnly)?;
    let first = segments.first().map_or(0, |s| s.first_index);
    Ok(LogReader::new(dir, &segments, first))
}

/// Opens the log in `dir` for reading only, as a writer would see it after
/// recovery: a torn tail ends the log, other damage is an error. Nothing is written.
pub fn open_for_inspection(dir: &Path) -> Result<LogReader, WalError> {
    let segments = recover(dir, Recovery::Inspect)?;
    let first = segments.first().map_or(0, |s| s.first_index);
    Ok(LogReader::new(dir, &segments, first))
}

#[cfg(test)]
mod tests;
