//! Reads a block index through a memory map. Opening checks the header and TOC,
//! walks the symbol table and loads the postings offset table into memory; series
//! and postings lists are decoded (and their CRCs checked) on each access.

use super::{
    ChunkMeta, IndexError, Toc, FORMAT_V2, FORMAT_V3, HEADER_LEN_BYTES, MAGIC_INDEX,
    SERIES_ALIGN_BYTES, TOC_LEN_BYTES,
};
use crate::encoding::{DecodeError, Decoder};
use crate::labels::{Label, Labels, Matcher, LABEL_STRING_LEN_MAX};
use crate::tsdb::postings::{self, PostingsSource};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// One label name's slice of the postings offset table.
#[derive(Debug)]
struct NameEntry {
    name: String,
    /// Range of this name's values in `IndexReader::values`.
    start: usize,
    end: usize,
}

/// One (name, value) entry of the postings offset table. The value string stays in
/// the map; only its position is kept, so a table of millions of values costs
/// 24 bytes per value and no allocations.
#[derive(Debug, Clone, Copy)]
struct ValueEntry {
    value_offset: u64,
    value_len: u32,
    postings_offset: u64,
}

/// A read-only view of an index file.
pub struct IndexReader {
    path: PathBuf,
    mmap: Mmap,
    version: u8,
    toc: Toc,
    /// Offset of the first symbol string (just after the symbol count).
    symbols_start: u64,
    /// Offset of each symbol relative to `symbols_start`, by reference; symbol
    /// tables are at most 4 GiB, so 4 bytes suffice.
    symbol_offsets: Vec<u32>,
    /// Label names in sorted order, including "" (the all-postings key).
    names: Vec<NameEntry>,
    /// Every (name, value) entry, grouped by name, values sorted.
    values: Vec<ValueEntry>,
}

impl std::fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader")
            .field("path", &self.path)
            .field("size_bytes", &self.mmap.len())
            .field("version", &self.version)
            .field("toc", &self.toc)
            .finish_non_exhaustive()
    }
}

impl IndexReader {
    /// Opens and validates the index at `path`.
    pub fn open(path: &Path) -> Result<IndexReader, IndexError> {
        let io = |op, source| IndexError::Io {
            path: path.to_path_buf(),
            op,
            source,
        };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len < (HEADER_LEN_BYTES + TOC_LEN_BYTES) as u64 {
            return Err(IndexError::Corrupt {
                path: path.to_path_buf(),
                offset: 0,
                what: format!("file is {len} bytes, too small for header and TOC"),
            });
        }
        // SAFETY: index files are immutable once written and are only removed,
        // never rewritten in place, so the mapped bytes do not change under us.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| io("mmap", e))?;
        let mut r = IndexReader {
            path: path.to_path_buf(),
            mmap,
            version: 0,
            toc: Toc::default(),
            symbols_start: 0,
            symbol_offsets: Vec::new(),
            names: Vec::new(),
            values: Vec::new(),
        };
        r.read_header()?;
        r.read_toc()?;
        r.read_symbols()?;
        r.read_postings_table()?;
        Ok(r)
    }

    /// The file's format version (2 or 3).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The section offsets from the file's table of contents.
    pub fn toc(&self) -> Toc {
        self.toc
    }

