//! Command-line tools in the `hearth` binary, like promtool's: `hearth tsdb …`,
//! `hearth check config`, `hearth test rules`, `hearth cluster …`.

pub mod check;
pub mod cluster;
pub mod test_rules;
pub mod tsdb;

/// Formats a float like Go's `%g` (`strconv.FormatFloat(v, 'g', -1, 64)`), which
/// promtool uses when it prints samples: the shortest digits that round-trip, in
/// exponent notation (`1e+06`, sign and at least two exponent digits) when the
/// decimal exponent is below -4 or at least 6.
pub fn go_float_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits, e.g. "1.234e6".
    let e = format!("{v:e}");
    let (mantissa, exp) = e.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    if !(-4..6).contains(&exp) {
        return format_exp(mantissa, exp);
    }
    // Plain notation: Rust's `{}` prints the same shortest digits without exponent.
    format!("{v}")
}

fn format_exp(mantissa: &str, exp: i32) -> String {
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

#[cfg(test)]
mod tests {
    use super::go_float_g;

    #[test]
    fn formats_like_go() {
        let cases = [
            (1.0, "1"),
            (0.5, "0.5"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e6, "1e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-10, "-2.5e-10"),
            (1e21, "1e+21"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float_g(v), want, "{v}");
        }
    }
}
