//! Table and property tests for both text parsers. The tables follow Prometheus's
//! own `promparse_test.go` and `openmetricsparse_test.go`: the same inputs must be
//! accepted or rejected, though our messages are worded for people.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// Renders an entry compactly so tables can list expectations as text.
fn render(e: &Entry<'_>) -> String {
    match e {
        Entry::Help {
            metric_family,
            help,
        } => format!("HELP {metric_family} {help:?}"),
        Entry::Type {
            metric_family,
            kind,
        } => format!("TYPE {metric_family} {kind}"),
        Entry::Unit {
            metric_family,
            unit,
        } => format!("UNIT {metric_family} {unit:?}"),
        Entry::Comment => "COMMENT".to_string(),
        Entry::Sample {
            labels,
            value,
            timestamp_ms,
            exemplar,
        } => {
            let mut s = format!("{labels} {value}");
            if let Some(t) = timestamp_ms {
                s += &format!(" @{t}");
            }
            if let Some(ex) = exemplar {
                s += &format!(" # {} {}", ex.labels, ex.value);
                if let Some(t) = ex.timestamp_ms {
                    s += &format!(" @{t}");
                }
            }
            s
        }
    }
}

/// Every entry until the end, or the first error.
fn collect<'a>(
    p: impl Iterator<Item = Result<Entry<'a>, ParseError>>,
) -> Result<Vec<String>, ParseError> {
    p.map(|e| e.map(|e| render(&e))).collect()
}

fn prom(input: &[u8]) -> Result<Vec<String>, ParseError> {
    collect(PromParser::new(input))
}

fn om(input: &[u8]) -> Result<Vec<String>, ParseError> {
    collect(OpenMetricsParser::new(input))
}

/// Checks that `input` fails on `line` with a message containing `want`.
fn assert_fails(
    parse: fn(&[u8]) -> Result<Vec<String>, ParseError>,
    input: &[u8],
    line: usize,
    want: &str,
) {
    match parse(input) {
        Ok(entries) => panic!(
            "{:?} parsed as {entries:?}, want error {want:?}",
            String::from_utf8_lossy(input)
        ),
        Err(e) => {
            assert_eq!(
                e.line,
                line,
                "line of error for {:?}: {e}",
                String::from_utf8_lossy(input)
            );
            assert!(
                e.message.contains(want),
                "error for {:?} is {:?}, want it to contain {want:?}",
                String::from_utf8_lossy(input),
                e.message
            );
        }
    }
}

#[test]
fn prom_parses_prometheus_test_exposition() {
    let mut input = String::from(
        r#"# HELP go_gc_duration_seconds A summary of the GC invocation durations.
# 	TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 4.9351e-05
go_gc_duration_seconds{quantile="0.25",} 7.424100000000001e-05
go_gc_duration_seconds{quantile="0.5",a="b"} 8.3835e-05
go_gc_duration_seconds{quantile="0.8", a="b"} 8.3835e-05
go_gc_duration_seconds{ quantile="0.9", a="b"} 8.3835e-05
# Hrandom comment starting with prefix of HELP
#
wind_speed{A="2",c="3"} 12345
# comment with escaped \n newline
# comment with escaped \ escape character
# HELP nohelp1
# HELP nohelp2 
go_gc_duration_seconds{ quantile="1.0", a="b" } 8.3835e-05
go_gc_duration_seconds { quantile="1.0", a="b" } 8.3835e-05
go_gc_duration_seconds { quantile= "1.0", a= "b", } 8.3835e-05
go_gc_duration_seconds { quantile = "1.0", a = "b" } 8.3835e-05
go_gc_duration_seconds { quantile = "2.0" a = "b" } 8.3835e-05
go_gc_duration_seconds_count 99
some:aggregate:rate5m{a_b="c"}	1
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 33  	123123
_metric_starting_with_underscore 1
testmetric{_label_starting_with_underscore="foo"} 1
testmetric{label="\"bar\""} 1"#,
    );
    input += "\n# HELP metric foo\x00bar";
    input += "\nnull_byte_metric{a=\"abc\x00\"} 1";

    let g = "go_gc_duration_seconds";
    let want = vec![
        format!("HELP {g} \"A summary of the GC invocation durations.\""),
        format!("TYPE {g} summary"),
        // Under `# TYPE summary`, quantiles are spelled canonically (Prometheus 3).
        format!("{{__name__=\"{g}\", quantile=\"0.0\"}} 0.000049351"),
        format!("{{__name__=\"{g}\", quantile=\"0.25\"}} 0.00007424100000000001"),
        format!("{{__name__=\"{g}\", a=\"b\", quantile=\"0.5\"}} 0.000083835"),
        format!("{{__name__=\"{g}\", a=\"b\", quantile=\"0.8\"}} 0.000083835"),
        format!("{{__name__=\"{g}\", a=\"b\", quantile=\"0.9\"}} 0.000083835"),
        "COMMENT".into(),
        "COMMENT".into(),
        "{A=\"2\", __name__=\"wind_speed\", c=\"3\"} 12345".into(),
        "COMMENT".into(),
        "COMMENT".into(),
        "HELP nohelp1 \"\"".into(),
        "HELP nohelp2 \"\"".into(),
        format!("{{__name__=\"{g}\", a=\"b\", quantile=\"1.0\"}} 0.000083835"),
        format!("{{__name__=\"{g}\", a=\"b\", quantile=\"1.0\"}} 0.000083835"),
        format!("{{__name__=\"{g}\", a=\"b\", quantile=\"1.0\"}} 0.000083835"),
        format!("{{__name__=\"{g}\", a=\"b\", quantile=\"1.0\"}} 0.000083835"),
        format!("{{__name__=\"{g}\", a=\"b\", quantile=\"2.0\"}} 0.000083835"),
        format!("{{__name__=\"{g}_count\"}} 99"),
        "{__name__=\"some:aggregate:rate5m\", a_b=\"c\"} 1".into(),
        "HELP go_goroutines \"Number of goroutines that currently exist.\"".into(),
        "TYPE go_goroutines gauge".into(),
        "{__name__=\"go_goroutines\"} 33 @123123".into(),
        "{__name__=\"_metric_starting_with_underscore\"} 1".into(),
        "{__name__=\"testmetric\", _label_starting_with_underscore=\"foo\"} 1".into(),
        "{__name__=\"testmetric\", label=\"\\\"bar\\\"\"} 1".into(),
        "HELP metric \"foo\\0bar\"".into(),
        "{__name__=\"null_byte_metric\", a=\"abc\\x00\"} 1".into(),
    ];
    assert_eq!(prom(input.as_bytes()).unwrap(), want);
}

