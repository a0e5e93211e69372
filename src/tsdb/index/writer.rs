//! Writes a block index in one forward pass: symbols, then series in label order,
//! then (on `finish`) postings, the postings offset table and the TOC.

use super::{
    ChunkMeta, IndexError, Toc, FORMAT_V2, INDEX_SIZE_MAX_BYTES, MAGIC_INDEX, POSTINGS_ALIGN_BYTES,
    SERIES_ALIGN_BYTES,
};
use crate::encoding::{put_be_u32, put_be_u64, put_uvarint, put_uvarint_str, put_varint};
use crate::labels::Labels;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How far the writer has got; sections must be written in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Only the header is written.
    Start,
    /// The symbol table is open for more symbols.
    Symbols,
    /// The symbol table is closed; series may be added.
    Series,
}

/// Writes an index file. Call `add_symbols` with every string the series use,
/// then `add_series` for each series in label order, then `finish`.
///
/// Postings are collected in memory while series are added (4 bytes per label per
/// series), which bounds the block size a writer can handle by memory, like the
/// symbol list it keeps for lookups.
pub struct IndexWriter {
    path: PathBuf,
    file: BufWriter<File>,
    /// Bytes written so far, i.e. the offset of the next byte.
    pos: u64,
    stage: Stage,
    toc: Toc,
    /// Every symbol, sorted; a symbol's reference is its position here.
    symbols: Vec<String>,
    /// CRC-32C over the encoded symbol strings written so far.
    symbols_crc: u32,
    /// Bytes of encoded symbol strings written so far.
    symbols_len_bytes: u64,
    /// The last series added, to enforce label order.
    last_series: Option<Labels>,
    /// Chunk references must not decrease across the whole index.
    last_chunk_ref: u64,
    /// The ID of every series, in order: the "all postings" list.
    series_ids: Vec<u32>,
    /// (name ref, value ref) → series IDs, in increasing order.
    postings: HashMap<(u32, u32), Vec<u32>>,
    /// Scratch space for encoding one entry.
    buf: Vec<u8>,
}

