//! Byte-level encoding shared by the on-disk formats: Go-compatible varints,
//! big-endian integers and a bounds-checked decoder that never panics on bad input.

/// A decoding error: what was being read and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {offset}")]
pub struct DecodeError {
    pub what: &'static str,
    pub offset: usize,
}

/// Appends an unsigned LEB128 varint (Go's `binary.PutUvarint`).
pub fn put_uvarint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Appends a zig-zag signed varint (Go's `binary.PutVarint`).
pub fn put_varint(buf: &mut Vec<u8>, n: i64) {
    put_uvarint(buf, ((n << 1) ^ (n >> 63)) as u64);
}

/// Appends a uvarint length and the bytes of `s`.
pub fn put_uvarint_str(buf: &mut Vec<u8>, s: &str) {
    put_uvarint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

pub fn put_be_u32(buf: &mut Vec<u8>, n: u32) {
    buf.extend_from_slice(&n.to_be_bytes());
}

pub fn put_be_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(&n.to_be_bytes());
}

/// A cursor over a byte slice. Every read checks bounds and returns `DecodeError`.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError {
            what,
            offset: self.pos,
        }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.err("unexpected end of data"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    pub fn be_u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn be_u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut n: u64 = 0;
        let mut shift = 0u32;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            n |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(n);
            }
            shift += 7;
        }
        Err(self.err("varint overflows 64 bits"))
    }

    pub fn varint(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A uvarint length followed by that many bytes of UTF-8.
    pub fn uvarint_str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| self.err("string length too large"))?;
        let b = self.bytes(n)?;
        std::str::from_utf8(b).map_err(|_| self.err("invalid UTF-8 in string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(u in any::<u64>(), i in any::<i64>(), s in ".*") {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, u);
            put_varint(&mut buf, i);
            put_uvarint_str(&mut buf, &s);
            put_be_u32(&mut buf, u as u32);
            put_be_u64(&mut buf, u);
            let mut d = Decoder::new(&buf);
            prop_assert_eq!(d.uvarint().unwrap(), u);
            prop_assert_eq!(d.varint().unwrap(), i);
            prop_assert_eq!(d.uvarint_str().unwrap(), s.as_str());
            prop_assert_eq!(d.be_u32().unwrap(), u as u32);
            prop_assert_eq!(d.be_u64().unwrap(), u);
            prop_assert!(d.is_empty());
        }

        #[test]
        fn truncated_input_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut d = Decoder::new(&bytes);
            let _ = d.uvarint();
            let _ = d.uvarint_str();
            let _ = d.be_u64();
        }
    }

    #[test]
    fn matches_go_encoding() {
        let mut buf = Vec::new();
        put_varint(&mut buf, -1);
        put_uvarint(&mut buf, 300);
        assert_eq!(buf, [0x01, 0xac, 0x02]);
    }
}