#[test]
fn prom_accepts_edge_cases() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        ("\n\n  \n\t\n", &[]),
        ("a 1", &["{__name__=\"a\"} 1"]),
        ("  a 1 \t\n", &["{__name__=\"a\"} 1"]),
        ("a{b=\"c\"}1\n", &["{__name__=\"a\", b=\"c\"} 1"]),
        ("a {b=\"c\"} 1\n", &["{__name__=\"a\", b=\"c\"} 1"]),
        ("a{} 1\n", &["{__name__=\"a\"} 1"]),
        // An empty value is an absent label.
        ("a{b=\"\"} 1\n", &["{__name__=\"a\"} 1"]),
        // A raw newline inside a label value is accepted, as Prometheus does.
        ("a{b=\"x\ny\"} 1\n", &["{__name__=\"a\", b=\"x\\ny\"} 1"]),
        // Escapes: \\ \" \n, anything else kept literally.
        (r#"a{b="x\\y\"z\nw\q"} 1"#, &["{__name__=\"a\", b=\"x\\\\y\\\"z\\nw\\\\q\"} 1"]),
        // HELP undoes \\ and \n only.
        (r#"# HELP a x\\y\nz\"q"#, &["HELP a \"x\\\\y\\nz\\\\\\\"q\""]),
        ("# HELP a\ttabbed", &["HELP a \"tabbed\""]),
        ("# HELP a  two spaces", &["HELP a \" two spaces\""]),
        ("# TYPE a untyped\n", &["TYPE a unknown"]),
        ("#HELP a b\n# HELPER\n# HELP\n# TYPE\n#\n", &["COMMENT"; 5]),
        ("a +Inf\nb -Inf\nc 1e3\nd -0.5\ne .5\n", &[
            "{__name__=\"a\"} inf",
            "{__name__=\"b\"} -inf",
            "{__name__=\"c\"} 1000",
            "{__name__=\"d\"} -0.5",
            "{__name__=\"e\"} 0.5",
        ]),
        ("a 1 0\nb 1 9223372036854775807\n", &["{__name__=\"a\"} 1 @0", "{__name__=\"b\"} 1 @9223372036854775807"]),
        // Quoted UTF-8 names (Prometheus 3).
        (
            "# HELP \"my.metric\" help\n{\"my.metric\", \"läbel\"=\"v\", a=\"b\",} 1\n{ \"x\\\"y\" } 2\n",
            &[
                "HELP my.metric \"help\"",
                "{__name__=\"my.metric\", a=\"b\", läbel=\"v\"} 1",
                "{__name__=\"x\\\"y\"} 2",
            ],
        ),
    ];
    for (input, want) in cases {
        let got = prom(input.as_bytes()).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(got, *want, "{input:?}");
    }
}

#[test]
fn prom_normalizes_le_and_quantile_only_for_their_types() {
    let input = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+inf\"} 2\nh_bucket{le=\"1e3\"} 3\n\
                 h_bucket{le=\"x\"} 4\nh_bucket{quantile=\"1\"} 5\n# TYPE g gauge\ng{le=\"1\"} 6\n\
                 # TYPE s summary\ns{quantile=\"0.50\"} 7\n";
    let got = prom(input.as_bytes()).unwrap();
    let want = [
        "TYPE h histogram",
        "{__name__=\"h_bucket\", le=\"1.0\"} 1",
        "{__name__=\"h_bucket\", le=\"+Inf\"} 2",
        "{__name__=\"h_bucket\", le=\"1000.0\"} 3",
        "{__name__=\"h_bucket\", le=\"x\"} 4",
        "{__name__=\"h_bucket\", quantile=\"1\"} 5",
        "TYPE g gauge",
        "{__name__=\"g\", le=\"1\"} 6",
        "TYPE s summary",
        "{__name__=\"s\", quantile=\"0.5\"} 7",
    ];
    assert_eq!(got, want);
}

