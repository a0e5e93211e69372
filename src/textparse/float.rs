//! Number syntax shared by both text formats: Go's `strconv.ParseFloat` grammar as
//! Prometheus restricts it, and Prometheus's canonical spelling of `le`/`quantile`.

use std::fmt::Write;

/// Why a number did not parse. The parser turns this into a message that names
/// the offending text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatError {
    /// Not a number in Go's float syntax.
    Syntax,
    /// Hexadecimal floats (`0x1p-3`) and digit separators (`1_000`): Go accepts
    /// them, Prometheus deliberately keeps to the pre-Go-1.13 syntax.
    Unsupported,
    /// Finite syntax whose magnitude does not fit in an f64; Go reports a range
    /// error rather than silently returning an infinity.
    OutOfRange,
}

impl FloatError {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            FloatError::Syntax => "not a number",
            FloatError::Unsupported => "hexadecimal floats and '_' are not supported",
            FloatError::OutOfRange => "out of range for a 64-bit float",
        }
    }
}

/// Parses a sample value or timestamp the way Prometheus does: Go's
/// `strconv.ParseFloat(s, 64)` after rejecting `p`, `P` and `_`.
///
/// That means: an optional sign, decimal digits with at most one `.`, an optional
/// exponent; or `Inf`/`Infinity` (any case, optional sign); or `NaN` (any case, no
/// sign). Anything else, including surrounding whitespace, is an error.
pub(crate) fn parse_go_float(s: &[u8]) -> Result<f64, FloatError> {
    if s.iter().any(|&c| matches!(c, b'p' | b'P' | b'_')) {
        return Err(FloatError::Unsupported);
    }
    parse_go_float_syntax(s)
}

/// `strconv.ParseFloat` without Prometheus's extra restriction (hexadecimal floats
/// are still unsupported here; they only matter for label normalisation, where an
/// unparsable value is simply left alone).
fn parse_go_float_syntax(s: &[u8]) -> Result<f64, FloatError> {
    let (negative, digits) = match s.first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    // Fast path for the most common sample values: small unsigned integers are
    // exact in an f64 and need no general-purpose conversion.
    if !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_digit) {
        let n = digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        let v = n as f64;
        return Ok(if negative { -v } else { v });
    }
    if let Some(v) = short_decimal(digits) {
        return Ok(if negative { -v } else { v });
    }
    if let Some(v) = parse_special(s) {
        return Ok(v);
    }
    if !is_decimal_float(digits) {
        return Err(FloatError::Syntax);
    }
    // The slice is ASCII and matches the decimal grammar, which Rust's parser
    // accepts with the same meaning (correctly rounded).
    let text = std::str::from_utf8(s).map_err(|_| FloatError::Syntax)?;
    let v: f64 = text.parse().map_err(|_| FloatError::Syntax)?;
    if v.is_infinite() {
        return Err(FloatError::OutOfRange);
    }
    Ok(v)
}

/// Exact powers of ten up to 10^15.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// An unsigned decimal with a point and at most 15 digits in all (`57.85`,
/// `0.025`, `3.`): the digits as an integer, which is exact in an f64, divided by
/// an exact power of ten. One correctly rounded division gives the correctly
/// rounded value (Clinger's fast path, the first thing a general parser tries, but
/// without its scanning and checks). None for anything else.
fn short_decimal(digits: &[u8]) -> Option<f64> {
    if digits.len() > 16 {
        return None;
    }
    let mut n = 0u64;
    let mut point = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => n = n * 10 + u64::from(c - b'0'),
            b'.' if point.is_none() => point = Some(i),
            _ => return None,
        }
    }
    let point = point?;
    let frac_len = digits.len() - point - 1;
    // A lone point is not a number; more than 15 digits may not be exact.
    if digits.len() < 2 || digits.len() - 1 > 15 {
        return None;
    }
    Some(n as f64 / POW10[frac_len])
}

/// `Inf`, `Infinity` with an optional sign and `NaN` without one, any case, as Go's
/// `special` accepts them. NaN is returned with Prometheus's canonical bit pattern.
fn parse_special(s: &[u8]) -> Option<f64> {
    let (sign, rest) = match s.first() {
        Some(b'+') => (1.0, &s[1..]),
        Some(b'-') => (-1.0, &s[1..]),
        _ => {
            if s.eq_ignore_ascii_case(b"nan") {
                return Some(normal_nan());
            }
            (1.0, s)
        }
    };
    if rest.eq_ignore_ascii_case(b"inf") || rest.eq_ignore_ascii_case(b"infinity") {
        return Some(sign * f64::INFINITY);
    }
    None
}

