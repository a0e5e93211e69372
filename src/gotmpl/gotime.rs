//! Go's `time.Time` and `time.Duration` as template values: how they print
//! (`Time.String`, `Duration.String`), Go's layout-based `Format`, and the
//! methods templates commonly call on them.

use super::builtins::{arg_str, want_args};
use super::{Object, Value};
use jiff::{tz::TimeZone, Timestamp, Zoned};
use std::fmt::Write as _;

/// A `time.Time`.
#[derive(Clone, Debug)]
pub struct GoTime(pub Zoned);

impl GoTime {
    /// A UTC time.
    pub fn utc(t: Timestamp) -> GoTime {
        GoTime(t.to_zoned(TimeZone::UTC))
    }

    /// The time as a template value.
    pub fn value(t: Timestamp) -> Value {
        Value::object(GoTime::utc(t))
    }
}

/// Go's `Time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST`.
pub fn time_string(z: &Zoned) -> String {
    format_layout(z, "2006-01-02 15:04:05.999999999 -0700 MST")
}

impl Object for GoTime {
    fn type_name(&self) -> &str {
        "time.Time"
    }

    fn get(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let z = &self.0;
        let no_args = |v: Value| want_args(name, args, 0).map(|_| v);
        Some(match name {
            "Unix" => no_args(Value::Int(z.timestamp().as_second())),
            "UnixMilli" => no_args(Value::Int(z.timestamp().as_millisecond())),
            "UnixNano" => no_args(Value::Int(z.timestamp().as_nanosecond() as i64)),
            "UTC" => no_args(GoTime::value(z.timestamp())),
            "String" => no_args(Value::String(time_string(z))),
            "Year" => no_args(Value::Int(z.year() as i64)),
            "Day" => no_args(Value::Int(z.day() as i64)),
            "Hour" => no_args(Value::Int(z.hour() as i64)),
            "Minute" => no_args(Value::Int(z.minute() as i64)),
            "Second" => no_args(Value::Int(z.second() as i64)),
            "IsZero" => no_args(Value::Bool(z.timestamp() == go_zero_time())),
            "Format" => want_args(name, args, 1)
                .and_then(|_| arg_str(&args[0]).map(|l| Value::String(format_layout(z, l)))),
            _ => return None,
        })
    }

    fn underlying(&self) -> Value {
        Value::NoValue
    }

    fn display(&self) -> Option<String> {
        Some(time_string(&self.0))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// Go's zero `time.Time` (year 1), which Alertmanager uses for "no end".
pub fn go_zero_time() -> Timestamp {
    Timestamp::from_second(-62_135_596_800).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A `time.Duration` in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct GoDuration(pub i64);

impl Object for GoDuration {
    fn type_name(&self) -> &str {
        "time.Duration"
    }

    fn get(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let no_args = |v: Value| want_args(name, args, 0).map(|_| v);
        let ns = self.0 as f64;
        Some(match name {
            "Seconds" => no_args(Value::Float(ns / 1e9)),
            "Minutes" => no_args(Value::Float(ns / 6e10)),
            "Hours" => no_args(Value::Float(ns / 3.6e12)),
            "Milliseconds" => no_args(Value::Int(self.0 / 1_000_000)),
            "String" => no_args(Value::String(duration_string(self.0))),
            _ => return None,
        })
    }

    fn underlying(&self) -> Value {
        Value::Int(self.0)
    }

    fn display(&self) -> Option<String> {
        Some(duration_string(self.0))
    }
}

/// Go's `Duration.String()`: `72h3m0.5s`, `1.5ms`, `0s`.
pub fn duration_string(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    let frac = |v: u64, unit: u64| -> String {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let s = format!("{rest:0digits$}");
        format!("{whole}.{}", s.trim_end_matches('0'))
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 1_000));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 1_000_000));
    }
    let secs_part = u % 60_000_000_000;
    let mins = u / 60_000_000_000;
    let mut out = String::from(sign);
    if mins >= 60 {
        let _ = write!(out, "{}h{}m", mins / 60, mins % 60);
    } else if mins > 0 {
        let _ = write!(out, "{mins}m");
    }
    let _ = write!(out, "{}s", frac(secs_part, 1_000_000_000));
    out
}