    /// Size of the index file.
    pub fn size_bytes(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// Number of symbols in the symbol table.
    pub fn symbol_count(&self) -> usize {
        self.symbol_offsets.len()
    }

    /// The symbol with reference `r`.
    pub fn symbol(&self, r: u32) -> Result<&str, IndexError> {
        let Some(&rel) = self.symbol_offsets.get(r as usize) else {
            return Err(self.corrupt(self.symbols_start, format!("unknown symbol reference {r}")));
        };
        let start = self.symbols_start + rel as u64;
        let mut d = Decoder::new(&self.mmap[start as usize..]);
        d.uvarint_str().map_err(|e| self.decode_err(start, e))
    }

    /// All symbols, sorted.
    pub fn symbols(&self) -> Result<Vec<String>, IndexError> {
        (0..self.symbol_offsets.len() as u32)
            .map(|r| self.symbol(r).map(str::to_string))
            .collect()
    }

    /// The labels and chunk metas of the series with ID `id` (its offset / 16).
    pub fn series(&self, id: u64) -> Result<(Labels, Vec<ChunkMeta>), IndexError> {
        let start = id
            .checked_mul(SERIES_ALIGN_BYTES)
            .filter(|&o| o >= self.toc.series && o < self.toc.label_indices)
            .ok_or(IndexError::SeriesNotFound {
                path: self.path.clone(),
                id,
            })?;
        let section = &self.mmap[start as usize..self.toc.label_indices as usize];
        let mut d = Decoder::new(section);
        let body_len = d.uvarint().map_err(|e| self.decode_err(start, e))?;
        let body_start = start + d.position() as u64;
        let body_len = usize::try_from(body_len).unwrap_or(usize::MAX);
        let body = d.bytes(body_len).map_err(|_| {
            self.corrupt(
                start,
                format!("series length {body_len} runs past the series section"),
            )
        })?;
        let crc = d.be_u32().map_err(|e| self.decode_err(start, e))?;
        if crc32c::crc32c(body) != crc {
            return Err(self.corrupt(start, "series checksum mismatch".to_string()));
        }
        self.decode_series(body, body_start)
    }

    fn decode_series(
        &self,
        body: &[u8],
        base: u64,
    ) -> Result<(Labels, Vec<ChunkMeta>), IndexError> {
        let err = |e: DecodeError| self.decode_err(base, e);
        let mut d = Decoder::new(body);
        let label_count = d.uvarint().map_err(err)?;
        // Each label takes at least two bytes; this bounds the allocation below.
        if label_count > d.remaining() as u64 / 2 {
            return Err(self.corrupt(
                base,
                format!("label count {label_count} exceeds series size"),
            ));
        }
        let mut labels = Vec::with_capacity(label_count as usize);
        for _ in 0..label_count {
            let at = base + d.position() as u64;
            let name_ref = d.uvarint().map_err(err)?;
            let value_ref = d.uvarint().map_err(err)?;
            let name = self.symbol(symbol_ref(name_ref).ok_or_else(|| {
                self.corrupt(at, format!("symbol reference {name_ref} too large"))
            })?)?;
            let value = self.symbol(symbol_ref(value_ref).ok_or_else(|| {
                self.corrupt(at, format!("symbol reference {value_ref} too large"))
            })?)?;
            // `Labels` holds only sorted, unique names with non-empty values of
            // bounded length; anything else is damage, not a series we can represent.
            if value.is_empty()
                || name.len() > LABEL_STRING_LEN_MAX
                || value.len() > LABEL_STRING_LEN_MAX
            {
                return Err(self.corrupt(at, format!("invalid label {name:?}={value:?}")));
            }
            if let Some(prev) = labels.last().map(|l: &Label| l.name) {
                if prev >= name {
                    return Err(
                        self.corrupt(at, format!("label {name:?} out of order after {prev:?}"))
                    );
                }
            }
            labels.push(Label { name, value });
        }
        let labels = Labels::from_sorted(labels);

        let chunk_count = d.uvarint().map_err(err)?;
        // Each chunk meta takes at least three bytes.
        if chunk_count > d.remaining() as u64 / 3 {
            return Err(self.corrupt(
                base,
                format!("chunk count {chunk_count} exceeds series size"),
            ));
        }
        let mut chunks = Vec::with_capacity(chunk_count as usize);
        let mut prev: Option<ChunkMeta> = None;
        for _ in 0..chunk_count {
            let c = match prev {
                None => {
                    let mint = d.varint().map_err(err)?;
                    let maxt = mint.wrapping_add(d.uvarint().map_err(err)? as i64);
                    let chunk_ref = d.uvarint().map_err(err)?;
                    ChunkMeta {
                        mint,
                        maxt,
                        chunk_ref,
                    }
                }
                Some(p) => {
                    let mint = p.maxt.wrapping_add(d.uvarint().map_err(err)? as i64);
                    let maxt = mint.wrapping_add(d.uvarint().map_err(err)? as i64);
                    let chunk_ref =
                        (p.chunk_ref as i64).wrapping_add(d.varint().map_err(err)?) as u64;
                    ChunkMeta {
                        mint,
                        maxt,
                        chunk_ref,
                    }
                }
            };
            chunks.push(c);
            prev = Some(c);
        }
        Ok((labels, chunks))
    }

    /// The series IDs with label `name` set to `value`, sorted; empty when absent.
    pub fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, IndexError> {
        match self.find_value(name, value)? {
            Some(e) => self.read_postings(e.postings_offset),
            None => Ok(Vec::new()),
        }
    }

    /// Every series ID in the index, sorted.
    pub fn all_postings(&self) -> Result<Vec<u64>, IndexError> {
        match self.find_value("", "")? {
            Some(e) => self.read_postings(e.postings_offset),
            None => Ok(Vec::new()),
        }
    }

    /// All label names, sorted.
    pub fn label_names(&self) -> Result<Vec<String>, IndexError> {
        Ok(self
            .names
            .iter()
            .filter(|n| !n.name.is_empty())
            .map(|n| n.name.clone())
            .collect())
    }

    /// The values of label `name`, sorted; empty when the name is unknown.
    pub fn label_values(&self, name: &str) -> Result<Vec<String>, IndexError> {
        let Some(n) = self.find_name(name) else {
            return Ok(Vec::new());
        };
        self.values[n.start..n.end]
            .iter()
            .map(|e| self.value_str(e).map(str::to_string))
            .collect()
    }

    /// Sorted series IDs whose labels satisfy all `matchers`, with Prometheus's
    /// semantics (see `postings::postings_for_matchers`).
    pub fn postings_for_matchers(&self, matchers: &[Matcher]) -> Result<Vec<u64>, IndexError> {
        postings::postings_for_matchers(self, matchers)
    }

    fn find_name(&self, name: &str) -> Option<&NameEntry> {
        // The empty name is the all-postings key, not a label.
        if name.is_empty() {
            return None;
        }
        self.names
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.names[i])
    }