#[test]
fn prom_nan_values_are_canonical() {
    let mut p = PromParser::new(b"a NaN\nb nan\n");
    for _ in 0..2 {
        match p.next() {
            Some(Ok(Entry::Sample { value, .. })) => assert_eq!(value.to_bits(), NORMAL_NAN_BITS),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn prom_rejects_what_prometheus_rejects() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"a", 1, "expected value after metric, got end of input"),
        (
            b"a{b='c'} 1\n",
            1,
            "expected label value in quotes, got \"'c'}\"",
        ),
        (
            b"a{b=\n",
            1,
            "expected label value in quotes, got end of line",
        ),
        (
            b"a{\xff=\"foo\"} 1\n",
            1,
            "expected label name or '}', got \"\\xff=\\\"foo\\\"}\"",
        ),
        (
            b"a{b=\"\xff\"} 1\n",
            1,
            "invalid UTF-8 in label value \"\\\"\\xff\\\"\"",
        ),
        (
            br#"{"a", "b = "c"}"#,
            1,
            "expected '=' after label name, got \"c\\\"}\"",
        ),
        (
            br#"{"a",b\nc="d"} 1"#,
            1,
            "expected '=' after label name, got \"\\\\nc=",
        ),
        (b"a true\n", 1, "invalid value \"true\": not a number"),
        (
            b"something_weird{problem=\"",
            1,
            "unterminated quoted label value",
        ),
        (
            b"empty_label_name{=\"\"} 0",
            1,
            "expected label name or '}', got \"=\\\"\\\"}\"",
        ),
        (
            b"foo 1_2\n",
            1,
            "invalid value \"1_2\": hexadecimal floats and '_' are not supported",
        ),
        (
            b"foo 0x1p-3\n",
            1,
            "invalid value \"0x1p-3\": hexadecimal floats",
        ),
        (
            b"foo 0x1P-3\n",
            1,
            "invalid value \"0x1P-3\": hexadecimal floats",
        ),
        (b"foo 1e400\n", 1, "invalid value \"1e400\": out of range"),
        (
            b"foo 0 1_2\n",
            1,
            "expected end of line after timestamp, got \"_2\"",
        ),
        (br#"{a="ok"} 1"#, 1, "metric name missing from label set"),
        (
            b"# TYPE #\n",
            1,
            "expected metric name after TYPE, got \"#\"",
        ),
        (
            b"# HELP #\n",
            1,
            "expected metric name after HELP, got \"#\"",
        ),
        (
            b"# TYPE a counterx\n",
            1,
            "invalid metric type \"counterx\"",
        ),
        (
            b"# TYPE a counter \n",
            1,
            "invalid metric type \"counter \"",
        ),
        (b"# TYPE a info\n", 1, "invalid metric type \"info\""),
        (
            b"# HELP a \xff\n",
            1,
            "help text \"\\xff\" is not valid UTF-8",
        ),
        (
            b"a{b=\x00\"ssss\"} 1\n",
            1,
            "expected label value in quotes, got \"\\x00",
        ),
        (
            b"a{b\x00=\"hiih\"}\t1",
            1,
            "expected '=' after label name, got \"\\x00=",
        ),
        (b"a\x00{b=\"ddd\"} 1", 1, "invalid metric name \"a\\x00\""),
        (
            b"a 0 1\x00",
            1,
            "expected end of line after timestamp, got \"\\x00\"",
        ),
        (b"a 1\nb 2\n3abc 1\n", 3, "invalid metric name \"3abc\""),
        (b"a-b 1\n", 1, "invalid metric name \"a-b\""),
        (
            b"a 1 -5\n",
            1,
            "expected integer timestamp or end of line after value, got \"-5\"",
        ),
        (
            b"a 1 1.5\n",
            1,
            "expected end of line after timestamp, got \".5\"",
        ),
        (
            b"a 1 99999999999999999999\n",
            1,
            "invalid timestamp \"99999999999999999999\": out of range",
        ),
        (
            b"a 1\r\n",
            1,
            "invalid value \"1\\r\": not a number (carriage return",
        ),
        (b"a{b=\"1\",b=\"2\"} 1\n", 1, "duplicate label name \"b\""),
        (
            b"a{__name__=\"x\"} 1\n",
            1,
            "duplicate label name \"__name__\"",
        ),
        (b"a{\"x\"} 1\n", 1, "metric name given twice"),
        (br#"{"a","b"} 1"#, 1, "metric name given twice"),
        (br#"{""} 1"#, 1, "empty metric name"),
        (br#"a{""="x"} 1"#, 1, "empty label name"),
        (b"a{b=\"c\" 1\n", 1, "expected label name or '}', got \"1\""),
        (
            b"a{b=\"c\\\n\"} 1\n",
            1,
            "backslash at end of line in label value",
        ),
        (
            b"a{b=\"c\"} {d=\"e\"} 1\n",
            1,
            "expected value after metric, got \"{d=\\\"e\\\"}\"",
        ),
        (
            b"a 1{\n",
            1,
            "expected integer timestamp or end of line after value, got \"{\"",
        ),
        // A raw newline inside a label value still counts as a line.
        (
            b"a{b=\"x\ny\"} 1\nc{ 1\n",
            3,
            "expected label name or '}', got \"1\"",
        ),
        (b"}\n", 1, "invalid metric name \"}\""),
    ];
    for (input, line, want) in cases {
        assert_fails(prom, input, *line, want);
    }
}

#[test]
fn errors_display_line_and_column() {
    let e = PromParser::new(b"a 1\n\nfoo{b='c'} 1\n")
        .find_map(Result::err)
        .unwrap();
    assert_eq!(e.line, 3);
    assert_eq!(e.column, 7);
    assert_eq!(
        e.to_string(),
        "line 3: expected label value in quotes, got \"'c'}\""
    );
}

#[test]
fn iteration_stops_after_an_error() {
    let mut p = PromParser::new(b"a 1\nb x\nc 3\n");
    assert!(matches!(p.next(), Some(Ok(_))));
    assert!(matches!(p.next(), Some(Err(_))));
    assert!(p.next().is_none());
    let mut p = OpenMetricsParser::new(b"a x\n# EOF\n");
    assert!(matches!(p.next(), Some(Err(_))));
    assert!(p.next().is_none());
}

#[test]
fn om_parses_prometheus_test_exposition() {
    let mut input = String::from(
        r#"# HELP go_gc_duration_seconds A summary of the GC invocation durations.
# TYPE go_gc_duration_seconds summary
# UNIT go_gc_duration_seconds seconds
go_gc_duration_seconds{quantile="0"} 4.9351e-05
go_gc_duration_seconds{quantile="0.5",a="b"} 8.3835e-05
# HELP nohelp1 
# HELP help2 escape \ \n \\ \" \x chars
# UNIT nounit 
go_gc_duration_seconds_count 99
some:aggregate:rate5m{a_b="c"} 1
# TYPE go_goroutines gauge
go_goroutines 33 123.123
# TYPE hh histogram
hh_bucket{le="+Inf"} 1
# TYPE gh gaugehistogram
gh_bucket{le="+Inf"} 1
# TYPE hhh histogram
hhh_bucket{le="+Inf"} 1 # {id="histogram-bucket-test"} 4
hhh_count 1 # {id="histogram-count-test"} 4
# TYPE ggh gaugehistogram
ggh_bucket{le="+Inf"} 1 # {id="gaugehistogram-bucket-test",xx="yy"} 4 123.123
# TYPE smr_seconds summary
smr_seconds_count 2.0 # {id="summary-count-test"} 1 123.321
# TYPE ii info
ii{foo="bar"} 1
# TYPE ss stateset
ss{ss="foo"} 1
ss{A="a"} 0
# TYPE un unknown
_metric_starting_with_underscore 1
testmetric{label="\"bar\""} 1
# TYPE foo counter
foo_total 17.0 1520879607.789 # {id="counter-test"} 5
foo_created 1520872607.123
foo_total{a="b",} 17.0 1520879607.789 # {id="counter-test"} 5
# TYPE something histogram
something_bucket{le="1"} 2
"#,
    );
    input += "# HELP metric foo\x00bar\n";
    input += "null_byte_metric{a=\"abc\x00\"} 1\n";
    input += "# EOF\n";

    let g = "go_gc_duration_seconds";
    let want: Vec<String> = vec![
        format!("HELP {g} \"A summary of the GC invocation durations.\""),
        format!("TYPE {g} summary"),
        format!("UNIT {g} \"seconds\""),
        format!("{{__name__=\"{g}\", quantile=\"0.0\"}} 0.000049351"),
        format!("{{__name__=\"{g}\", a=\"b\", quantile=\"0.5\"}} 0.000083835"),
        "HELP nohelp1 \"\"".into(),
        "HELP help2 \"escape \\\\ \\n \\\\ \\\" \\\\x chars\"".into(),
        "UNIT nounit \"\"".into(),
        format!("{{__name__=\"{g}_count\"}} 99"),
        "{__name__=\"some:aggregate:rate5m\", a_b=\"c\"} 1".into(),
        "TYPE go_goroutines gauge".into(),
        "{__name__=\"go_goroutines\"} 33 @123123".into(),
        "TYPE hh histogram".into(),
        "{__name__=\"hh_bucket\", le=\"+Inf\"} 1".into(),
        "TYPE gh gaugehistogram".into(),
        "{__name__=\"gh_bucket\", le=\"+Inf\"} 1".into(),
        "TYPE hhh histogram".into(),
        "{__name__=\"hhh_bucket\", le=\"+Inf\"} 1 # {id=\"histogram-bucket-test\"} 4".into(),
        "{__name__=\"hhh_count\"} 1 # {id=\"histogram-count-test\"} 4".into(),
        "TYPE ggh gaugehistogram".into(),
        "{__name__=\"ggh_bucket\", le=\"+Inf\"} 1 # {id=\"gaugehistogram-bucket-test\", xx=\"yy\"} 4 @123123".into(),
        "TYPE smr_seconds summary".into(),
        "{__name__=\"smr_seconds_count\"} 2 # {id=\"summary-count-test\"} 1 @123321".into(),
        "TYPE ii info".into(),
        "{__name__=\"ii\", foo=\"bar\"} 1".into(),
        "TYPE ss stateset".into(),
        "{__name__=\"ss\", ss=\"foo\"} 1".into(),
        "{A=\"a\", __name__=\"ss\"} 0".into(),
        "TYPE un unknown".into(),
        "{__name__=\"_metric_starting_with_underscore\"} 1".into(),
        "{__name__=\"testmetric\", label=\"\\\"bar\\\"\"} 1".into(),
        "TYPE foo counter".into(),
        "{__name__=\"foo_total\"} 17 @1520879607789 # {id=\"counter-test\"} 5".into(),
        "{__name__=\"foo_created\"} 1520872607.123".into(),
        "{__name__=\"foo_total\", a=\"b\"} 17 @1520879607789 # {id=\"counter-test\"} 5".into(),
        "TYPE something histogram".into(),
        "{__name__=\"something_bucket\", le=\"1.0\"} 2".into(),
        "HELP metric \"foo\\0bar\"".into(),
        "{__name__=\"null_byte_metric\", a=\"abc\\x00\"} 1".into(),
    ];
    assert_eq!(om(input.as_bytes()).unwrap(), want);
}

#[test]
fn om_accepts_edge_cases() {
    let cases: &[(&str, &[&str])] = &[
        ("# EOF", &[]),
        ("# EOF\n", &[]),
        ("a 1\n# EOF", &["{__name__=\"a\"} 1"]),
        ("a{} 1\n# EOF\n", &["{__name__=\"a\"} 1"]),
        // Seconds to milliseconds truncates toward zero, as Go's int64() does.
        (
            "a 1 1.0009\nb 1 -1.5\nc 1 1e3\nd 1 0\n# EOF\n",
            &[
                "{__name__=\"a\"} 1 @1000",
                "{__name__=\"b\"} 1 @-1500",
                "{__name__=\"c\"} 1 @1000000",
                "{__name__=\"d\"} 1 @0",
            ],
        ),
        ("a 1 # {} 2\n# EOF\n", &["{__name__=\"a\"} 1 # {} 2"]),
        (
            "a 1 5 # {x=\"y\",} 2 1.5\n# EOF\n",
            &["{__name__=\"a\"} 1 @5000 # {x=\"y\"} 2 @1500"],
        ),
        (
            "{\"go.gc\",quantile=\"0\"} 1\nq_count 1 # {\"id.thing\"=\"x\",other=\"y\"} 4\n# EOF\n",
            &[
                "{__name__=\"go.gc\", quantile=\"0\"} 1",
                "{__name__=\"q_count\"} 1 # {id.thing=\"x\", other=\"y\"} 4",
            ],
        ),
        (
            "# HELP \"a.b\" x\n# TYPE \"a.b\" gauge\n# UNIT \"a.b_s\" s\n# EOF\n",
            &["HELP a.b \"x\"", "TYPE a.b gauge", "UNIT a.b_s \"s\""],
        ),
        // Prometheus accepts a name that is nothing but "_" and the unit.
        (
            "# UNIT _seconds seconds\n# EOF\n",
            &["UNIT _seconds \"seconds\""],
        ),
    ];
    for (input, want) in cases {
        let got = om(input.as_bytes()).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(got, *want, "{input:?}");
    }
}

#[test]
fn om_rejects_what_prometheus_rejects() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"", 1, "data does not end with # EOF"),
        (b"\n", 1, "blank line"),
        (
            b"metric",
            1,
            "expected a space and value after metric, got end of input",
        ),
        (b"metric 1", 1, "data does not end with # EOF"),
        (b"metric 1\n", 2, "data does not end with # EOF"),
        (
            b"metric_total 1 # {aa=\"bb\"} 4",
            1,
            "data does not end with # EOF",
        ),
        (
            b"a 1 2 # {aa=\"bb\"} 4 5",
            1,
            "data does not end with # EOF",
        ),
        (b"# HELP a text", 1, "data does not end with # EOF"),
        (
            b"a\n#EOF\n",
            1,
            "expected a space and value after metric, got end of line",
        ),
        (b"\n\n# EOF\n", 1, "blank line"),
        (b"a 1\n\n# EOF\n", 2, "blank line"),
        (b" a 1\n# EOF\n", 1, "whitespace at start of line"),
        (b"9\n# EOF\n", 1, "invalid metric name \"9\""),
        (
            b"# TYPE u untyped\n# EOF\n",
            1,
            "invalid metric type \"untyped\"",
        ),
        (
            b"# TYPE c counter \n# EOF\n",
            1,
            "invalid metric type \"counter \"",
        ),
        (
            b"# TYPE c  counter\n# EOF\n",
            1,
            "invalid metric type \" counter\"",
        ),
        (
            b"#  TYPE c counter\n# EOF\n",
            1,
            "invalid comment \"#  TYPE c counter\"",
        ),
        (b"#\tTYPE c counter\n# EOF\n", 1, "invalid comment"),
        (
            b"# a comment\n# EOF\n",
            1,
            "OpenMetrics allows only # HELP, # TYPE, # UNIT and # EOF",
        ),
        (b"#\n# EOF\n", 1, "invalid comment"),
        (
            b"# TYPE \n# EOF\n",
            1,
            "expected metric name after TYPE, got end of line",
        ),
        (
            b"# TYPE m\n# EOF\n",
            1,
            "expected a space and text after the metric name in # TYPE, got end of line",
        ),
        (
            b"# HELP m\n# EOF\n",
            1,
            "expected a space and text after the metric name in # HELP",
        ),
        (
            b"# UNIT m\n# EOF\n",
            1,
            "expected a space and text after the metric name in # UNIT",
        ),
        (
            b"# UNIT metric suffix\n# EOF\n",
            1,
            "unit \"suffix\" is not a suffix of metric \"metric\"",
        ),
        (
            b"# UNIT metricsuffix suffix\n# EOF\n",
            1,
            "unit \"suffix\" is not a suffix of metric \"metricsuffix\"",
        ),
        (
            b"# UNIT m suffix\n# EOF\n",
            1,
            "unit \"suffix\" is not a suffix of metric \"m\"",
        ),
        (
            b"a\t1\n# EOF\n",
            1,
            "expected a space and value after metric, got \"\\t1\"",
        ),
        (b"a  1\n# EOF\n", 1, "expected value, got \" 1\""),
        (
            b"a 1\t2\n# EOF\n",
            1,
            "invalid value \"1\\t2\": not a number",
        ),
        (
            b"a 1 2 \n# EOF\n",
            1,
            "expected end of line or exemplar after timestamp",
        ),
        (
            b"a 1 2 #\n# EOF\n",
            1,
            "expected end of line or exemplar after timestamp",
        ),
        (
            b"a 1 1z\n# EOF\n",
            1,
            "invalid timestamp \"1z\": not a number",
        ),
        (
            b"a 1 1 1\n# EOF\n",
            1,
            "expected end of line or exemplar after timestamp",
        ),
        (b" # EOF\n", 1, "whitespace at start of line"),
        (
            b"# EOF\na 1",
            2,
            "unexpected content after # EOF, got \"a\"",
        ),
        (
            b"# EOF\n\n",
            2,
            "unexpected content after # EOF, got end of line",
        ),
        (b"# EOFa 1", 1, "unexpected content after # EOF, got \"a\""),
        (
            b"a{b='c'} 1\n# EOF\n",
            1,
            "expected label value in quotes, got \"'c'}\"",
        ),
        (
            b"a{,b=\"c\"} 1\n# EOF\n",
            1,
            "expected label name or '}', got \",b=\\\"c\\\"}\"",
        ),
        (
            b"a{b=\"c\"d=\"e\"} 1\n# EOF\n",
            1,
            "expected ',' or '}' after label value, got \"d=\\\"e\\\"}\"",
        ),
        (
            b"a{b=\"c\",,d=\"e\"} 1\n# EOF\n",
            1,
            "expected label name or '}', got \",d=",
        ),
        (
            b"a{b=\"c\", d=\"e\"} 1\n# EOF\n",
            1,
            "expected label name or '}', got \" d=\\\"e\\\"}\"",
        ),
        (
            b"a{b=\n# EOF\n",
            1,
            "expected label value in quotes, got end of line",
        ),
        (
            b"a{\xff=\"foo\"} 1\n# EOF\n",
            1,
            "expected label name or '}', got \"\\xff",
        ),
        (
            b"a{b=\"\xff\"} 1\n# EOF\n",
            1,
            "invalid UTF-8 in label value",
        ),
        (
            br#"{"a","b = "c"}
# EOF
"#,
            1,
            "expected '=' after label name, got \"c\\\"}\"",
        ),
        (
            b"a true\n# EOF\n",
            1,
            "invalid value \"true\": not a number",
        ),
        (
            b"something_weird{problem=\"\n# EOF\n",
            1,
            "unterminated quoted label value (newline before closing quote)",
        ),
        (
            b"empty_label_name{=\"\"} 0\n# EOF\n",
            1,
            "expected label name or '}', got \"=\\\"\\\"}\"",
        ),
        (
            b"foo 1_2\n\n# EOF\n",
            1,
            "invalid value \"1_2\": hexadecimal floats and '_' are not supported",
        ),
        (b"foo 0x1p-3\n\n# EOF\n", 1, "hexadecimal floats"),
        (
            b"foo 0 1_2\n\n# EOF\n",
            1,
            "invalid timestamp \"1_2\": hexadecimal floats",
        ),
        (
            b"custom_metric_total 1 # {aa=bb}\n# EOF\n",
            1,
            "expected label value in quotes, got \"bb}\"",
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\"}\n# EOF\n",
            1,
            "expected a space and value after exemplar labels, got end of line",
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\"}",
            1,
            "expected a space and value after exemplar labels, got end of input",
        ),
        (
            b"custom_metric_total 1 # {bb}",
            1,
            "expected '=' after label name, got \"}\"",
        ),
        (
            b"custom_metric_total 1 # {\"bb\"} 1\n# EOF\n",
            1,
            "expected '=' after exemplar label name",
        ),
        (
            b"custom_metric_total 1 # {bb, a=\"dd\"}",
            1,
            "expected '=' after label name, got \",",
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\",,cc=\"dd\"} 1",
            1,
            "expected label name or '}', got \",cc=",
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\"} 1_2",
            1,
            "invalid exemplar value \"1_2\"",
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\"} true",
            1,
            "invalid exemplar value \"true\": not a number",
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\",cc=}",
            1,
            "expected label value in quotes, got \"}\"",
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\"} 1 2 3\n# EOF\n",
            1,
            "expected end of line after exemplar timestamp",
        ),
        (br#"{b="c",} 1"#, 1, "metric name missing from label set"),
        (
            b"a 1 NaN\n# EOF\n",
            1,
            "invalid timestamp \"NaN\": must be a finite number of seconds",
        ),
        (
            b"a 1 -Inf\n# EOF\n",
            1,
            "invalid timestamp \"-Inf\": must be a finite",
        ),
        (
            b"a 1 Inf\n# EOF\n",
            1,
            "invalid timestamp \"Inf\": must be a finite",
        ),
        (
            b"a 1 1e17\n# EOF\n",
            1,
            "invalid timestamp \"1e17\": must be a finite",
        ),
        (
            b"# TYPE hhh histogram\nhhh_bucket{le=\"+Inf\"} 1 # {aa=\"bb\"} 4 NaN\n# EOF\n",
            2,
            "invalid exemplar timestamp \"NaN\"",
        ),
        (
            b"a{b=\"\x00\"} 1\n# EOF\n\x00",
            3,
            "unexpected content after # EOF, got \"\\x00\"",
        ),
        (
            b"a{b=\x00\"ssss\"} 1\n# EOF\n",
            1,
            "expected label value in quotes, got \"\\x00",
        ),
        (
            b"a{b\x00=\"hiih\"} 1\n# EOF\n",
            1,
            "expected '=' after label name, got \"\\x00",
        ),
        (
            b"a\x00{b=\"ddd\"} 1\n# EOF\n",
            1,
            "invalid metric name \"a\\x00\"",
        ),
        (b"#", 1, "invalid comment \"#\""),
        (b"# H", 1, "invalid comment \"# H\""),
        (
            b"a{b=\"1\",b=\"2\"} 1\n# EOF\n",
            1,
            "duplicate label name \"b\"",
        ),
        (
            b"a 1 # {b=\"1\",b=\"2\"} 1\n# EOF\n",
            1,
            "duplicate label name \"b\"",
        ),
        (b"a 1\r\n# EOF\n", 1, "(carriage return"),
    ];
    for (input, line, want) in cases {
        assert_fails(om, input, *line, want);
    }
}

#[test]
fn om_null_bytes_in_values_are_data() {
    for input in [
        &b"null_byte_metric{a=\"abc\x00\"} 1\n# EOF\n"[..],
        b"a{b=\"\x00ss\"} 1\n# EOF\n",
        b"a{b=\"\x00\"} 1\n# EOF",
    ] {
        om(input).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(input)));
    }
}

