//! Segment files: the header, the record frame, and the recovery scan that tells a
//! torn tail (a crash mid-write) from corruption in the middle of the log.
//!
//! Byte layout is documented in `docs/format/wal.md`; the constants here are that
//! document in code.

use std::path::{Path, PathBuf};

/// First four bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"HWAL";
/// Segment format version written and accepted.
pub const SEGMENT_VERSION: u8 = 1;
/// Length of the segment header: magic, version, flags, 2 reserved bytes, first
/// index (u64 LE) and a CRC32 (u32 LE) of the preceding 16 bytes.
pub const SEGMENT_HEADER_LEN: usize = 20;
/// Length of a record frame's header: payload length (u32 LE) and CRC32 (u32 LE).
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest record payload accepted, in bytes. A length field above this is corruption,
/// never an allocation request.
pub const RECORD_LEN_MAX: usize = 1 << 30;
/// Header flag: this segment restarts the log (see `Log::reset`); every
/// lower-numbered segment is obsolete.
pub const FLAG_RESET: u8 = 0x01;
/// The recovery scan keeps the byte offset of every `OFFSET_STRIDE`-th record so a
/// reader can start near any index without keeping an offset per record.
pub const OFFSET_STRIDE: u64 = 32;
/// Most payload bytes the torn-tail check will checksum while looking for a valid
/// record after a bad one. Past this the tail is treated as corruption rather than
/// risk silently dropping good records or spending unbounded time at startup.
pub const RESYNC_CRC_BYTES_MAX: usize = 256 << 20;

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Index of the segment's first record (or of the next record, when empty).
    pub first_index: u64,
    /// `FLAG_*` bits.
    pub flags: u8,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..4].copy_from_slice(&SEGMENT_MAGIC);
        b[4] = SEGMENT_VERSION;
        b[5] = self.flags;
        // b[6..8] reserved, zero.
        b[8..16].copy_from_slice(&self.first_index.to_le_bytes());
        let crc = crc32fast::hash(&b[0..16]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

/// What the first bytes of a segment file hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderState {
    /// A valid header.
    Valid(SegmentHeader),
    /// Shorter than a header, or nothing but zeros: the file was created but its
    /// header never reached the disk.
    Torn,
    /// A header that is present but wrong.
    Bad(&'static str),
}

/// Reads the segment header at the start of `data`.
pub fn read_header(data: &[u8]) -> HeaderState {
    if data.len() < SEGMENT_HEADER_LEN || data.iter().all(|&b| b == 0) {
        return HeaderState::Torn;
    }
    let h = &data[..SEGMENT_HEADER_LEN];
    if h[0..4] != SEGMENT_MAGIC {
        return HeaderState::Bad("bad segment magic");
    }
    let crc = le_u32(&h[16..20]);
    if crc32fast::hash(&h[0..16]) != crc {
        return HeaderState::Bad("segment header checksum mismatch");
    }
    if h[4] != SEGMENT_VERSION {
        return HeaderState::Bad("unsupported segment version");
    }
    if h[5] & !FLAG_RESET != 0 || h[6] != 0 || h[7] != 0 {
        return HeaderState::Bad("unknown segment header flags");
    }
    let mut fi = [0u8; 8];
    fi.copy_from_slice(&h[8..16]);
    HeaderState::Valid(SegmentHeader {
        first_index: u64::from_le_bytes(fi),
        flags: h[5],
    })
}

/// The CRC32 stored in a frame: over the 4 length bytes, then the payload. Covering
/// the length means a run of zero bytes is never a valid (empty) record.
pub fn frame_crc(payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one framed record to `buf`. The caller has checked the length limit.
pub fn put_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    assert!(
        payload.len() <= RECORD_LEN_MAX,
        "record over limit reached framing"
    );
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&frame_crc(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

pub fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Checks the frame starting at `pos`; returns its payload length, or why it is bad.
pub fn check_frame(data: &[u8], pos: usize) -> Result<usize, &'static str> {
    let rest = data.len() - pos;
    if rest < FRAME_HEADER_LEN {
        return Err("incomplete record header");
    }
    let len = le_u32(&data[pos..]) as usize;
    if len > RECORD_LEN_MAX {
        return Err("record length over limit");
    }
    if len > rest - FRAME_HEADER_LEN {
        return Err("record runs past end of segment");
    }
    let crc = le_u32(&data[pos + 4..]);
    let payload = &data[pos + FRAME_HEADER_LEN..pos + FRAME_HEADER_LEN + len];
    if frame_crc(payload) != crc {
        return Err("record checksum mismatch");
    }
    Ok(len)
}

/// A bad frame found by the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    /// Byte offset of the bad frame in the segment file.
    pub offset: u64,
    pub reason: &'static str,
    /// True when nothing valid follows the bad frame: a write torn by a crash.
    pub torn: bool,
}

/// The records found in one segment's bytes.
#[derive(Debug, Clone, Default)]
pub struct RecordScan {
    pub records: u64,
    /// Offsets of records 0, `OFFSET_STRIDE`, 2×`OFFSET_STRIDE`, …
    pub offsets: Vec<u32>,
    /// Offset just past the last valid record.
    pub valid_len: u64,
    pub problem: Option<Problem>,
}

/// Walks the frames after the header, stopping at the first bad one.
pub fn scan_records(data: &[u8]) -> RecordScan {
    assert!(data.len() >= SEGMENT_HEADER_LEN);
    let mut scan = RecordScan::default();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < data.len() {
        match check_frame(data, pos) {
            Ok(len) => {
                if scan.records.is_multiple_of(OFFSET_STRIDE) {
                    scan.offsets.push(offset_u32(pos as u64));
                }
                scan.records += 1;
                pos += FRAME_HEADER_LEN + len;
            }
            Err(reason) => {
                scan.problem = Some(Problem {
                    offset: pos as u64,
                    reason,
                    torn: tail_is_torn(data, pos),
                });
                break;
            }
        }
    }
    scan.valid_len = pos as u64;
    scan
}

/// Segment offsets always fit in 32 bits: segments are at most `SEGMENT_SIZE_MAX`
/// bytes, or one record of at most `RECORD_LEN_MAX` bytes.
pub fn offset_u32(offset: u64) -> u32 {
    u32::try_from(offset).expect("segment offsets fit in 32 bits by the size limits")
}

/// Whether the bad frame at `bad` is a torn tail: the bytes from there to the end
/// are all zero, or no valid frame starts anywhere after it. A valid frame after a
/// bad one means data in the middle of the log was damaged.
fn tail_is_torn(data: &[u8], bad: usize) -> bool {
    if data[bad..].iter().all(|&b| b == 0) {
        return true;
    }
    let mut budget = RESYNC_CRC_BYTES_MAX;
    let last_start = match data.len().checked_sub(FRAME_HEADER_LEN) {
        Some(s) => s,
        None => return true,
    };
    for q in bad + 1..=last_start {
        let len = le_u32(&data[q..]) as usize;
        if len > RECORD_LEN_MAX || len > data.len() - q - FRAME_HEADER_LEN {
            continue;
        }
        if len + 4 > budget {
            return false;
        }
        budget -= len + 4;
        if check_frame(data, q).is_ok() {
            return false;
        }
    }
    true
}

/// `dir/NNNNNNNN`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}"))
}