/// `digits ['.' digits*] | '.' digits`, then an optional `e`/`E` exponent with an
/// optional sign and at least one digit. The sign of the mantissa is already gone.
fn is_decimal_float(s: &[u8]) -> bool {
    let mut i = 0;
    let mut mantissa_digits = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
        mantissa_digits += 1;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
            mantissa_digits += 1;
        }
    }
    if mantissa_digits == 0 {
        return false;
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == s.len()
}

/// The NaN bit pattern Prometheus stores for every parsed NaN (`value.NormalNaN`),
/// so that no scraped value can ever collide with the stale marker.
pub const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

/// A NaN with [`NORMAL_NAN_BITS`].
pub fn normal_nan() -> f64 {
    f64::from_bits(NORMAL_NAN_BITS)
}

/// Appends `f` spelled as Prometheus's `FormatOpenMetricsFloat` spells it: Go's
/// shortest `%g` (`strconv.FormatFloat(f, 'g', -1, 64)`), with `.0` appended when
/// the result has neither a `.` nor an exponent, and `NaN`, `+Inf`, `-Inf`.
pub(crate) fn push_openmetrics_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if f == 0.0 {
        // Go's formatter keeps the sign of -0, but Prometheus hard-codes both zeros.
        out.push_str("0.0");
        return;
    }
    // Rust's `{:e}` yields the same shortest digits as Go, as `d.ddde<exp>`.
    let start = out.len();
    let _ = write!(out, "{f:e}");
    let e_at = match out[start..].find('e') {
        Some(i) => start + i,
        None => return,
    };
    let exp: i32 = out[e_at + 1..].parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        // Go switches to plain decimal notation here. Respell the same shortest
        // digits without an exponent (formatting once is half the cost of twice).
        let negative = f < 0.0;
        let mut digits = [0u8; 32];
        let mut count = 0;
        for &c in &out.as_bytes()[start..e_at] {
            if c.is_ascii_digit() && count < digits.len() {
                digits[count] = c;
                count += 1;
            }
        }
        let digits = &digits[..count];
        out.truncate(start);
        if negative {
            out.push('-');
        }
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            push_ascii(out, digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                push_ascii(out, digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                push_ascii(out, &digits[..int_len]);
                out.push('.');
                push_ascii(out, &digits[int_len..]);
            }
        }
    } else {
        // Go writes the exponent with a sign and at least two digits.
        out.truncate(e_at + 1);
        out.push(if exp < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", exp.unsigned_abs());
    }
}

fn push_ascii(out: &mut String, digits: &[u8]) {
    for &d in digits {
        out.push(char::from(d));
    }
}

