//! Go's `strconv.FormatFloat` for `float64`, which Prometheus uses wherever it
//! writes a number as text: the API's sample values (`'f'`, shortest), the text
//! exposition of `/federate` and promtool's output (`'g'`, shortest), and the
//! `%v`, `%g`, `%e` and `%f` verbs of templates and messages.
//!
//! The shortest digits come from ryu. Where a value lies exactly halfway between
//! two shortest decimals, ryu and Go both pick the one with the even last digit,
//! while Rust's `{}` and `{:e}` sometimes pick the other (about 1% of values with
//! 16 or 17 significant digits). With a precision, Rust's `{:.N}` and `{:.Ne}`
//! round the exact binary value half to even, as Go does, so those digits come
//! from them.

/// The decimal digits of a finite float: `0.d₁d₂…dₙ × 10^point`, no trailing
/// zeros (no digits at all for zero).
struct Digits {
    neg: bool,
    digits: Vec<u8>,
    point: i32,
}

impl Digits {
    /// The shortest digits that read back as `v`.
    fn shortest(v: f64) -> Digits {
        let mut buf = ryu::Buffer::new();
        Digits::parse(buf.format_finite(v))
    }

    /// `v` rounded to `n` (at least 1) significant digits.
    fn rounded(v: f64, n: usize) -> Digits {
        Digits::parse(&format!("{:.*e}", n.max(1) - 1, v))
    }

