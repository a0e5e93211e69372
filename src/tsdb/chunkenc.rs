//! Gorilla XOR chunk encoding of float samples (Prometheus's chunk encoding 1).
//!
//! The layout is byte-identical to Prometheus's `XORChunk`, because the same bytes
//! go into block chunk files that `promtool` and Prometheus read:
//!
//! ```text
//! ┌──────────────────┬──────────────────────────────────────────────────────────┐
//! │ num samples (BE) │ bit stream, most-significant bit first, zero-padded      │
//! │ 2 bytes          │ to a whole byte                                          │
//! └──────────────────┴──────────────────────────────────────────────────────────┘
//! sample 0: t as varint, v as its raw 64 bits
//! sample 1: t − t₀ as uvarint, v XOR-encoded against v₀
//! sample n: delta-of-delta of t ('0' = 0, '10' + 14 bits, '110' + 17 bits,
//!           '1110' + 20 bits, '1111' + 64 bits), v XOR-encoded
//! XOR value: '0' = same value; '10' + bits in the previous window;
//!            '11' + 5 bits leading zeros + 6 bits significant bits (64 as 0) + bits
//! ```
//!
//! The writer appends straight into the final byte layout, so `bytes()` is always
//! the chunk as stored, and the reader works on any byte slice (an mmap'd file
//! included) through a 64-bit buffered bit reader.

use crate::encoding::{put_uvarint, put_varint};
use crate::storage::Sample;

/// Chunk encoding byte for XOR chunks in chunk files.
pub const ENCODING_XOR: u8 = 1;

/// Samples per chunk that chunk cutting aims at (Prometheus's 120).
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Largest XOR chunk Prometheus lets grow (its `MaxBytesPerXORChunk`): a chunk is
/// cut before a sample could take it past this size, which bounds the bytes a
/// reader must decode to reach any one sample.
pub const MAX_BYTES_PER_XOR_CHUNK: usize = 1024;

/// Longest encoding of one sample after the first: a 4-bit marker with a 64-bit
/// timestamp delta-of-delta, then a 13-bit value header with 64 value bits. The
/// size limit keeps this much room free, since the next sample's size is unknown.
const MAX_SAMPLE_BYTES: usize = 19;

/// Decides where a series' XOR chunks end, by the rule Prometheus's head applies
/// when it appends (`memSeries.appendPreprocessor`), so that a block written from
/// the same samples holds the same chunks as Prometheus's:
///
/// - a chunk never crosses a multiple of the chunk range (the block range);
/// - when a chunk holds a quarter of `SAMPLES_PER_CHUNK`, its end is predicted
///   from the sample rate so far, so that the rest of the range splits into
///   chunks of about equal size (a range's samples are spread evenly instead of
///   leaving a short last chunk, which saves a chunk's overhead in partly filled
///   ranges);
/// - a chunk is cut at twice `SAMPLES_PER_CHUNK` samples (the rate went up after
///   the prediction), and before it can exceed `MAX_BYTES_PER_XOR_CHUNK`.
///
/// The byte limit came with prometheus/prometheus#12054 (2023); older versions (promtool 2.42
/// included) let chunks of nearly random values grow past it. promtool's backfill
/// predicts against twice the block range (an artefact of how it drives its
/// head), which gives equal or more, shorter chunks than the block range does.
///
/// Feed it every sample's timestamp, in strictly increasing order.
#[derive(Debug, Clone)]
pub struct ChunkCutter {
    chunk_range_ms: i64,
    /// Samples in the open chunk (0 before the first sample).
    num_samples: usize,
    /// First and last timestamps in the open chunk.
    chunk_mint: i64,
    chunk_maxt: i64,
    /// The open chunk ends before the first sample at or after this time.
    next_at: i64,
}

impl ChunkCutter {
    /// A cutter for chunks that stay within multiples of `chunk_range_ms`.
    pub fn new(chunk_range_ms: i64) -> ChunkCutter {
        assert!(chunk_range_ms > 0, "chunk range must be positive");
        ChunkCutter {
            chunk_range_ms,
            num_samples: 0,
            chunk_mint: 0,
            chunk_maxt: 0,
            next_at: 0,
        }
    }

    /// Whether the sample at `t` starts a new chunk (always true for the first),
    /// given the size in bytes of the open chunk it would otherwise go into. Then
    /// counts the sample as appended to the open or the new chunk.
    pub fn starts_chunk(&mut self, t: i64, open_chunk_bytes: usize) -> bool {
        let cut = if self.num_samples == 0 {
            true
        } else {
            assert!(t > self.chunk_maxt, "chunk cutter fed out-of-order samples");
            if open_chunk_bytes > MAX_BYTES_PER_XOR_CHUNK - MAX_SAMPLE_BYTES {
                true
            } else {
                if self.num_samples == SAMPLES_PER_CHUNK / 4 {
                    self.next_at =
                        chunk_end_time(self.chunk_mint, self.chunk_maxt, self.next_at, 4.0);
                }
                t >= self.next_at || self.num_samples >= SAMPLES_PER_CHUNK * 2
            }
        };
        if cut {
            self.num_samples = 0;
            self.chunk_mint = t;
            self.next_at =
                t.div_euclid(self.chunk_range_ms) * self.chunk_range_ms + self.chunk_range_ms;
        }
        self.num_samples += 1;
        self.chunk_maxt = t;
        cut
    }
}