#[test]
fn mutation_base_is_valid() {
    assert_eq!(om(MUTATION_BASE.as_bytes()).unwrap().len(), 7);
}

#[test]
fn content_type_picks_the_parser() {
    let cases = [
        (
            "text/plain; version=0.0.4; charset=utf-8",
            Some(TextFormat::Prometheus),
        ),
        ("text/plain", Some(TextFormat::Prometheus)),
        ("Text/Plain ;version=0.0.4", Some(TextFormat::Prometheus)),
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Some(TextFormat::OpenMetrics),
        ),
        (
            "application/openmetrics-text",
            Some(TextFormat::OpenMetrics),
        ),
        (
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily",
            None,
        ),
        ("", None),
    ];
    for (ct, want) in cases {
        assert_eq!(TextFormat::from_content_type(ct), want, "{ct:?}");
    }
    let entries =
        collect(parser_for_content_type("application/openmetrics-text", b"a 1\n# EOF\n").unwrap())
            .unwrap();
    assert_eq!(entries, ["{__name__=\"a\"} 1"]);
    // The same body is not valid OpenMetrics without `# EOF`, but is valid text.
    assert!(
        collect(parser_for_content_type("application/openmetrics-text", b"a 1\n").unwrap())
            .is_err()
    );
    assert!(collect(parser_for_content_type("text/plain", b"a 1\n").unwrap()).is_ok());
    assert!(parser_for_content_type("application/json", b"").is_none());
}