impl IndexWriter {
    /// Creates (or truncates) the index file at `path` and writes the header.
    pub fn create(path: &Path) -> Result<IndexWriter, IndexError> {
        let file = File::create(path).map_err(|source| IndexError::Io {
            path: path.to_path_buf(),
            op: "create",
            source,
        })?;
        let mut w = IndexWriter {
            path: path.to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, file),
            pos: 0,
            stage: Stage::Start,
            toc: Toc::default(),
            symbols: Vec::new(),
            symbols_crc: 0,
            symbols_len_bytes: 0,
            last_series: None,
            last_chunk_ref: 0,
            series_ids: Vec::new(),
            postings: HashMap::new(),
            buf: Vec::with_capacity(256),
        };
        let mut header = Vec::with_capacity(5);
        put_be_u32(&mut header, MAGIC_INDEX);
        header.push(FORMAT_V2);
        w.write(&header)?;
        Ok(w)
    }

    /// Adds symbols: every label name and value the series will use, sorted and
    /// unique, across all calls. All symbols must come before the first series.
    pub fn add_symbols<'a>(
        &mut self,
        symbols: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), IndexError> {
        if self.stage > Stage::Symbols {
            return Err(self.invalid("symbols added after the first series".to_string()));
        }
        self.start_symbols()?;
        for sym in symbols {
            if let Some(last) = self.symbols.last() {
                if sym <= last.as_str() {
                    return Err(self.invalid(format!("symbol {sym:?} out of order after {last:?}")));
                }
            }
            if self.symbols.len() == u32::MAX as usize {
                return Err(self.too_large("more than 2^32-1 symbols", u32::MAX as u64));
            }
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            put_uvarint_str(&mut buf, sym);
            self.symbols_crc = crc32c::crc32c_append(self.symbols_crc, &buf);
            self.symbols_len_bytes += buf.len() as u64;
            let res = self.write(&buf);
            self.buf = buf;
            res?;
            self.symbols.push(sym.to_string());
        }
        Ok(())
    }

    /// Adds a series. Series must come in strictly increasing label order and
    /// have at least one label; their chunk metas must be in time order without
    /// overlap, and chunk references must not decrease, within the series and
    /// from one series to the next. Returns the series ID (its offset / 16).
    pub fn add_series(&mut self, labels: &Labels, chunks: &[ChunkMeta]) -> Result<u64, IndexError> {
        if self.stage < Stage::Series {
            self.finish_symbols()?;
        }
        if labels.is_empty() {
            return Err(self.invalid("series with no labels".to_string()));
        }
        if let Some(last) = &self.last_series {
            if labels <= last {
                return Err(self.invalid(format!("series {labels} out of order after {last}")));
            }
        }
        let mut last_ref = self.last_chunk_ref;
        for (i, c) in chunks.iter().enumerate() {
            if c.chunk_ref < last_ref {
                return Err(self.invalid(format!(
                    "series {labels}: chunk reference {} below previous {last_ref}",
                    c.chunk_ref
                )));
            }
            last_ref = c.chunk_ref;
            if c.maxt < c.mint {
                return Err(self.invalid(format!(
                    "series {labels}: chunk maxt {} before mint {}",
                    c.maxt, c.mint
                )));
            }
            if i > 0 && c.mint <= chunks[i - 1].maxt {
                return Err(self.invalid(format!(
                    "series {labels}: chunk mint {} not after previous maxt {}",
                    c.mint,
                    chunks[i - 1].maxt
                )));
            }
        }

        self.pad_to(SERIES_ALIGN_BYTES)?;
        let id = self.pos / SERIES_ALIGN_BYTES;
        let id32 = u32::try_from(id)
            .map_err(|_| self.too_large("series IDs beyond 4 bytes", INDEX_SIZE_MAX_BYTES))?;

        let mut body = std::mem::take(&mut self.buf);
        body.clear();
        put_uvarint(&mut body, labels.len() as u64);
        for l in labels.iter() {
            let (Some(name_ref), Some(value_ref)) =
                (self.symbol_ref(l.name), self.symbol_ref(l.value))
            else {
                self.buf = body;
                return Err(self.invalid(format!(
                    "series {labels}: label {}={:?} uses a symbol that was not added",
                    l.name, l.value
                )));
            };
            put_uvarint(&mut body, name_ref as u64);
            put_uvarint(&mut body, value_ref as u64);
            self.postings
                .entry((name_ref, value_ref))
                .or_default()
                .push(id32);
        }
        encode_chunks(&mut body, chunks);

        let mut head = Vec::with_capacity(10);
        put_uvarint(&mut head, body.len() as u64);
        let crc = crc32c::crc32c(&body);
        let res = self
            .write(&head)
            .and_then(|()| self.write(&body))
            .and_then(|()| self.write(&crc.to_be_bytes()));
        self.buf = body;
        res?;

        self.series_ids.push(id32);
        self.last_series = Some(labels.clone());
        self.last_chunk_ref = last_ref;
        Ok(id)
    }

    /// Writes the postings lists, the postings offset table and the TOC, then
    /// flushes and fsyncs the file and its directory.
    pub fn finish(mut self) -> Result<(), IndexError> {
        if self.stage < Stage::Series {
            self.finish_symbols()?;
        }
        self.toc.label_indices = self.pos;
        self.toc.postings = self.pos;

        // Symbol references sort like the symbols, so sorting by reference pair
        // sorts by (name, value); the all-postings key ("", "") sorts first.
        let mut keys: Vec<(u32, u32)> = self.postings.keys().copied().collect();
        keys.sort_unstable();

        let mut table = Vec::new();
        let mut count: u32 = 0;
        let all = std::mem::take(&mut self.series_ids);
        self.write_postings_list("", "", &all, &mut table)?;
        count += 1;
        drop(all);
        for key in keys {
            let ids = self.postings.remove(&key).unwrap_or_default();
            let name = self.symbols[key.0 as usize].clone();
            let value = self.symbols[key.1 as usize].clone();
            self.write_postings_list(&name, &value, &ids, &mut table)?;
            count = count
                .checked_add(1)
                .ok_or_else(|| self.too_large("postings offset table entries", u32::MAX as u64))?;
        }

        self.toc.label_indices_table = self.pos;
        self.toc.postings_table = self.pos;
        let len = u32::try_from(4 + table.len() as u64)
            .map_err(|_| self.too_large("postings offset table", u32::MAX as u64))?;
        let count_bytes = count.to_be_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&count_bytes), &table);
        self.write(&len.to_be_bytes())?;
        self.write(&count_bytes)?;
        self.write(&table)?;
        self.write(&crc.to_be_bytes())?;

        let mut toc = Vec::with_capacity(super::TOC_LEN_BYTES);
        for off in self.toc.to_array() {
            put_be_u64(&mut toc, off);
        }
        let crc = crc32c::crc32c(&toc);
        put_be_u32(&mut toc, crc);
        self.write(&toc)?;

        self.file.flush().map_err(|e| self.io("flush", e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| self.io("fsync", e))?;
        // The file's directory entry must be durable too, or a crash could lose it.
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.io("fsync directory", e))?;
        }
        Ok(())
    }

    /// Appends one postings list, 4-byte aligned, and its entry in `table`.
    fn write_postings_list(
        &mut self,
        name: &str,
        value: &str,
        ids: &[u32],
        table: &mut Vec<u8>,
    ) -> Result<(), IndexError> {
        self.pad_to(POSTINGS_ALIGN_BYTES)?;
        put_uvarint(table, 2);
        put_uvarint_str(table, name);
        put_uvarint_str(table, value);
        put_uvarint(table, self.pos);

        // Assert before writing what readers rely on: IDs strictly increase.
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "postings out of order");
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let body_len = 4 + 4 * ids.len() as u64;
        let len = u32::try_from(body_len)
            .map_err(|_| self.too_large("a postings list", u32::MAX as u64))?;
        put_be_u32(&mut buf, len);
        put_be_u32(&mut buf, ids.len() as u32);
        for &id in ids {
            put_be_u32(&mut buf, id);
        }
        let crc = crc32c::crc32c(&buf[4..]);
        put_be_u32(&mut buf, crc);
        let res = self.write(&buf);
        self.buf = buf;
        res
    }

    fn start_symbols(&mut self) -> Result<(), IndexError> {
        if self.stage == Stage::Start {
            self.toc.symbols = self.pos;
            // The length and count are filled in when the table is closed.
            self.write(&[0u8; 8])?;
            self.stage = Stage::Symbols;
        }
        Ok(())
    }

    fn finish_symbols(&mut self) -> Result<(), IndexError> {
        self.start_symbols()?;
        let count = self.symbols.len() as u32;
        let len = u32::try_from(4 + self.symbols_len_bytes)
            .map_err(|_| self.too_large("symbol table", u32::MAX as u64))?;
        let mut head = Vec::with_capacity(8);
        put_be_u32(&mut head, len);
        put_be_u32(&mut head, count);
        // The CRC covers the count, which is known only now, then the strings.
        let count_crc = crc32c::crc32c(&head[4..]);
        let crc =
            crc32c::crc32c_combine(count_crc, self.symbols_crc, self.symbols_len_bytes as usize);
        self.write(&crc.to_be_bytes())?;
        self.file.flush().map_err(|e| self.io("flush", e))?;
        self.file
            .get_ref()
            .write_all_at(&head, self.toc.symbols)
            .map_err(|e| self.io("write symbol table header", e))?;
        self.toc.series = self.pos;
        self.stage = Stage::Series;
        Ok(())
    }

    fn symbol_ref(&self, s: &str) -> Option<u32> {
        self.symbols
            .binary_search_by(|x| x.as_str().cmp(s))
            .ok()
            .map(|i| i as u32)
    }

    fn pad_to(&mut self, align: u64) -> Result<(), IndexError> {
        let rem = self.pos % align;
        if rem == 0 {
            return Ok(());
        }
        let zeros = [0u8; 16];
        self.write(&zeros[..(align - rem) as usize])
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), IndexError> {
        let end = self.pos + bytes.len() as u64;
        if end > INDEX_SIZE_MAX_BYTES {
            return Err(self.too_large("index file", INDEX_SIZE_MAX_BYTES));
        }
        self.file
            .write_all(bytes)
            .map_err(|e| self.io("write", e))?;
        self.pos = end;
        Ok(())
    }

    fn io(&self, op: &'static str, source: std::io::Error) -> IndexError {
        IndexError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }

    fn invalid(&self, what: String) -> IndexError {
        IndexError::InvalidInput {
            path: self.path.clone(),
            what,
        }
    }

    fn too_large(&self, what: &'static str, limit_bytes: u64) -> IndexError {
        IndexError::TooLarge {
            path: self.path.clone(),
            what,
            limit_bytes,
        }
    }
}

/// Appends the chunk count and chunk metas of a series: the first chunk's times
/// absolutely, later ones relative to the previous chunk's maxt, and references
/// as deltas. Arithmetic wraps, as in Go, so that extreme values cannot panic.
fn encode_chunks(buf: &mut Vec<u8>, chunks: &[ChunkMeta]) {
    put_uvarint(buf, chunks.len() as u64);
    let Some(first) = chunks.first() else {
        return;
    };
    put_varint(buf, first.mint);
    put_uvarint(buf, first.maxt.wrapping_sub(first.mint) as u64);
    put_uvarint(buf, first.chunk_ref);
    let mut prev_maxt = first.maxt;
    let mut prev_ref = first.chunk_ref;
    for c in &chunks[1..] {
        put_uvarint(buf, c.mint.wrapping_sub(prev_maxt) as u64);
        put_uvarint(buf, c.maxt.wrapping_sub(c.mint) as u64);
        put_varint(buf, (c.chunk_ref as i64).wrapping_sub(prev_ref as i64));
        prev_maxt = c.maxt;
        prev_ref = c.chunk_ref;
    }
}