/// Predicted end of a chunk that began at `start` and whose latest sample is at
/// `cur`, when the chunk is `1 / ratio_to_full` full and may last until `max`:
/// assuming the rate so far continues, the time until `max` is divided into as
/// many equal chunks as fit. The float arithmetic is Prometheus's
/// (`computeChunkEndTime`), truncation included, so the cut lands on the same
/// sample.
fn chunk_end_time(start: i64, cur: i64, max: i64, ratio_to_full: f64) -> i64 {
    let n = (max - start) as f64 / ((cur - start + 1) as f64 * ratio_to_full);
    if n <= 1.0 {
        return max;
    }
    (start as f64 + (max - start) as f64 / n.floor()) as i64
}

/// Size of the sample-count header in front of the bit stream.
const HEADER_SIZE_BYTES: usize = 2;

/// Marks "no value window chosen yet": the next changed value always writes
/// a fresh window, as Prometheus's appender does for a new chunk.
const NO_WINDOW: u8 = 0xff;

/// What was wrong with chunk bytes that do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("xor chunk is {len_bytes} bytes, shorter than its 2-byte sample count header")]
    MissingHeader { len_bytes: usize },
    #[error("xor chunk data ends inside sample {sample} of {num_samples}")]
    UnexpectedEnd { sample: usize, num_samples: usize },
    #[error("xor chunk timestamp varint overflows 64 bits in sample {sample}")]
    VarintOverflow { sample: usize },
    #[error(
        "xor chunk value window of {leading} leading zeros and {significant} significant bits \
         exceeds 64 bits in sample {sample}"
    )]
    BadValueWindow {
        sample: usize,
        leading: u8,
        significant: u8,
    },
}

/// An XOR chunk being built: the encoded bytes plus the appender state
/// (previous sample, previous timestamp delta, current value window), kept
/// inline so the head can hold one per series and append across calls.
#[derive(Debug, Clone)]
pub struct XorChunk {
    /// The chunk exactly as stored: 2-byte count, then the bit stream.
    buf: Vec<u8>,
    /// Unused low-order bits in the last byte of `buf` (0..=7).
    free_bits: u32,
    /// Samples appended; mirrored into the header on every append.
    num: u16,
    t: i64,
    v_bits: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorChunk {
    fn default() -> Self {
        XorChunk::new()
    }
}

impl XorChunk {
    /// An empty chunk. The capacity fits a typical full chunk so appends
    /// rarely reallocate.
    pub fn new() -> XorChunk {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&[0, 0]);
        XorChunk {
            buf,
            free_bits: 0,
            num: 0,
            t: 0,
            v_bits: 0,
            t_delta: 0,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    /// Rebuilds a chunk from stored bytes so more samples can be appended to it,
    /// recovering the appender state by decoding it (as Prometheus's
    /// `XORChunk.Appender` does). Bytes after the last sample's bits are dropped.
    pub fn from_bytes(data: &[u8]) -> Result<XorChunk, ChunkError> {
        let mut it = XorIterator::new(data);
        for _ in it.by_ref() {}
        if let Some(e) = it.error() {
            return Err(e.clone());
        }
        let bits_used = it.br.bit_position();
        let stream_len_bytes = bits_used.div_ceil(8);
        let mut buf = Vec::with_capacity((HEADER_SIZE_BYTES + stream_len_bytes).max(128));
        buf.extend_from_slice(&data[..HEADER_SIZE_BYTES + stream_len_bytes]);
        // Clear whatever padding the stored last byte carried past the samples.
        let free_bits = (stream_len_bytes * 8 - bits_used) as u32;
        if free_bits > 0 {
            if let Some(last) = buf.last_mut() {
                *last &= !((1u8 << free_bits) - 1);
            }
        }
        let num = it.num_read as u16;
        Ok(XorChunk {
            buf,
            free_bits,
            num,
            t: it.t,
            v_bits: it.v_bits,
            t_delta: it.t_delta,
            leading: if num == 0 { NO_WINDOW } else { it.leading },
            trailing: it.trailing,
        })
    }

    /// Appends a sample. The caller guarantees `t` is greater than the previous
    /// sample's timestamp and that the chunk holds fewer than 65 535 samples
    /// (the head cuts chunks at `SAMPLES_PER_CHUNK`).
    #[inline]
    pub fn append(&mut self, t: i64, v: f64) {
        assert!(
            self.num < u16::MAX,
            "xor chunk sample count overflows its header"
        );
        let v_bits = v.to_bits();
        match self.num {
            0 => {
                // The stream is empty, so it is byte-aligned and varints can go
                // straight into the buffer.
                debug_assert_eq!(self.free_bits, 0);
                put_varint(&mut self.buf, t);
                self.buf.extend_from_slice(&v_bits.to_be_bytes());
            }
            1 => {
                // Sample 0 took whole bytes, so the stream is still aligned.
                debug_assert_eq!(self.free_bits, 0);
                let t_delta = t.wrapping_sub(self.t) as u64;
                put_uvarint(&mut self.buf, t_delta);
                self.t_delta = t_delta;
                self.write_value(v_bits);
            }
            _ => {
                let t_delta = t.wrapping_sub(self.t) as u64;
                let dod = t_delta.wrapping_sub(self.t_delta) as i64;
                if dod == 0 {
                    self.write_bits(0, 1);
                } else if fits_bits(dod, 14) {
                    self.write_bits((0b10 << 14) | (dod as u64 & mask(14)), 16);
                } else if fits_bits(dod, 17) {
                    self.write_bits((0b110 << 17) | (dod as u64 & mask(17)), 20);
                } else if fits_bits(dod, 20) {
                    self.write_bits((0b1110 << 20) | (dod as u64 & mask(20)), 24);
                } else {
                    self.write_bits(0b1111, 4);
                    self.write_bits(dod as u64, 64);
                }
                self.t_delta = t_delta;
                self.write_value(v_bits);
            }
        }
        self.t = t;
        self.v_bits = v_bits;
        self.num += 1;
        self.buf[..HEADER_SIZE_BYTES].copy_from_slice(&self.num.to_be_bytes());
    }

    /// Writes `v_bits` XORed against the previous value.
    #[inline]
    fn write_value(&mut self, v_bits: u64) {
        let xor = v_bits ^ self.v_bits;
        if xor == 0 {
            self.write_bits(0, 1);
            return;
        }
        // Prometheus clamps the leading-zero count to 31 so it fits in 5 bits.
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
            let sig = 64 - self.leading as u32 - self.trailing as u32;
            self.write_bits(0b10, 2);
            self.write_bits(xor >> self.trailing, sig);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            let sig = 64 - leading as u32 - trailing as u32;
            // 64 significant bits do not fit in 6 bits; they are written as 0,
            // which is otherwise impossible (that would be an unchanged value).
            let header = (0b11 << 11) | ((leading as u64) << 6) | (sig as u64 & 0x3f);
            self.write_bits(header, 13);
            self.write_bits(xor >> trailing, sig);
        }
    }