#[test]
fn series_belong_to_families_by_suffix() {
    use MetricType::*;
    let cases = [
        ("foo_total", "foo", Counter, true),
        ("foo_total", "foo_total", Counter, true),
        // Prometheus checks the prefix before cutting `_total` from the family.
        ("foo", "foo_total", Counter, false),
        ("foo_created", "foo", Counter, true),
        ("foo_bucket", "foo", Histogram, true),
        ("foo_sum", "foo", Histogram, true),
        ("foo_count", "foo", Histogram, true),
        ("foo_gsum", "foo", Histogram, false),
        ("foo_gsum", "foo", GaugeHistogram, true),
        ("foo_gcount", "foo", GaugeHistogram, true),
        ("foo_bucket", "foo", GaugeHistogram, true),
        ("foo", "foo", Summary, true),
        ("foo_sum", "foo", Summary, true),
        ("foo_bucket", "foo", Summary, false),
        ("foo_info", "foo", Info, true),
        ("foo_info", "foo_info", Info, true),
        ("foo", "foo", Gauge, true),
        ("foo_total", "foo", Gauge, false),
        ("foobar", "foo", Gauge, false),
        ("bar", "foo", Counter, false),
    ];
    for (series, family, kind, want) in cases {
        assert_eq!(
            series_in_family(series, family, kind),
            want,
            "{series} in {family} ({kind})"
        );
    }
}