/// Parses a segment file name: all digits, at least 8 of them, as `segment_path`
/// writes it.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    if name.len() < 8 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = name.parse().ok()?;
    (format!("{n:08}") == name).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[&[u8]]) -> Vec<u8> {
        let mut b = SegmentHeader {
            first_index: 7,
            flags: 0,
        }
        .encode()
        .to_vec();
        for r in records {
            put_frame(&mut b, r);
        }
        b
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            first_index: 0x0102_0304_0506_0708,
            flags: FLAG_RESET,
        };
        let b = h.encode();
        assert_eq!(read_header(&b), HeaderState::Valid(h));
        assert_eq!(read_header(&b[..10]), HeaderState::Torn);
        assert_eq!(read_header(&[0u8; 40]), HeaderState::Torn);
        for i in 0..SEGMENT_HEADER_LEN {
            let mut d = b;
            d[i] ^= 0x40;
            assert!(matches!(read_header(&d), HeaderState::Bad(_)), "byte {i}");
        }
    }

    #[test]
    fn zeros_are_never_a_valid_frame() {
        let data = segment(&[]);
        let mut d = data.clone();
        d.extend_from_slice(&[0u8; 8]);
        assert!(check_frame(&d, SEGMENT_HEADER_LEN).is_err());
    }

    #[test]
    fn scan_classifies_torn_and_corrupt() {
        let good = segment(&[b"one", b"two", b"three"]);
        let s = scan_records(&good);
        assert_eq!(
            (s.records, s.valid_len, s.problem),
            (3, good.len() as u64, None)
        );

        // Cut in the middle of the last record: torn.
        let s = scan_records(&good[..good.len() - 2]);
        assert_eq!(s.records, 2);
        assert!(s.problem.is_some_and(|p| p.torn));

        // A flipped byte in the second record, with a valid record after: corrupt.
        let mut bad = good.clone();
        let second = SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 3 + FRAME_HEADER_LEN;
        bad[second] ^= 1;
        let s = scan_records(&bad);
        assert_eq!(s.records, 1);
        let p = s.problem.unwrap();
        assert_eq!(p.offset as usize, second - FRAME_HEADER_LEN);
        assert!(!p.torn);
    }

    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_name("00000012"), Some(12));
        assert_eq!(parse_segment_name("123456789"), Some(123_456_789));
        assert_eq!(parse_segment_name("0000012"), None);
        assert_eq!(parse_segment_name("000000012"), None);
        assert_eq!(parse_segment_name("checkpoint.00000001"), None);
    }
}