/// Rewrites an `le` or `quantile` label value into its canonical spelling when it
/// is a number (`"1"` → `"1.0"`, `"1e3"` → `"1000.0"`), as Prometheus 3 does for
/// classic histograms and summaries. Writes into `out` and returns whether the
/// spelling changed; `out` is left untouched otherwise.
pub(crate) fn normalize_float_label(raw: &str, out: &mut String) -> bool {
    let Ok(f) = parse_go_float_syntax(raw.as_bytes()) else {
        return false;
    };
    let start = out.len();
    push_openmetrics_float(out, f);
    if out[start..] == *raw {
        out.truncate(start);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The short-decimal path gives what the general parser gives.
        #[test]
        fn short_decimals_match_the_general_parser(int in 0u64..10_000_000, frac in 0u64..100_000_000, frac_len in 0usize..9, neg: bool) {
            let frac = format!("{frac:08}");
            let text = format!("{}{int}.{}", if neg { "-" } else { "" }, &frac[..frac_len]);
            let want: f64 = text.parse().unwrap();
            let got = parse_go_float(text.as_bytes()).unwrap();
            proptest::prop_assert_eq!(got.to_bits(), want.to_bits(), "{}", text);
        }
    }

    #[test]
    fn short_decimals_edges() {
        for (text, want) in [
            ("0.5", 0.5f64),
            ("-0.0", -0.0),
            ("3.", 3.0),
            (".25", 0.25),
            ("57.85", 57.85),
            ("123456789.012345", 123456789.012345),
            ("0.000000000000001", 1e-15),
            ("1234567890.1234567", 1234567890.1234567),
        ] {
            let got = parse_go_float(text.as_bytes()).unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{text}");
        }
        assert!(parse_go_float(b".").is_err());
        assert!(parse_go_float(b"1.2.3").is_err());
        assert!(parse_go_float(b"-.").is_err());
    }

    #[test]
    fn accepts_go_float_syntax() {
        let ok: &[(&str, f64)] = &[
            ("1", 1.0),
            ("-1", -1.0),
            ("+1", 1.0),
            ("1.5", 1.5),
            ("1.", 1.0),
            (".5", 0.5),
            ("1e3", 1000.0),
            ("1E+3", 1000.0),
            ("1e-3", 0.001),
            ("4.9351e-05", 4.9351e-05),
            ("+Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("inf", f64::INFINITY),
            ("Infinity", f64::INFINITY),
            ("-INFINITY", f64::NEG_INFINITY),
            ("1e-400", 0.0),
            ("123456789012345678901234567890", 1.2345678901234568e29),
            ("007", 7.0),
        ];
        for (s, want) in ok {
            assert_eq!(parse_go_float(s.as_bytes()), Ok(*want), "{s}");
        }
        for s in ["NaN", "nan", "NAN"] {
            let v = parse_go_float(s.as_bytes()).unwrap();
            assert_eq!(v.to_bits(), NORMAL_NAN_BITS, "{s}");
        }
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        let bad: &[(&str, FloatError)] = &[
            ("", FloatError::Syntax),
            (".", FloatError::Syntax),
            ("1e", FloatError::Syntax),
            ("e5", FloatError::Syntax),
            ("1..2", FloatError::Syntax),
            ("true", FloatError::Syntax),
            ("+NaN", FloatError::Syntax),
            ("-nan", FloatError::Syntax),
            ("infin", FloatError::Syntax),
            ("1 ", FloatError::Syntax),
            ("0x10", FloatError::Syntax),
            ("1_000", FloatError::Unsupported),
            ("0x1p-3", FloatError::Unsupported),
            ("0x1P-3", FloatError::Unsupported),
            ("1e400", FloatError::OutOfRange),
            ("-1e400", FloatError::OutOfRange),
        ];
        for (s, want) in bad {
            assert_eq!(parse_go_float(s.as_bytes()), Err(*want), "{s:?}");
        }
    }

    #[test]
    fn formats_like_go_shortest_g() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "0.0"),
            (-1.0, "-1.0"),
            (0.25, "0.25"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456.0, "123456.0"),
            (100.0, "100.0"),
            (-2.5, "-2.5"),
            (0.005, "0.005"),
            (-0.00012, "-0.00012"),
            (999999.5, "999999.5"),
            (12.0625, "12.0625"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (2.5e-7, "2.5e-07"),
            (1e100, "1e+100"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (f, want) in cases {
            let mut s = String::new();
            push_openmetrics_float(&mut s, *f);
            assert_eq!(s, *want, "{f}");
        }
    }

    proptest::proptest! {
        #[test]
        fn openmetrics_spelling_round_trips(f in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL) {
            let mut s = String::new();
            push_openmetrics_float(&mut s, f);
            proptest::prop_assert_eq!(parse_go_float(s.as_bytes()), Ok(f));
            let exp = format!("{f:e}").split_once('e').map(|(_, e)| e.parse::<i32>().unwrap()).unwrap();
            if (-4..6).contains(&exp) {
                // The plain decimal form has the same digits as Rust's shortest one.
                let mut plain = format!("{f}");
                if !plain.contains('.') {
                    plain.push_str(".0");
                }
                proptest::prop_assert_eq!(s, plain);
            } else {
                proptest::prop_assert!(s.contains("e+") || s.contains("e-"), "{}", s);
            }
        }
    }

    #[test]
    fn normalizes_only_when_spelling_changes() {
        let mut out = String::new();
        assert!(!normalize_float_label("0.5", &mut out));
        assert!(!normalize_float_label("+Inf", &mut out));
        assert!(!normalize_float_label("foo", &mut out));
        assert_eq!(out, "");
        assert!(normalize_float_label("1", &mut out));
        assert_eq!(out, "1.0");
        out.clear();
        assert!(normalize_float_label("inf", &mut out));
        assert_eq!(out, "+Inf");
    }
}