/// Exhausts a parser; the property is that this returns (no panic, no hang) and
/// that nothing follows an error.
fn drain<'a>(mut p: impl Iterator<Item = Result<Entry<'a>, ParseError>>) {
    let mut entries = 0usize;
    while let Some(e) = p.next() {
        entries += 1;
        assert!(entries <= 1 << 20, "parser does not terminate");
        if let Err(e) = e {
            assert!(e.line >= 1 && e.column >= 1);
            assert!(p.next().is_none(), "entries after an error");
            return;
        }
    }
}

/// Pieces that make random inputs reach deep into the grammar.
const FRAGMENTS: &[&str] = &[
    "a",
    "b_c",
    "le",
    "quantile",
    "__name__",
    "{",
    "}",
    "=",
    "\"",
    ",",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "#",
    "# ",
    "HELP ",
    "TYPE ",
    "UNIT ",
    "EOF",
    "# EOF",
    "# {",
    "histogram",
    "summary",
    "counter",
    "1",
    "1.5",
    "-2e3",
    "NaN",
    "+Inf",
    "1e400",
    "0x1p3",
    "\\",
    "\\n",
    "\\\"",
    "\"x.y\"",
    "ä",
    "\u{0}",
    "_total",
    "9",
];

fn fragment_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..60)
        .prop_map(|v| v.concat().into_bytes())
}