    /// Appends the low `nbits` bits of `value` (1..=64), most-significant first.
    #[inline]
    fn write_bits(&mut self, value: u64, nbits: u32) {
        debug_assert!((1..=64).contains(&nbits));
        // Left-align so the first bit to write is the top bit; this also drops
        // any bits above `nbits` (sign bits of a negative delta-of-delta).
        let mut v = value << (64 - nbits);
        let mut n = nbits;
        if self.free_bits > 0 {
            let free = self.free_bits;
            if let Some(last) = self.buf.last_mut() {
                *last |= (v >> (64 - free)) as u8;
            }
            if n <= free {
                self.free_bits = free - n;
                return;
            }
            n -= free;
            v <<= free;
        }
        let nbytes = n.div_ceil(8) as usize;
        self.buf.extend_from_slice(&v.to_be_bytes()[..nbytes]);
        self.free_bits = nbytes as u32 * 8 - n;
    }

    /// Samples in the chunk.
    pub fn num_samples(&self) -> usize {
        self.num as usize
    }

    /// The encoded chunk exactly as stored in chunk files: the 2-byte sample
    /// count followed by the bit stream.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Iterates over the samples appended so far.
    pub fn iter(&self) -> XorIterator<'_> {
        XorIterator::new(&self.buf)
    }

    /// Heap memory held by the chunk, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Timestamp of the last sample appended, if any.
    pub fn last_timestamp(&self) -> Option<i64> {
        (self.num > 0).then_some(self.t)
    }
}