    fn find_value(&self, name: &str, value: &str) -> Result<Option<ValueEntry>, IndexError> {
        let Ok(i) = self.names.binary_search_by(|n| n.name.as_str().cmp(name)) else {
            return Ok(None);
        };
        let n = &self.names[i];
        let vals = &self.values[n.start..n.end];
        let found = vals.binary_search_by(|e| self.value_bytes(e).cmp(value.as_bytes()));
        Ok(found.ok().map(|j| vals[j]))
    }

    fn value_bytes(&self, e: &ValueEntry) -> &[u8] {
        // Bounds were checked when the table was loaded.
        &self.mmap[e.value_offset as usize..e.value_offset as usize + e.value_len as usize]
    }

    fn value_str(&self, e: &ValueEntry) -> Result<&str, IndexError> {
        std::str::from_utf8(self.value_bytes(e))
            .map_err(|_| self.corrupt(e.value_offset, "label value is not UTF-8".to_string()))
    }

    /// The entries of the postings list at `offset` (big-endian `u32`s), CRC and
    /// length checked but not decoded.
    fn postings_entries(&self, offset: u64) -> Result<&[u8], IndexError> {
        let body = self.section(offset, "postings list")?;
        let mut d = Decoder::new(body);
        let count = d.be_u32().map_err(|e| self.decode_err(offset + 4, e))? as usize;
        if d.remaining() != count.saturating_mul(4) {
            return Err(self.corrupt(
                offset,
                format!(
                    "postings list of {count} entries has {} bytes of entries",
                    d.remaining()
                ),
            ));
        }
        Ok(&body[4..])
    }

    /// Removes from `refs` the series of the postings list at `offset`, searching
    /// the list where it lies instead of decoding it. The order of its entries is
    /// trusted here (the CRC is checked); `read_postings` checks it.
    fn remove_listed_at(&self, offset: u64, refs: &mut Vec<u64>) -> Result<(), IndexError> {
        let entries = self.postings_entries(offset)?;
        let at = |i: usize| {
            let b = &entries[4 * i..4 * i + 4];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64
        };
        postings::remove_listed(refs, entries.len() / 4, at);
        Ok(())
    }

    /// Decodes the postings list at `offset`, checking its CRC and order.
    fn read_postings(&self, offset: u64) -> Result<Vec<u64>, IndexError> {
        let entries = self.postings_entries(offset)?;
        let mut out = Vec::with_capacity(entries.len() / 4);
        let mut prev: Option<u32> = None;
        for chunk in entries.chunks_exact(4) {
            let id = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if prev.is_some_and(|p| p >= id) {
                return Err(
                    self.corrupt(offset, "postings list not in increasing order".to_string())
                );
            }
            prev = Some(id);
            out.push(id as u64);
        }
        Ok(out)
    }