/// A valid exposition in both formats' common subset plus OpenMetrics extras, to
/// be mutated so that random inputs reach every state of both parsers.
const MUTATION_BASE: &str =
    "# HELP a_seconds Help \\n text.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
a_seconds_bucket{le=\"0.5\",x=\"y\\\"z\"} 1 1.5 # {trace_id=\"abc\"} 0.3 1.25\n\
{\"a.b\",\"c.d\"=\"e\",} +Inf 17\n# TYPE s summary\ns{quantile=\"0.9\"} NaN\n# EOF\n";

/// One edit to [`MUTATION_BASE`]: where (as a fraction of its length), and what.
fn mutations() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6)
}

fn mutate(edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    let mut b = MUTATION_BASE.as_bytes().to_vec();
    for (at, op, byte) in edits {
        let i = at.index(b.len());
        match op {
            0 => b[i] = *byte,
            1 => b.insert(i, *byte),
            _ => {
                b.remove(i);
            }
        }
    }
    b
}

/// A label value made of characters that need escaping as well as plain ones.
fn label_value() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('a'),
            Just('"'),
            Just('\\'),
            Just('\n'),
            Just(' '),
            Just('ü'),
            Just('{'),
            Just(',')
        ],
        0..8,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn float_text(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v:?}")
    }
}

type Series = (String, BTreeMap<String, String>, f64, Option<i64>);

fn series() -> impl Strategy<Value = Series> {
    (
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
        prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", label_value(), 0..5),
        prop_oneof![
            any::<f64>(),
            Just(f64::INFINITY),
            Just(f64::NAN),
            Just(-0.0)
        ],
        prop::option::of(0i64..10_000_000_000),
    )
        .prop_filter(
            "no reserved or normalised label names",
            |(_, labels, _, _)| {
                !labels.contains_key("__name__")
                    && !labels.contains_key("le")
                    && !labels.contains_key("quantile")
            },
        )
}

fn check_round_trip(parsed: Vec<Result<Entry<'_>, ParseError>>, want: &[Series], om: bool) {
    assert_eq!(parsed.len(), want.len());
    for (got, (name, labels, value, ts)) in parsed.into_iter().zip(want) {
        let Ok(Entry::Sample {
            labels: got_labels,
            value: got_value,
            timestamp_ms,
            ..
        }) = got
        else {
            panic!("not a sample: {got:?}");
        };
        let mut pairs: Vec<(&str, &str)> = vec![("__name__", name.as_str())];
        pairs.extend(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(got_labels, crate::labels::Labels::from_pairs(&pairs));
        if value.is_nan() {
            assert_eq!(got_value.to_bits(), NORMAL_NAN_BITS);
        } else {
            assert_eq!(got_value.to_bits(), value.to_bits());
        }
        let want_ts = if om { ts.map(|t| t * 1000) } else { *ts };
        assert_eq!(timestamp_ms, want_ts);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..300)) {
        drain(PromParser::new(&body));
        drain(OpenMetricsParser::new(&body));
    }

    #[test]
    fn never_panics_on_near_valid_text(body in fragment_soup()) {
        drain(PromParser::new(&body));
        drain(OpenMetricsParser::new(&body));
    }

    #[test]
    fn never_panics_on_mutated_exposition(edits in mutations()) {
        let body = mutate(&edits);
        drain(PromParser::new(&body));
        drain(OpenMetricsParser::new(&body));
    }
}

proptest! {
    #[test]
    fn rendered_series_parse_back(all in prop::collection::vec(series(), 0..8)) {
        let mut text = String::new();
        let mut openmetrics = String::new();
        for (name, labels, value, ts) in &all {
            let set: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let head = format!("{name}{{{}}} {}", set.join(","), float_text(*value));
            text += &head;
            openmetrics += &head;
            if let Some(ts) = ts {
                text += &format!(" {ts}");
                // OpenMetrics timestamps are seconds; use whole ones for an exact trip.
                openmetrics += &format!(" {ts}");
            }
            text += "\n";
            openmetrics += "\n";
        }
        openmetrics += "# EOF\n";
        check_round_trip(PromParser::new(text.as_bytes()).collect(), &all, false);
        check_round_trip(OpenMetricsParser::new(openmetrics.as_bytes()).collect(), &all, true);
    }
}

