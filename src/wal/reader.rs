//! `LogReader`: iterates a log's records in index order across segment files,
//! checking every frame's CRC again as it reads.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::segment::{
    frame_crc, le_u32, read_header, segment_path, HeaderState, FRAME_HEADER_LEN, OFFSET_STRIDE,
    SEGMENT_HEADER_LEN,
};
use super::{io_err, Segment, WalError};

/// Read buffer per open segment.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// The part of one segment a reader will read.
#[derive(Debug, Clone)]
struct Part {
    path: PathBuf,
    /// First index the segment header must name.
    first_index: u64,
    /// Byte offset to start at, and the index of the record there.
    start_offset: u64,
    start_index: u64,
    /// Records before this index are stepped over, not returned.
    from_index: u64,
    /// One past the last index to read, and the byte offset where those records end.
    end_index: u64,
    end_offset: u64,
}

#[derive(Debug)]
struct OpenPart {
    part: Part,
    file: BufReader<File>,
    pos: u64,
    index: u64,
}

/// An iterator over `(index, record)` from a start index to the end the log had when
/// the reader was made. Yields an error (then stops) on damage or I/O failure; never
/// a record whose checksum does not match.
#[derive(Debug)]
pub struct LogReader {
    parts: VecDeque<Part>,
    cur: Option<OpenPart>,
    failed: bool,
}

impl LogReader {
    pub(super) fn new(dir: &Path, segments: &[Segment], from_index: u64) -> LogReader {
        let mut parts = VecDeque::new();
        for s in segments.iter().filter(|s| s.end_index() > from_index) {
            let (start_offset, start_index) = if from_index > s.first_index {
                let k = (from_index - s.first_index) / OFFSET_STRIDE;
                (
                    u64::from(s.offsets[k as usize]),
                    s.first_index + k * OFFSET_STRIDE,
                )
            } else {
                (SEGMENT_HEADER_LEN as u64, s.first_index)
            };
            parts.push_back(Part {
                path: segment_path(dir, s.number),
                first_index: s.first_index,
                start_offset,
                start_index,
                from_index,
                end_index: s.end_index(),
                end_offset: s.size_bytes,
            });
        }
        LogReader {
            parts,
            cur: None,
            failed: false,
        }
    }

    fn open(part: Part) -> Result<OpenPart, WalError> {
        let path = part.path.clone();
        let mut file = File::open(&path).map_err(io_err("open segment", &path))?;
        let mut hdr = [0u8; SEGMENT_HEADER_LEN];
        file.read_exact(&mut hdr)
            .map_err(io_err("read segment header", &path))?;
        match read_header(&hdr) {
            HeaderState::Valid(h) if h.first_index == part.first_index => {}
            _ => {
                return Err(WalError::Corruption {
                    path,
                    offset: 0,
                    reason: "segment header changed while reading".into(),
                })
            }
        }
        file.seek(SeekFrom::Start(part.start_offset))
            .map_err(io_err("seek segment", &path))?;
        Ok(OpenPart {
            pos: part.start_offset,
            index: part.start_index,
            file: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            part,
        })
    }

    /// Reads the next frame of `o`; `None` payload when it was only stepped over.
    fn read_frame(o: &mut OpenPart) -> Result<(u64, Option<Vec<u8>>), WalError> {
        let path = &o.part.path;
        let corrupt = |offset: u64, reason: &str| WalError::Corruption {
            path: path.clone(),
            offset,
            reason: reason.into(),
        };
        let mut hdr = [0u8; FRAME_HEADER_LEN];
        o.file
            .read_exact(&mut hdr)
            .map_err(io_err("read segment", path))?;
        let len = le_u32(&hdr) as u64;
        let crc = le_u32(&hdr[4..]);
        if o.pos + FRAME_HEADER_LEN as u64 + len > o.part.end_offset {
            return Err(corrupt(o.pos, "record runs past the end the log recorded"));
        }
        let index = o.index;
        let payload = if index < o.part.from_index {
            o.file
                .seek_relative(len as i64)
                .map_err(io_err("seek segment", path))?;
            None
        } else {
            let mut payload = vec![0u8; len as usize];
            o.file
                .read_exact(&mut payload)
                .map_err(io_err("read segment", path))?;
            if frame_crc(&payload) != crc {
                return Err(corrupt(o.pos, "record checksum mismatch"));
            }
            Some(payload)
        };
        o.pos += FRAME_HEADER_LEN as u64 + len;
        o.index += 1;
        Ok((index, payload))
    }

    fn next_record(&mut self) -> Result<Option<(u64, Vec<u8>)>, WalError> {
        loop {
            let o = match &mut self.cur {
                Some(o) => o,
                None => match self.parts.pop_front() {
                    Some(p) => self.cur.insert(Self::open(p)?),
                    None => return Ok(None),
                },
            };
            if o.index >= o.part.end_index {
                self.cur = None;
                continue;
            }
            if let (index, Some(payload)) = Self::read_frame(o)? {
                return Ok(Some((index, payload)));
            }
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<(u64, Vec<u8>), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_record() {
            Ok(r) => r.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
