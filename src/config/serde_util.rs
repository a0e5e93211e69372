//! Serde adapters for Prometheus's duration (`15s`) and size (`10MB`) values.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration in milliseconds, written in Prometheus's syntax (`1m30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DurationMs(pub i64);

/// A byte size, written in Prometheus's syntax (`10MB`); 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteSize(pub u64);

/// Accepts a string, or a bare integer (YAML `0`), and hands its text to `parse`.
struct TextVisitor<F>(&'static str, F);

impl<'de, T, F: Fn(&str) -> Result<T, String>> Visitor<'de> for TextVisitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.1)(&v.to_string()).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.1)(&v.to_string()).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for DurationMs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor("a duration such as 15s", |s: &str| {
            crate::config_units::parse_duration_ms(s).map(DurationMs)
        }))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor("a size such as 10MB", |s: &str| {
            crate::config_units::parse_bytes(s).map(ByteSize)
        }))
    }
}

impl fmt::Display for DurationMs {
    /// Prometheus's canonical spelling (`1m30s`, `0s`).
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms < 0 {
            f.write_str("-")?;
            ms = -ms;
        }
        let units: [(&str, i64); 7] = [
            ("y", 365 * 86_400_000),
            ("w", 7 * 86_400_000),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
            ("ms", 1),
        ];
        for (u, n) in units {
            if ms >= n {
                write!(f, "{}{u}", ms / n)?;
                ms %= n;
            }
        }
        Ok(())
    }
}

/// Reads a missing value or YAML `null` (a key followed only by comments) as the
/// empty default, as Go's YAML decoder does for lists and maps.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