const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Formats `z` with a Go layout (`2006-01-02T15:04:05Z07:00` style), as
/// `time.Time.Format` does for the standard elements.
pub fn format_layout(z: &Zoned, layout: &str) -> String {
    let mut out = String::new();
    let b = layout.as_bytes();
    let mut i = 0;
    let month = z.month() as usize;
    let wday = z.weekday().to_sunday_zero_offset() as usize;
    let hour = z.hour() as i64;
    let offset_s = z.offset().seconds();
    let rest = |i: usize| &layout[i..];
    while i < b.len() {
        let r = rest(i);
        let mut put = |s: &str, n: usize| {
            out.push_str(s);
            n
        };
        let n = if r.starts_with("January") {
            put(LONG_MONTHS[month - 1], 7)
        } else if r.starts_with("Jan") {
            put(&LONG_MONTHS[month - 1][..3], 3)
        } else if r.starts_with("Monday") {
            put(LONG_DAYS[wday], 6)
        } else if r.starts_with("Mon") {
            put(&LONG_DAYS[wday][..3], 3)
        } else if r.starts_with("MST") {
            let info = z.time_zone().to_offset_info(z.timestamp());
            let abbr = info.abbreviation().to_string();
            put(&abbr, 3)
        } else if r.starts_with("2006") {
            put(&format!("{:04}", z.year()), 4)
        } else if r.starts_with("2") {
            put(&z.day().to_string(), 1)
        } else if r.starts_with("01") {
            put(&format!("{month:02}"), 2)
        } else if r.starts_with("02") {
            put(&format!("{:02}", z.day()), 2)
        } else if r.starts_with("03") {
            put(&format!("{:02}", hour12(hour)), 2)
        } else if r.starts_with("04") {
            put(&format!("{:02}", z.minute()), 2)
        } else if r.starts_with("05") {
            put(&format!("{:02}", z.second()), 2)
        } else if r.starts_with("06") {
            put(&format!("{:02}", z.year().rem_euclid(100)), 2)
        } else if r.starts_with("002") {
            put(&format!("{:03}", z.day_of_year()), 3)
        } else if r.starts_with("15") {
            put(&format!("{hour:02}"), 2)
        } else if r.starts_with("1") {
            put(&month.to_string(), 1)
        } else if r.starts_with("__2") {
            put(&format!("{:>3}", z.day_of_year()), 3)
        } else if r.starts_with("_2") {
            put(&format!("{:>2}", z.day()), 2)
        } else if r.starts_with("3") {
            put(&hour12(hour).to_string(), 1)
        } else if r.starts_with("4") {
            put(&z.minute().to_string(), 1)
        } else if r.starts_with("5") {
            put(&z.second().to_string(), 1)
        } else if r.starts_with("PM") {
            put(if hour >= 12 { "PM" } else { "AM" }, 2)
        } else if r.starts_with("pm") {
            put(if hour >= 12 { "pm" } else { "am" }, 2)
        } else if let Some((len, z_form, colon, secs)) = tz_token(r) {
            if z_form && offset_s == 0 {
                put("Z", len)
            } else {
                put(&format_offset(offset_s, colon, secs, len), len)
            }
        } else if let Some((len, all_nines)) = frac_token(r) {
            let digits = len - 1;
            let ns = format!("{:09}", z.subsec_nanosecond());
            let mut f = ns[..digits.min(9)].to_string();
            if all_nines {
                f = f.trim_end_matches('0').to_string();
                if f.is_empty() {
                    len
                } else {
                    out.push(r.as_bytes()[0] as char);
                    out.push_str(&f);
                    len
                }
            } else {
                out.push(r.as_bytes()[0] as char);
                out.push_str(&f);
                len
            }
        } else {
            let c = r.chars().next().unwrap_or(' ');
            out.push(c);
            c.len_utf8()
        };
        i += n;
    }
    out
}

fn hour12(h: i64) -> i64 {
    match h % 12 {
        0 => 12,
        x => x,
    }
}

/// A zone offset element: its length, whether it is a `Z` form, whether it has
/// colons, and whether it shows seconds.
fn tz_token(r: &str) -> Option<(usize, bool, bool, bool)> {
    for (tok, colon, secs) in [
        ("070000", false, true),
        ("07:00:00", true, true),
        ("0700", false, false),
        ("07:00", true, false),
        ("07", false, false),
    ] {
        if r.strip_prefix('-').is_some_and(|x| x.starts_with(tok)) {
            return Some((tok.len() + 1, false, colon, secs));
        }
        if r.strip_prefix('Z').is_some_and(|x| x.starts_with(tok)) {
            return Some((tok.len() + 1, true, colon, secs));
        }
    }
    None
}

fn format_offset(offset_s: i32, colon: bool, secs: bool, len: usize) -> String {
    let sign = if offset_s < 0 { '-' } else { '+' };
    let a = offset_s.unsigned_abs();
    let (h, m, s) = (a / 3600, (a / 60) % 60, a % 60);
    // `-07` shows hours only.
    if len == 3 {
        return format!("{sign}{h:02}");
    }
    let sep = if colon { ":" } else { "" };
    let mut out = format!("{sign}{h:02}{sep}{m:02}");
    if secs {
        let _ = write!(out, "{sep}{s:02}");
    }
    out
}

/// A fractional-seconds element (`.000`, `.999`, `,000`): its length and
/// whether it is the trailing-zeros-dropped form.
fn frac_token(r: &str) -> Option<(usize, bool)> {
    let b = r.as_bytes();
    if !matches!(b.first(), Some(b'.') | Some(b',')) {
        return None;
    }
    let d = *b.get(1)?;
    if d != b'0' && d != b'9' {
        return None;
    }
    let mut j = 1;
    while b.get(j) == Some(&d) {
        j += 1;
    }
    // Only when not followed by another digit.
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((j, d == b'9'))
}