    /// Reads "-1.25e-7", "0.001", "123.0" or "1e21" (ryu's and Rust's forms).
    fn parse(s: &str) -> Digits {
        let (neg, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (mantissa, exp) = match s.split_once(['e', 'E']) {
            Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
            None => (s, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all = int.bytes().chain(frac.bytes());
        let leading = all.clone().take_while(|&b| b == b'0').count();
        let mut digits: Vec<u8> = all.skip(leading).collect();
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        let point = if digits.is_empty() {
            0
        } else {
            int.len() as i32 + exp - leading as i32
        };
        Digits { neg, digits, point }
    }

    /// `%e` with `prec` digits after the point.
    fn push_e(&self, out: &mut String, prec: usize, upper: bool) {
        if self.neg {
            out.push('-');
        }
        out.push(self.digits.first().map_or('0', |&d| d as char));
        if prec > 0 {
            out.push('.');
            for i in 1..=prec {
                out.push(self.digits.get(i).map_or('0', |&d| d as char));
            }
        }
        out.push(if upper { 'E' } else { 'e' });
        let exp = if self.digits.is_empty() {
            0
        } else {
            self.point - 1
        };
        out.push(if exp < 0 { '-' } else { '+' });
        let exp = exp.unsigned_abs();
        if exp < 10 {
            out.push('0');
        }
        out.push_str(&exp.to_string());
    }

    /// `%f` with `prec` digits after the point.
    fn push_f(&self, out: &mut String, prec: usize) {
        if self.neg {
            out.push('-');
        }
        if self.point > 0 {
            let point = self.point as usize;
            for i in 0..point {
                out.push(self.digits.get(i).map_or('0', |&d| d as char));
            }
        } else {
            out.push('0');
        }
        if prec > 0 {
            out.push('.');
            for i in 0..prec as i64 {
                let j = self.point as i64 + i;
                let d = usize::try_from(j).ok().and_then(|j| self.digits.get(j));
                out.push(d.map_or('0', |&d| d as char));
            }
        }
    }
}

/// Go's `strconv.FormatFloat(v, verb, prec, 64)` for the verbs `e`, `E`, `f`,
/// `F`, `g` and `G` (any other is taken as `g`); `None` is Go's precision -1, the
/// fewest digits that read back as `v`. NaN and the infinities are `NaN`, `+Inf`
/// and `-Inf`, as Go writes them.
pub fn format(v: f64, verb: char, prec: Option<usize>) -> String {
    let mut out = String::new();
    push(&mut out, v, verb, prec);
    out
}

/// Appends what [`format`] returns.
pub fn push(out: &mut String, v: f64, verb: char, prec: Option<usize>) {
    if v.is_nan() {
        return out.push_str("NaN");
    }
    if v.is_infinite() {
        return out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    }
    let upper = verb.is_ascii_uppercase();
    match verb {
        'e' | 'E' => match prec {
            None => {
                let d = Digits::shortest(v);
                d.push_e(out, d.digits.len().saturating_sub(1), upper)
            }
            Some(p) => Digits::rounded(v, p + 1).push_e(out, p, upper),
        },
        'f' | 'F' => match prec {
            None => push_f(out, v),
            // Rust's fixed notation is exact and rounds half to even, as Go does.
            Some(p) => {
                use std::fmt::Write;
                let _ = write!(out, "{v:.p$}");
            }
        },
        _ => {
            let (d, eprec) = match prec {
                None => (Digits::shortest(v), 6),
                Some(p) => {
                    let p = p.max(1);
                    let d = Digits::rounded(v, p);
                    let nd = d.digits.len() as i32;
                    // Go: fewer digits than the precision, all before the point,
                    // lower the threshold to the digits there are.
                    let eprec = if p as i32 > nd && nd >= d.point {
                        nd
                    } else {
                        p as i32
                    };
                    (d, eprec)
                }
            };
            let nd = d.digits.len() as i32;
            let exp = d.point - 1;
            if !d.digits.is_empty() && (exp < -4 || exp >= eprec) {
                d.push_e(out, nd.max(1) as usize - 1, upper)
            } else {
                d.push_f(out, (nd - d.point).max(0) as usize)
            }
        }
    }
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`, also what `%v` and `%g` print.
pub fn g(v: f64) -> String {
    format(v, 'g', None)
}

/// Appends Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest decimal that
/// reads back as `f`, never in exponent form (as Prometheus's API writes values; where `f` lies halfway between two shortest
/// decimals, the one with the even last digit, as Go picks), or `NaN`, `+Inf`,
/// `-Inf`.
pub fn push_f(out: &mut String, f: f64) {
    if f.is_nan() {
        return out.push_str("NaN");
    } else if f == f64::INFINITY {
        return out.push_str("+Inf");
    } else if f == f64::NEG_INFINITY {
        return out.push_str("-Inf");
    }
    // ryu finds the shortest digits (several times faster than `{}`, which
    // matters when a range query writes millions of values).
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(f);
    let Some((mantissa, exp)) = s.split_once('e') else {
        // Already plain; a whole number ends in ".0", which Go leaves out.
        return out.push_str(s.strip_suffix(".0").unwrap_or(s));
    };
    // Exponent form, for very small or large magnitudes ("1e21", "-1.5e-7"):
    // one digit before the point, no trailing zeros. The digits are placed
    // around the point here.
    let exp: i32 = exp.parse().unwrap_or(0);
    let mantissa = match mantissa.strip_prefix('-') {
        Some(rest) => {
            out.push('-');
            rest
        }
        None => mantissa,
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let point = int.len() as i32 + exp;
    if point <= 0 {
        out.push_str("0.");
        (0..-point).for_each(|_| out.push('0'));
        out.push_str(&digits);
    } else if point as usize >= digits.len() {
        out.push_str(&digits);
        (digits.len()..point as usize).for_each(|_| out.push('0'));
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs printed by Go 1.19's strconv for the same values.
    #[test]
    fn matches_go_on_chosen_values() {
        let cases: &[(f64, &str, &str, &str, &str, &str, &str)] = &[
            // value, 'f' 2, 'e' 3, 'g' 4, 'g' -1, 'e' -1, 'f' -1
            (
                0.125,
                "0.12",
                "1.250e-01",
                "0.125",
                "0.125",
                "1.25e-01",
                "0.125",
            ),
            (
                0.375,
                "0.38",
                "3.750e-01",
                "0.375",
                "0.375",
                "3.75e-01",
                "0.375",
            ),
            (2.5, "2.50", "2.500e+00", "2.5", "2.5", "2.5e+00", "2.5"),
            (0.5, "0.50", "5.000e-01", "0.5", "0.5", "5e-01", "0.5"),
            (
                1e23,
                "99999999999999991611392.00",
                "1.000e+23",
                "1e+23",
                "1e+23",
                "1e+23",
                "100000000000000000000000",
            ),
            (
                134_265_119_447_474.88,
                "134265119447474.88",
                "1.343e+14",
                "1.343e+14",
                "1.3426511944747488e+14",
                "1.3426511944747488e+14",
                "134265119447474.88",
            ),
            (
                100000.0,
                "100000.00",
                "1.000e+05",
                "1e+05",
                "100000",
                "1e+05",
                "100000",
            ),
            (
                123456.0,
                "123456.00",
                "1.235e+05",
                "1.235e+05",
                "123456",
                "1.23456e+05",
                "123456",
            ),
            (
                1234567.0,
                "1234567.00",
                "1.235e+06",
                "1.235e+06",
                "1.234567e+06",
                "1.234567e+06",
                "1234567",
            ),
            (
                0.0001,
                "0.00",
                "1.000e-04",
                "0.0001",
                "0.0001",
                "1e-04",
                "0.0001",
            ),
            (
                0.00001234,
                "0.00",
                "1.234e-05",
                "1.234e-05",
                "1.234e-05",
                "1.234e-05",
                "0.00001234",
            ),
            (
                1e21,
                "1000000000000000000000.00",
                "1.000e+21",
                "1e+21",
                "1e+21",
                "1e+21",
                "1000000000000000000000",
            ),
            (
                12345.678,
                "12345.68",
                "1.235e+04",
                "1.235e+04",
                "12345.678",
                "1.2345678e+04",
                "12345.678",
            ),
            (
                21861211892143.562,
                "21861211892143.56",
                "2.186e+13",
                "2.186e+13",
                "2.1861211892143562e+13",
                "2.1861211892143562e+13",
                "21861211892143.562",
            ),
            (0.0, "0.00", "0.000e+00", "0", "0", "0e+00", "0"),
            (-0.0, "-0.00", "-0.000e+00", "-0", "-0", "-0e+00", "-0"),
            (
                -1.5,
                "-1.50",
                "-1.500e+00",
                "-1.5",
                "-1.5",
                "-1.5e+00",
                "-1.5",
            ),
        ];
        for &(v, f2, e3, g4, g, e, f) in cases {
            assert_eq!(format(v, 'f', Some(2)), f2, "{v} f 2");
            assert_eq!(format(v, 'e', Some(3)), e3, "{v} e 3");
            assert_eq!(format(v, 'g', Some(4)), g4, "{v} g 4");
            assert_eq!(format(v, 'g', None), g, "{v} g -1");
            assert_eq!(format(v, 'e', None), e, "{v} e -1");
            assert_eq!(format(v, 'f', None), f, "{v} f -1");
        }
        assert_eq!(format(1e6, 'G', None), "1E+06");
        assert_eq!(g(1e6), "1e+06");
        assert_eq!(g(-2.5e-10), "-2.5e-10");
        assert_eq!(g(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format(f64::NAN, 'g', None), "NaN");
        assert_eq!(format(f64::NEG_INFINITY, 'f', Some(2)), "-Inf");
        assert_eq!(format(5e-324, 'g', None), "5e-324");
        assert_eq!(
            format(1.7976931348623157e308, 'g', None),
            "1.7976931348623157e+308"
        );
    }
    /// Values halfway between two shortest decimals, as Go 1.19's
    /// `strconv.FormatFloat(v, 'g', -1, 64)` writes them: the even last digit,
    /// where Rust's `{:e}` (which `/federate` and templates used before) took
    /// the odd one.
    #[test]
    fn halfway_values_in_g_take_the_even_digit() {
        for (bits, go) in [
            (4806433673021337488u64, "2.1861211892143562e+13"),
            (4814958991199590760, "7.991545574845362e+13"),
            (4834490505885954393, "1.6579263361956702e+15"),
            (4814386418088547080, "7.096900088839612e+13"),
            (4793701467633978688, "3.1128240913776562e+12"),
        ] {
            assert_eq!(g(f64::from_bits(bits)), go, "{bits}");
        }
    }
}

#[cfg(test)]
mod f_shortest_tests {
    use super::push_f;

    fn plain(f: f64) -> String {
        let mut s = String::new();
        push_f(&mut s, f);
        s
    }

    #[test]
    fn values_are_written_as_go_writes_them_with_f_and_shortest_digits() {
        for (f, want) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.3, "0.3"),
            (1e21, "1000000000000000000000"),
            (1.5e-7, "0.00000015"),
            (123456789.0, "123456789"),
            (1e-300, &format!("0.{}1", "0".repeat(299))),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::MAX, &format!("{}", f64::MAX)),
            (f64::MIN_POSITIVE, &format!("{}", f64::MIN_POSITIVE)),
            (5e-324, &format!("{}", 5e-324)),
        ] {
            assert_eq!(plain(f), want, "{f:e}");
        }
    }

    fn significant_digits(s: &str) -> usize {
        let d: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
        let d = d.trim_start_matches('0');
        if s.contains('.') {
            d.len()
        } else {
            d.trim_end_matches('0').len()
        }
    }

    /// Values halfway between two shortest candidates, as Go 1.19's
    /// `strconv.FormatFloat(f, 'f', -1, 64)` writes them (the even last digit;
    /// Rust's `{}` rounds these up).
    #[test]
    fn halfway_values_take_the_even_digit_as_go_does() {
        for (bits, go) in [
            (0x42ecb13954889314, "252379973043352.62"), // exactly 252379973043352.625
            (0x42de874230066cb8, "134265119447474.88"), // exactly 134265119447474.875
            (0x4308a2ed550ffc8a, "866817457389457.2"),  // exactly 866817457389457.25
            (0x4302775566a936aa, "649719782385365.2"),  // exactly 649719782385365.25
            (0x430311c21454993e, "670943727489831.8"),  // exactly 670943727489831.75
            (0x4304c1b56c0d801a, "730310560034819.2"),  // exactly 730310560034819.25
        ] {
            assert_eq!(plain(f64::from_bits(bits)), go, "{bits:#x}");
        }
    }

    /// For values of every magnitude (random bit patterns and random decimals)
    /// the text reads back as the value, has no exponent, and has as few
    /// significant digits as Rust's `{}`. Where two shortest candidates are
    /// equally close (the value lies halfway), Go and ryu pick the even last
    /// digit and Rust's `{}` rounds up; the text is Rust's everywhere else.
    #[test]
    fn values_are_shortest_round_trips_over_many_random_values() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ties = 0;
        for i in 0..200_000 {
            let f = match i % 3 {
                0 => f64::from_bits(next()),
                1 => (next() % 10_000_000) as f64 / 1000.0,
                _ => (next() % 1_000_000) as f64 * 10f64.powi((next() % 40) as i32 - 20),
            };
            if !f.is_finite() {
                continue;
            }
            let (got, rust) = (plain(f), format!("{f}"));
            assert!(!got.contains('e'), "{got}");
            assert_eq!(got.parse::<f64>().ok(), Some(f), "{got} reads back");
            assert_eq!(
                significant_digits(&got),
                significant_digits(&rust),
                "{got} vs {rust}"
            );
            if got != rust {
                ties += 1;
            }
        }
        assert!(ties < 100, "{ties} values differ from Rust's text");
    }
}