#[test]
fn legacy_names_reject_quoted_utf8_names() {
    let legacy = |b: &[u8]| collect(PromParser::new(b).with_legacy_names());
    let legacy_om = |b: &[u8]| collect(OpenMetricsParser::new(b).with_legacy_names());
    assert!(legacy(b"{\"ok_name\", \"ok_label\"=\"v\"} 1\n").is_ok());
    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"my.metric\"} 1\n",
            "invalid metric name \"my.metric\" (legacy names must match",
        ),
        (b"a{\"l.b\"=\"v\"} 1\n", "invalid label name \"l.b\""),
        (b"a{\"l:b\"=\"v\"} 1\n", "invalid label name \"l:b\""),
        (b"# HELP \"a.b\" x\n", "invalid metric name \"a.b\""),
    ];
    for (input, want) in cases {
        let e = legacy(input).unwrap_err();
        assert!(e.message.contains(want), "{e}");
        // The default accepts them.
        assert!(prom(input).is_ok());
    }
    let e = legacy_om(b"a 1 # {\"t.id\"=\"x\"} 1\n# EOF\n").unwrap_err();
    assert!(e.message.contains("invalid label name \"t.id\""), "{e}");
}

/// Every sample of `body` as `next_raw` yields it: the series text, and the labels
/// `labels()` builds for it, rendered.
fn raw_samples(format: TextFormat, body: &str) -> Vec<(String, String)> {
    let mut p = TextParser::new(format, body.as_bytes());
    let mut out = Vec::new();
    while let Some(e) = p.next_raw() {
        match e {
            Ok(RawEntry::Sample(s)) => {
                let series = String::from_utf8(s.series.to_vec()).unwrap();
                let labels = p.labels().unwrap();
                out.push((series, render(&s.into_entry(labels))));
            }
            Ok(RawEntry::Other(e)) => assert!(!matches!(e, Entry::Sample { .. })),
            Err(e) => panic!("{e}"),
        }
    }
    out
}

#[test]
fn next_raw_yields_series_text_and_the_same_labels_as_next() {
    let prom = "# TYPE h histogram\nh_bucket{le=\"1\",a=\"x\"} 2 1000\nup 1\nb  {c=\"d\" , } 3\n{\"u.tf\",z=\"1\"} 4\n";
    let got = raw_samples(TextFormat::Prometheus, prom);
    let series: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        series,
        [
            "h_bucket{le=\"1\",a=\"x\"}",
            "up",
            "b  {c=\"d\" , }",
            "{\"u.tf\",z=\"1\"}"
        ]
    );
    let rendered: Vec<String> = PromParser::new(prom.as_bytes())
        .filter_map(|e| match e.unwrap() {
            e @ Entry::Sample { .. } => Some(render(&e)),
            _ => None,
        })
        .collect();
    let from_raw: Vec<String> = got.into_iter().map(|(_, l)| l).collect();
    assert_eq!(from_raw, rendered);
    assert!(from_raw[0].contains("le=\"1.0\""), "{}", from_raw[0]);

    let om = "a_total{b=\"c\"} 1 1.5 # {t=\"x\"} 2\nd 1\n# EOF\n";
    let got = raw_samples(TextFormat::OpenMetrics, om);
    assert_eq!(got[0].0, "a_total{b=\"c\"}");
    assert_eq!(got[1].0, "d");
}

#[test]
fn labels_reports_a_repeated_label_name_and_ends_the_parse() {
    let mut p = TextParser::new(TextFormat::Prometheus, b"a{b=\"1\",b=\"2\"} 1\nc 2\n");
    let Some(Ok(RawEntry::Sample(s))) = p.next_raw() else {
        panic!("expected a sample");
    };
    assert_eq!(s.series, b"a{b=\"1\",b=\"2\"}");
    let e = p.labels().unwrap_err();
    assert!(e.message.contains("duplicate label name"), "{e}");
    assert!(p.next_raw().is_none());
}

/// After a plain metric name, `next_raw` only skips the label set and `labels`
/// parses it: its errors are those of an immediate parse, and they come before an
/// error later on the same line.
#[test]
fn deferred_label_sets_keep_their_errors_and_their_order() {
    assert_fails(prom, b"a{b=c} x\n", 1, "expected label value in quotes");
    assert_fails(
        om,
        b"a{b=c} x\n# EOF\n",
        1,
        "expected label value in quotes",
    );
    // A repeated name is found when the labels are built, after the value, as
    // it was before label sets were deferred.
    assert_fails(prom, b"a{b=\"1\",b=\"2\"} x\n", 1, "invalid value");
    // `next_raw` alone accepts the set: a scrape loop that knows the series by
    // its text never parses it again. `labels` finds the error and ends the parse.
    let mut p = PromParser::new(b"a{b=c} 1\nd 2\n");
    match p.next_raw() {
        Some(Ok(RawEntry::Sample(s))) => assert_eq!(s.series, b"a{b=c}"),
        other => panic!("want a raw sample, got {other:?}"),
    }
    let e = p.labels().unwrap_err();
    assert!(e.message.contains("expected label value in quotes"), "{e}");
    assert!(p.next_raw().is_none());
    // Braces and escaped quotes inside values do not end the set early.
    let mut p = PromParser::new(b"a{b=\"}\\\"}\",c=\"{\"} 1\n");
    match p.next_raw() {
        Some(Ok(RawEntry::Sample(s))) => assert_eq!(s.series, b"a{b=\"}\\\"}\",c=\"{\"}"),
        other => panic!("want a raw sample, got {other:?}"),
    }
    let labels = p.labels().unwrap();
    assert_eq!(labels.get("b"), "}\"}");
    assert_eq!(labels.get("c"), "{");
}