    /// The body of a `len <4b> | body | crc <4b>` section at `offset`, CRC checked.
    fn section(&self, offset: u64, what: &str) -> Result<&[u8], IndexError> {
        let file_len = self.mmap.len() as u64;
        let len_end = offset
            .checked_add(4)
            .filter(|&e| e <= file_len)
            .ok_or_else(|| {
                self.corrupt(offset, format!("{what} starts past the end of the file"))
            })?;
        let o = offset as usize;
        let len = u32::from_be_bytes([
            self.mmap[o],
            self.mmap[o + 1],
            self.mmap[o + 2],
            self.mmap[o + 3],
        ]) as u64;
        let body_end = len_end + len;
        if body_end + 4 > file_len {
            return Err(self.corrupt(
                offset,
                format!("{what} of {len} bytes runs past the end of the file"),
            ));
        }
        let body = &self.mmap[len_end as usize..body_end as usize];
        let b = body_end as usize;
        let want = u32::from_be_bytes([
            self.mmap[b],
            self.mmap[b + 1],
            self.mmap[b + 2],
            self.mmap[b + 3],
        ]);
        if crc32c::crc32c(body) != want {
            return Err(self.corrupt(offset, format!("{what} checksum mismatch")));
        }
        Ok(body)
    }

    fn read_header(&mut self) -> Result<(), IndexError> {
        let m = &self.mmap;
        let magic = u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
        if magic != MAGIC_INDEX {
            return Err(self.corrupt(
                0,
                format!("bad magic number {magic:#010x}, want {MAGIC_INDEX:#010x}"),
            ));
        }
        let version = m[4];
        if version != FORMAT_V2 && version != FORMAT_V3 {
            return Err(IndexError::UnsupportedVersion {
                path: self.path.clone(),
                version,
            });
        }
        self.version = version;
        Ok(())
    }

    fn read_toc(&mut self) -> Result<(), IndexError> {
        let file_len = self.mmap.len();
        let start = file_len - TOC_LEN_BYTES;
        let bytes = &self.mmap[start..];
        let mut d = Decoder::new(bytes);
        let mut offs = [0u64; 6];
        for o in offs.iter_mut() {
            *o = d.be_u64().map_err(|e| self.decode_err(start as u64, e))?;
        }
        let want = d.be_u32().map_err(|e| self.decode_err(start as u64, e))?;
        if crc32c::crc32c(&bytes[..48]) != want {
            return Err(self.corrupt(start as u64, "TOC checksum mismatch".to_string()));
        }
        let toc = Toc {
            symbols: offs[0],
            series: offs[1],
            label_indices: offs[2],
            label_indices_table: offs[3],
            postings: offs[4],
            postings_table: offs[5],
        };
        // Sections are laid out in TOC order; everything below relies on that
        // to bound reads, e.g. the series section ends where label indices start.
        let ordered = [
            HEADER_LEN_BYTES as u64,
            toc.symbols,
            toc.series,
            toc.label_indices,
            toc.postings,
            toc.label_indices_table,
            toc.postings_table,
            start as u64,
        ];
        if ordered.windows(2).any(|w| w[0] > w[1]) {
            return Err(self.corrupt(start as u64, format!("TOC sections out of order: {toc:?}")));
        }
        self.toc = toc;
        Ok(())
    }

    fn read_symbols(&mut self) -> Result<(), IndexError> {
        let off = self.toc.symbols;
        let body = self.section(off, "symbol table")?;
        let base = off + 4;
        let mut d = Decoder::new(body);
        let count = d.be_u32().map_err(|e| self.decode_err(base, e))? as u64;
        // Every symbol takes at least one byte.
        if count > d.remaining() as u64 {
            return Err(self.corrupt(off, format!("symbol count {count} exceeds table size")));
        }
        let mut offsets = Vec::with_capacity(count as usize);
        for _ in 0..count {
            offsets.push((d.position() - 4) as u32);
            d.uvarint_str().map_err(|e| self.decode_err(base, e))?;
        }
        self.symbols_start = base + 4;
        self.symbol_offsets = offsets;
        Ok(())
    }