/// Whether `x` is in the range Prometheus encodes with `nbits` bits:
/// −(2^(n−1) − 1) ..= 2^(n−1). The asymmetry is Prometheus's and must be kept,
/// since it decides which prefix a delta-of-delta gets.
#[inline]
fn fits_bits(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

#[inline]
fn mask(nbits: u32) -> u64 {
    (1u64 << nbits) - 1
}

/// Reads bits most-significant first through a 64-bit buffer.
#[derive(Debug, Clone)]
struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` not yet loaded into `buf`.
    pos: usize,
    /// Unread bits, left-aligned. Bits below the top `valid` ones are either
    /// zero or the correct following stream bits, so OR-ing in a reload that
    /// overlaps them is harmless.
    buf: u64,
    valid: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> BitReader<'a> {
        BitReader {
            data,
            pos: 0,
            buf: 0,
            valid: 0,
        }
    }

    /// Bits consumed from the start of the stream.
    fn bit_position(&self) -> usize {
        self.pos * 8 - self.valid as usize
    }

    /// Loads as many whole bytes as fit. Requires `valid < 64`.
    #[inline]
    fn refill(&mut self) {
        debug_assert!(self.valid < 64);
        if let Some(word) = self.data.get(self.pos..self.pos + 8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(word);
            self.buf |= u64::from_be_bytes(a) >> self.valid;
            let nbytes = (64 - self.valid) / 8;
            self.pos += nbytes as usize;
            self.valid += nbytes * 8;
        } else {
            self.refill_tail();
        }
    }

    #[cold]
    fn refill_tail(&mut self) {
        while self.valid <= 56 {
            let Some(&b) = self.data.get(self.pos) else {
                return;
            };
            self.buf |= (b as u64) << (56 - self.valid);
            self.pos += 1;
            self.valid += 8;
        }
    }

    /// Makes at least `n` bits available if the data has them; returns whether it did.
    #[inline]
    fn ensure(&mut self, n: u32) -> bool {
        if self.valid < n {
            self.refill();
        }
        self.valid >= n
    }

    /// Drops `n` (1..=56, at most `valid`) bits.
    #[inline]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.valid -= n;
    }

    /// Reads `n` bits, 1..=56.
    #[inline]
    fn read_bits(&mut self, n: u32) -> Option<u64> {
        debug_assert!((1..=56).contains(&n));
        if !self.ensure(n) {
            return None;
        }
        let v = self.buf >> (64 - n);
        self.consume(n);
        Some(v)
    }

    /// Reads `n` bits, 1..=64.
    #[inline]
    fn read_bits_long(&mut self, n: u32) -> Option<u64> {
        if n <= 56 {
            self.read_bits(n)
        } else {
            let hi = self.read_bits(32)?;
            let lo = self.read_bits(n - 32)?;
            Some((hi << (n - 32)) | lo)
        }
    }

    /// Reads a Go uvarint written into the bit stream byte by byte.
    fn uvarint(&mut self) -> Result<u64, VarintFail> {
        let mut n: u64 = 0;
        for i in 0..10 {
            let b = self.read_bits(8).ok_or(VarintFail::End)?;
            if i == 9 && b > 1 {
                return Err(VarintFail::Overflow);
            }
            n |= (b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(VarintFail::Overflow)
    }
}

enum VarintFail {
    End,
    Overflow,
}

/// Iterates over the samples of encoded XOR chunk bytes (from a live chunk or
/// any stored copy). Corrupt data ends the iteration early and leaves the
/// reason in `error()`.
#[derive(Debug, Clone)]
pub struct XorIterator<'a> {
    br: BitReader<'a>,
    num_total: usize,
    num_read: usize,
    t: i64,
    v_bits: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
    err: Option<ChunkError>,
}

impl<'a> XorIterator<'a> {
    /// An iterator over the chunk bytes `data` (count header included).
    pub fn new(data: &'a [u8]) -> XorIterator<'a> {
        let (num_total, stream, err) = match data {
            [hi, lo, rest @ ..] => (u16::from_be_bytes([*hi, *lo]) as usize, rest, None),
            _ => (
                0,
                &data[data.len()..],
                Some(ChunkError::MissingHeader {
                    len_bytes: data.len(),
                }),
            ),
        };
        XorIterator {
            br: BitReader::new(stream),
            num_total,
            num_read: 0,
            t: 0,
            v_bits: 0,
            t_delta: 0,
            leading: 0,
            trailing: 0,
            err,
        }
    }

    /// Why iteration stopped before the chunk's sample count, if it did.
    pub fn error(&self) -> Option<&ChunkError> {
        self.err.as_ref()
    }

    /// Samples in the chunk according to its header.
    pub fn num_samples(&self) -> usize {
        self.num_total
    }

    fn fail(&mut self, e: ChunkError) -> Option<Sample> {
        self.err = Some(e);
        None
    }

    fn end(&mut self) -> Option<Sample> {
        let e = ChunkError::UnexpectedEnd {
            sample: self.num_read,
            num_samples: self.num_total,
        };
        self.fail(e)
    }

    fn varint_fail(&mut self, f: VarintFail) -> Option<Sample> {
        match f {
            VarintFail::End => self.end(),
            VarintFail::Overflow => self.fail(ChunkError::VarintOverflow {
                sample: self.num_read,
            }),
        }
    }

    #[cold]
    fn first(&mut self) -> Option<Sample> {
        let u = match self.br.uvarint() {
            Ok(u) => u,
            Err(f) => return self.varint_fail(f),
        };
        // Undo the zig-zag of Go's PutVarint.
        let t = ((u >> 1) as i64) ^ -((u & 1) as i64);
        let Some(v_bits) = self.br.read_bits_long(64) else {
            return self.end();
        };
        self.t = t;
        self.v_bits = v_bits;
        self.num_read = 1;
        Some(Sample {
            t,
            v: f64::from_bits(v_bits),
        })
    }

    #[cold]
    fn second(&mut self) -> Option<Sample> {
        let t_delta = match self.br.uvarint() {
            Ok(u) => u,
            Err(f) => return self.varint_fail(f),
        };
        self.t_delta = t_delta;
        self.t = self.t.wrapping_add(t_delta as i64);
        self.read_value()
    }

    /// Reads the delta-of-delta of the timestamp. Fast path: with 24 bits in
    /// the buffer the prefix and any short payload are decoded without loops.
    #[inline]
    fn read_dod(&mut self) -> Option<i64> {
        if self.br.ensure(24) {
            let ones = (!self.br.buf).leading_zeros().min(4);
            let (prefix, size) = match ones {
                0 => {
                    self.br.consume(1);
                    return Some(0);
                }
                1 => (2, 14),
                2 => (3, 17),
                3 => (4, 20),
                _ => {
                    self.br.consume(4);
                    return self.br.read_bits_long(64).map(|b| b as i64);
                }
            };
            let bits = (self.br.buf << prefix) >> (64 - size);
            self.br.consume(prefix + size);
            return Some(sign_extend(bits, size));
        }
        // Near the end of the data: decode the prefix bit by bit.
        let mut ones = 0;
        while ones < 4 {
            if self.br.read_bits(1)? == 0 {
                break;
            }
            ones += 1;
        }
        let size = match ones {
            0 => return Some(0),
            1 => 14,
            2 => 17,
            3 => 20,
            _ => return self.br.read_bits_long(64).map(|b| b as i64),
        };
        let bits = self.br.read_bits(size)?;
        Some(sign_extend(bits, size))
    }

    /// Reads an XOR-encoded value and completes the sample.
    #[inline]
    fn read_value(&mut self) -> Option<Sample> {
        if !self.br.ensure(2) {
            // One bit may remain: a lone '0' (unchanged value) is valid.
            match self.br.read_bits(1) {
                Some(0) => return self.emit(),
                _ => return self.end(),
            }
        }
        let ctrl = self.br.buf >> 62;
        if ctrl < 0b10 {
            self.br.consume(1);
            return self.emit();
        }
        self.br.consume(2);
        if ctrl == 0b11 {
            let Some(header) = self.br.read_bits(11) else {
                return self.end();
            };
            let leading = (header >> 6) as u8;
            let mut significant = (header & 0x3f) as u8;
            if significant == 0 {
                significant = 64;
            }
            if leading as u32 + significant as u32 > 64 {
                return self.fail(ChunkError::BadValueWindow {
                    sample: self.num_read,
                    leading,
                    significant,
                });
            }
            self.leading = leading;
            self.trailing = 64 - leading - significant;
        }
        let significant = 64 - self.leading as u32 - self.trailing as u32;
        let Some(bits) = self.br.read_bits_long(significant) else {
            return self.end();
        };
        self.v_bits ^= bits << self.trailing;
        self.emit()
    }

    #[inline]
    fn emit(&mut self) -> Option<Sample> {
        self.num_read += 1;
        Some(Sample {
            t: self.t,
            v: f64::from_bits(self.v_bits),
        })
    }
}

/// Interprets `bits` (of width `size`) the way Prometheus does: values above
/// 2^(size−1) are negative.
#[inline]
fn sign_extend(bits: u64, size: u32) -> i64 {
    let mut d = bits as i64;
    if d > (1i64 << (size - 1)) {
        d -= 1i64 << size;
    }
    d
}

impl Iterator for XorIterator<'_> {
    type Item = Sample;

    #[inline]
    fn next(&mut self) -> Option<Sample> {
        if self.err.is_some() || self.num_read >= self.num_total {
            return None;
        }
        match self.num_read {
            0 => self.first(),
            1 => self.second(),
            _ => {
                let Some(dod) = self.read_dod() else {
                    return self.end();
                };
                self.t_delta = (self.t_delta as i64).wrapping_add(dod) as u64;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.num_total.saturating_sub(self.num_read);
        (0, Some(left))
    }
}

/// Decodes all samples, or the error for corrupt data.
pub fn decode_xor(data: &[u8]) -> Result<Vec<Sample>, ChunkError> {
    let mut it = XorIterator::new(data);
    let mut out = Vec::with_capacity(it.num_samples().min(SAMPLES_PER_CHUNK * 2));
    out.extend(it.by_ref());
    match it.err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::STALE_NAN_BITS;
    use proptest::prelude::*;

    fn encode(samples: &[Sample]) -> XorChunk {
        let mut c = XorChunk::new();
        for s in samples {
            c.append(s.t, s.v);
        }
        c
    }

    /// The layout pinned by hand from the format description.
    #[test]
    fn golden_bytes_match_hand_encoding() {
        let c = encode(&[
            Sample { t: 1000, v: 1.0 },
            Sample { t: 2000, v: 1.0 },
            Sample { t: 3000, v: 2.0 },
            Sample { t: 4001, v: 2.0 },
        ]);
        // Header: 4 samples.
        // Sample 0: varint(1000) = zigzag 2000 = 0xd0 0x0f; 1.0 = 0x3ff0000000000000.
        // Sample 1: uvarint(1000) = 0xe8 0x07; value unchanged → bit 0.
        // Sample 2: dod 0 → bit 0; 1.0 ^ 2.0 = 0x7ff0000000000000: leading 1,
        //   trailing 52, 11 significant bits → '11' 00001 001011 11111111111.
        // Sample 3: dod 1 → '10' + 00000000000001; value unchanged → '0'.
        // Bits after the byte-aligned part:
        //   0 0 11 00001 001011 11111111111 10 00000000000001 0  (+ 5 padding zeros)
        let expected: Vec<u8> = vec![
            0x00, 0x04, // count
            0xd0, 0x0f, // t0
            0x3f, 0xf0, 0, 0, 0, 0, 0, 0, // v0
            0xe8, 0x07, // t1 delta
            // 0011 0000 | 1001 0111 | 1111 1111 | 1110 0000 | 0000 0000 | 0100 0000
            0x30, 0x97, 0xff, 0xe0, 0x00, 0x40,
        ];
        assert_eq!(c.bytes(), &expected[..]);
        assert_eq!(decode_xor(c.bytes()).unwrap().len(), 4);
    }

    /// A chunk written by Prometheus itself (`promtool tsdb create-blocks-from
    /// openmetrics`, promtool 2.42) from ten samples covering unchanged values,
    /// NaN, ±Inf, delta-of-deltas of every width (the 64-bit one included) and
    /// a sub-second timestamp. Decoding it must give the samples back, and
    /// encoding the samples must give the same bytes.
    pub(crate) const PROMETHEUS_CHUNK: [u8; 97] = [
        0x00, 0x0a, 0x80, 0x89, 0x7a, 0x3f, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x98, 0x75,
        0x30, 0x9b, 0xff, 0xd8, 0x00, 0x1c, 0x5f, 0x7f, 0xf8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
        0x7f, 0xfd, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x03, 0x80, 0x1b, 0x07,
        0xf8, 0x09, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x52, 0x0c, 0x73, 0xed, 0x28, 0x8c, 0xcf,
        0x60, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0d, 0x6d, 0x80, 0xaf, 0x8e, 0x79, 0x0f, 0x22,
        0x00, 0x1d, 0x67, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x94, 0xa3, 0xa6, 0x00, 0x20, 0x3c,
        0x09, 0x03, 0x27, 0xef, 0x9d, 0xb2, 0x40,
    ];

    #[test]
    fn matches_a_chunk_written_by_prometheus() {
        let got = decode_xor(&PROMETHEUS_CHUNK).unwrap();
        let ts: Vec<i64> = got.iter().map(|s| s.t).collect();
        assert_eq!(
            ts,
            [
                1_000_000, 1_015_000, 1_030_000, 1_045_001, 1_060_000, 1_075_000, 1_090_000,
                1_105_000, 2_000_000, 2_015_500
            ]
        );
        let vs: Vec<f64> = got.iter().map(|s| s.v).collect();
        assert_eq!(vs[..3], [1.0, 1.0, 2.5]);
        assert!(vs[3].is_nan());
        assert_eq!(
            vs[4..],
            [
                f64::INFINITY,
                f64::NEG_INFINITY,
                0.1,
                1e300,
                -3.75,
                123456.789
            ]
        );
        let again = encode(&got);
        assert_eq!(again.bytes(), &PROMETHEUS_CHUNK[..]);
    }

    /// Prometheus's two quirks of the value window: 64 significant bits are
    /// written as 0, and the leading-zero count is clamped to 31.
    #[test]
    // The binary literals are grouped by field ('11', leading, significant).
    #[allow(clippy::unusual_byte_groupings)]
    fn special_cases_of_the_value_window() {
        // Values whose XOR has no leading or trailing zeros.
        let a = f64::from_bits(0x0000_0000_0000_0000);
        let b = f64::from_bits(0x8000_0000_0000_0001);
        let c = encode(&[Sample { t: 0, v: a }, Sample { t: 1, v: b }]);
        // After t0 (0x00), v0 (8 zero bytes), delta 0x01: '11' 00000 000000 then
        // the 64 bits 0x8000000000000001.
        let stream = &c.bytes()[2 + 1 + 8 + 1..];
        assert_eq!(stream[0], 0b1100_0000);
        assert_eq!(stream[1] >> 3, 0b00000);
        // Leading zeros of 1 ^ 0 = 63, clamped to 31: 20 more bits than needed.
        let c = encode(&[
            Sample { t: 0, v: a },
            Sample {
                t: 1,
                v: f64::from_bits(1),
            },
        ]);
        let stream = &c.bytes()[2 + 1 + 8 + 1..];
        // '11' 11111 then significant = 64 − 31 − 0 = 33 = 100001, then the
        // 33 value bits (0…01).
        assert_eq!(
            u16::from_be_bytes([stream[0], stream[1]]),
            0b11_11111_100001_000
        );
        assert_eq!(decode_xor(c.bytes()).unwrap()[1].v.to_bits(), 1);
    }

    #[test]
    fn special_floats_round_trip_bit_exactly() {
        let vals = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::from_bits(STALE_NAN_BITS),
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::from_bits(STALE_NAN_BITS),
        ];
        let samples: Vec<Sample> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample {
                t: i as i64 * 15_000,
                v,
            })
            .collect();
        let c = encode(&samples);
        assert_eq!(decode_xor(c.bytes()).unwrap(), samples);
    }

    #[test]
    fn delta_of_delta_boundaries_round_trip() {
        let mut t = 0i64;
        let mut delta = 0i64;
        let mut samples = vec![Sample { t, v: 0.0 }];
        for dod in [
            0i64,
            1,
            -1,
            8191,
            8192,
            8193,
            -8191,
            -8192,
            65535,
            65536,
            65537,
            -65535,
            -65536,
            524287,
            524288,
            524289,
            -524287,
            -524288,
            1 << 40,
            -(1 << 39),
        ] {
            delta += dod;
            delta = delta.max(1);
            t += delta;
            samples.push(Sample { t, v: t as f64 });
        }
        let c = encode(&samples);
        assert_eq!(decode_xor(c.bytes()).unwrap(), samples);
    }

    #[test]
    fn empty_and_short_chunks() {
        let c = XorChunk::new();
        assert_eq!(c.bytes(), &[0, 0]);
        assert_eq!(decode_xor(c.bytes()).unwrap(), vec![]);
        assert!(matches!(
            decode_xor(&[0]),
            Err(ChunkError::MissingHeader { len_bytes: 1 })
        ));
        assert!(matches!(
            decode_xor(&[0, 1]),
            Err(ChunkError::UnexpectedEnd { sample: 0, .. })
        ));
    }

    #[test]
    fn truncation_names_the_sample() {
        let samples: Vec<Sample> = (0..120)
            .map(|i| Sample {
                t: i * 15_000 + (i % 3),
                v: (i as f64).sin(),
            })
            .collect();
        let c = encode(&samples);
        let cut = &c.bytes()[..c.bytes().len() / 2];
        let mut it = XorIterator::new(cut);
        let n = it.by_ref().count();
        match it.error() {
            Some(ChunkError::UnexpectedEnd {
                sample,
                num_samples,
            }) => {
                assert_eq!(*sample, n);
                assert_eq!(*num_samples, 120);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn from_bytes_continues_the_stream_exactly() {
        let samples: Vec<Sample> = (0..50)
            .map(|i| Sample {
                t: i * 1000 + (i * i) % 7,
                v: (i % 5) as f64 * 0.25,
            })
            .collect();
        for split in 0..samples.len() {
            let head = encode(&samples[..split]);
            let mut resumed = XorChunk::from_bytes(head.bytes()).unwrap();
            for s in &samples[split..] {
                resumed.append(s.t, s.v);
            }
            assert_eq!(
                decode_xor(resumed.bytes()).unwrap(),
                samples,
                "split {split}"
            );
        }
    }

    fn increasing_samples() -> impl Strategy<Value = Vec<Sample>> {
        let step = prop_oneof![
            4 => 1i64..100_000,
            1 => 1i64..(1 << 40),
            1 => 1i64..i64::MAX / 512,
        ];
        (
            any::<i64>().prop_map(|t| t / 2 - (1 << 61)),
            proptest::collection::vec((step, any::<u64>(), any::<bool>()), 0..300),
        )
            .prop_map(|(start, steps)| {
                let mut t = start;
                let mut prev = 0u64;
                let mut out = Vec::new();
                for (dt, bits, repeat) in steps {
                    // Stop before overflowing rather than wrapping backwards.
                    let Some(nt) = t.checked_add(dt) else { break };
                    t = nt;
                    let bits = if repeat { prev } else { bits };
                    prev = bits;
                    out.push(Sample {
                        t,
                        v: f64::from_bits(bits),
                    });
                }
                out
            })
    }

    proptest! {
        #[test]
        fn round_trips(samples in increasing_samples()) {
            let c = encode(&samples);
            prop_assert_eq!(c.num_samples(), samples.len());
            prop_assert_eq!(decode_xor(c.bytes()).unwrap(), samples.clone());
            let it_samples: Vec<Sample> = c.iter().collect();
            prop_assert_eq!(it_samples, samples);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_xor(&bytes);
            let _ = XorChunk::from_bytes(&bytes);
        }

        #[test]
        fn truncated_chunks_error(samples in increasing_samples(), cut in any::<prop::sample::Index>()) {
            let c = encode(&samples);
            let bytes = c.bytes();
            let len = cut.index(bytes.len());
            if let Ok(got) = decode_xor(&bytes[..len]) {
                prop_assert_eq!(&got[..], &samples[..got.len()]);
            }
        }
    }

    /// Encodes `samples` into chunks where `ChunkCutter` cuts them; returns the
    /// chunks with their first timestamps.
    fn cut_chunks(samples: &[Sample], range_ms: i64) -> Vec<(i64, XorChunk)> {
        let mut cutter = ChunkCutter::new(range_ms);
        let mut out: Vec<(i64, XorChunk)> = Vec::new();
        for s in samples {
            let open_bytes = out.last().map_or(0, |(_, c)| c.bytes().len());
            if cutter.starts_chunk(s.t, open_bytes) {
                out.push((s.t, XorChunk::new()));
            }
            out.last_mut().unwrap().1.append(s.t, s.v);
        }
        out
    }

    fn sizes(chunks: &[(i64, XorChunk)]) -> Vec<usize> {
        chunks.iter().map(|(_, c)| c.num_samples()).collect()
    }

    const TWO_HOURS_MS: i64 = 2 * 3600 * 1000;

    fn every(start_ms: i64, end_ms: i64, step_ms: i64) -> Vec<Sample> {
        (0..)
            .map(|k| start_ms + k * step_ms)
            .take_while(|&t| t < end_ms)
            .map(|t| Sample { t, v: t as f64 })
            .collect()
    }

    /// A whole two-hour range scraped every 15 s: four chunks of 120.
    #[test]
    fn cutter_splits_a_full_range_into_chunks_of_120() {
        let start = 1_700_006_400_000; // a multiple of two hours
        let chunks = cut_chunks(&every(start, start + TWO_HOURS_MS, 15_000), TWO_HOURS_MS);
        assert_eq!(sizes(&chunks), vec![120; 4]);
    }

    /// A range entered 13 min 20 s late: its 427 samples are spread over three
    /// chunks instead of 120+120+120+67. The sizes are those of promtool 2.42's
    /// backfill of the same samples.
    #[test]
    fn cutter_spreads_a_partial_range_like_promtool() {
        let start = 1_700_000_000_000;
        let chunks = cut_chunks(&every(start, 1_700_006_400_000, 15_000), TWO_HOURS_MS);
        assert_eq!(sizes(&chunks), vec![143, 142, 142]);
    }

    /// One sample a minute for half an hour, then one a second: the first chunk's
    /// end was predicted from the slow rate, so it is cut at 240 samples; later
    /// chunks are predicted from the fast rate and split the rest of the range.
    #[test]
    fn cutter_cuts_at_twice_the_target_when_the_rate_rises() {
        let start = 1_700_006_400_000;
        let mut samples = every(start, start + 1_800_001, 60_000);
        samples.extend(every(start + 1_801_000, start + TWO_HOURS_MS, 1_000));
        let mut want = vec![240];
        want.extend([118; 42]);
        want.extend([117; 2]);
        assert_eq!(sizes(&cut_chunks(&samples, TWO_HOURS_MS)), want);
        // promtool's backfill appends a two-hour block through a head whose chunk
        // range is twice the block (so that its appender accepts the whole block),
        // which predicts chunk ends against a four-hour range. With that range the
        // cutter gives exactly promtool 2.42's chunks for these samples: 46 chunks
        // where the block range gives 45.
        let mut promtool = vec![240];
        promtool.extend([117; 44]);
        promtool.push(42);
        assert_eq!(sizes(&cut_chunks(&samples, 2 * TWO_HOURS_MS)), promtool);
    }

    /// Random values with jittered timestamps take about 10 bytes a sample, so
    /// chunks are cut by size before the time prediction: none exceeds the limit.
    #[test]
    fn cutter_keeps_chunks_within_the_byte_limit() {
        let start = 1_700_006_400_000;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut samples = Vec::new();
        let mut t = start;
        while t < start + TWO_HOURS_MS {
            samples.push(Sample {
                t,
                v: (next() % 1_000_000_000) as f64 / 1000.0,
            });
            t += 10_000 + (next() % 10_000) as i64;
        }
        let chunks = cut_chunks(&samples, TWO_HOURS_MS);
        assert!(
            chunks.len() > 4,
            "expected size cuts, got {:?}",
            sizes(&chunks)
        );
        for (_, c) in &chunks {
            assert!(
                c.bytes().len() <= MAX_BYTES_PER_XOR_CHUNK,
                "{} bytes",
                c.bytes().len()
            );
        }
        let all: Vec<Sample> = chunks.iter().flat_map(|(_, c)| c.iter()).collect();
        assert_eq!(all, samples);
    }

    proptest! {
        /// Whatever the timestamps, chunks keep every sample in order, stay within
        /// one range, and respect the sample and byte limits.
        #[test]
        fn cut_chunks_stay_within_a_range_and_the_limits(
            steps in proptest::collection::vec(1i64..400_000, 1..2000),
            range_ms in prop_oneof![Just(TWO_HOURS_MS), 1i64..3_600_000],
        ) {
            let mut t = -3_600_000i64;
            let samples: Vec<Sample> = steps
                .iter()
                .map(|d| {
                    t += d;
                    Sample { t, v: (t % 977) as f64 }
                })
                .collect();
            let chunks = cut_chunks(&samples, range_ms);
            let mut all = Vec::new();
            for (first_t, c) in &chunks {
                let got: Vec<Sample> = c.iter().collect();
                prop_assert_eq!(got[0].t, *first_t);
                let window = first_t.div_euclid(range_ms);
                prop_assert!(got.iter().all(|s| s.t.div_euclid(range_ms) == window));
                prop_assert!(c.num_samples() <= SAMPLES_PER_CHUNK * 2);
                prop_assert!(c.bytes().len() <= MAX_BYTES_PER_XOR_CHUNK);
                all.extend(got);
            }
            prop_assert_eq!(all, samples);
        }

        /// Cutting several ranges at once gives the chunks of cutting each range
        /// alone, which is why compaction may re-cut its input blocks' samples.
        #[test]
        fn cuts_depend_only_on_the_samples_of_their_range(
            steps in proptest::collection::vec(1i64..120_000, 1..3000),
        ) {
            let range_ms = 3_600_000;
            let mut t = 0i64;
            let samples: Vec<Sample> = steps
                .iter()
                .map(|d| {
                    t += d;
                    Sample { t, v: (t % 31) as f64 }
                })
                .collect();
            let whole: Vec<(i64, Vec<u8>)> = cut_chunks(&samples, range_ms)
                .into_iter()
                .map(|(t, c)| (t, c.bytes().to_vec()))
                .collect();
            let mut per_range = Vec::new();
            for part in samples.chunk_by(|a, b| a.t / range_ms == b.t / range_ms) {
                per_range.extend(
                    cut_chunks(part, range_ms)
                        .into_iter()
                        .map(|(t, c)| (t, c.bytes().to_vec())),
                );
            }
            prop_assert_eq!(whole, per_range);
        }
    }
}