    fn read_postings_table(&mut self) -> Result<(), IndexError> {
        let off = self.toc.postings_table;
        let body = self.section(off, "postings offset table")?;
        let base = off + 4;
        let err = |e: DecodeError| IndexError::Corrupt {
            path: self.path.clone(),
            offset: base + e.offset as u64,
            what: format!("postings offset table: {}", e.what),
        };
        let mut d = Decoder::new(body);
        let count = d.be_u32().map_err(err)? as u64;
        // Each entry takes at least four bytes.
        if count > d.remaining() as u64 / 4 {
            return Err(self.corrupt(
                off,
                format!("postings offset table count {count} exceeds its size"),
            ));
        }
        let mut names: Vec<NameEntry> = Vec::new();
        let mut values: Vec<ValueEntry> = Vec::with_capacity(count as usize);
        let mut prev_value: &[u8] = &[];
        for _ in 0..count {
            let at = base + d.position() as u64;
            let keys = d.uvarint().map_err(err)?;
            if keys != 2 {
                return Err(
                    self.corrupt(at, format!("postings offset entry has {keys} keys, want 2"))
                );
            }
            let name = d.uvarint_str().map_err(err)?;
            let value_len = d.uvarint().map_err(err)?;
            let value_offset = base + d.position() as u64;
            let value = d
                .bytes(usize::try_from(value_len).unwrap_or(usize::MAX))
                .map_err(err)?;
            std::str::from_utf8(value)
                .map_err(|_| self.corrupt(value_offset, "label value is not UTF-8".to_string()))?;
            let postings_offset = d.uvarint().map_err(err)?;

            let same_name = names.last().is_some_and(|n| n.name == name);
            if same_name {
                if value <= prev_value {
                    return Err(
                        self.corrupt(at, format!("postings offset table not sorted at {name:?}"))
                    );
                }
            } else {
                if names.last().is_some_and(|n| n.name.as_str() >= name) {
                    return Err(
                        self.corrupt(at, format!("postings offset table not sorted at {name:?}"))
                    );
                }
                names.push(NameEntry {
                    name: name.to_string(),
                    start: values.len(),
                    end: values.len(),
                });
            }
            prev_value = value;
            values.push(ValueEntry {
                value_offset,
                value_len: value.len() as u32,
                postings_offset,
            });
            if let Some(n) = names.last_mut() {
                n.end = values.len();
            }
        }
        names.shrink_to_fit();
        values.shrink_to_fit();
        self.names = names;
        self.values = values;
        Ok(())
    }

    fn corrupt(&self, offset: u64, what: String) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            offset,
            what,
        }
    }

    fn decode_err(&self, base: u64, e: DecodeError) -> IndexError {
        self.corrupt(base + e.offset as u64, e.what.to_string())
    }
}

fn symbol_ref(r: u64) -> Option<u32> {
    u32::try_from(r).ok()
}

impl PostingsSource for IndexReader {
    type Error = IndexError;

    fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, IndexError> {
        IndexReader::postings(self, name, value)
    }

    fn all_postings(&self) -> Result<Vec<u64>, IndexError> {
        IndexReader::all_postings(self)
    }

    fn label_values(&self, name: &str) -> Result<Vec<String>, IndexError> {
        IndexReader::label_values(self, name)
    }

    fn remove_postings(
        &self,
        name: &str,
        value: &str,
        refs: &mut Vec<u64>,
    ) -> Result<(), IndexError> {
        match self.find_value(name, value)? {
            Some(e) => self.remove_listed_at(e.postings_offset, refs),
            None => Ok(()),
        }
    }

    fn remove_values(
        &self,
        name: &str,
        reject: &mut dyn FnMut(&str) -> bool,
        refs: &mut Vec<u64>,
    ) -> Result<(), IndexError> {
        let Some(n) = self.find_name(name) else {
            return Ok(());
        };
        for e in &self.values[n.start..n.end] {
            if refs.is_empty() {
                break;
            }
            if reject(self.value_str(e)?) {
                self.remove_listed_at(e.postings_offset, refs)?;
            }
        }
        Ok(())
    }

    fn postings_for_values(
        &self,
        name: &str,
        keep: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Vec<Vec<u64>>, IndexError> {
        let Some(n) = self.find_name(name) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in &self.values[n.start..n.end] {
            if keep(self.value_str(e)?) {
                out.push(self.read_postings(e.postings_offset)?);
            }
        }
        Ok(out)
    }
}
