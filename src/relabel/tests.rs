//! Table tests for every relabeling action, including the examples in Prometheus's
//! documentation and test suite.

use super::*;

fn rules(yaml: &str) -> Vec<RelabelConfig> {
    match serde_saphyr::from_str::<Vec<RelabelConfig>>(yaml) {
        Ok(r) => r,
        Err(e) => panic!("rules {yaml:?} did not parse: {e}"),
    }
}

fn rule_error(yaml: &str) -> String {
    match serde_saphyr::from_str::<Vec<RelabelConfig>>(yaml) {
        Ok(r) => panic!("rules {yaml:?} parsed but should not: {r:?}"),
        Err(e) => e.to_string(),
    }
}

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs)
}

/// (name, input, rules, expected output or None when dropped)
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    Option<&'static [(&'static str, &'static str)]>,
);

const CASES: &[Case] = &[
    (
        "replace with capture groups",
        &[("a", "foo"), ("b", "bar")],
        "- source_labels: [a]\n  regex: f(.*)\n  target_label: d\n  replacement: ch${1}-ch${1}\n",
        Some(&[("a", "foo"), ("b", "bar"), ("d", "choo-choo")]),
    ),
    (
        "replace joins sources with the separator",
        &[("a", "foo"), ("b", "bar")],
        "- source_labels: [a, b]\n  regex: f(.*);(.*)r\n  target_label: a\n  replacement: b${1}${2}m\n",
        Some(&[("a", "boobam"), ("b", "bar")]),
    ),
    (
        "replace regex is anchored",
        &[("a", "foo")],
        "- source_labels: [a]\n  regex: o\n  target_label: b\n  replacement: x\n",
        Some(&[("a", "foo")]),
    ),
    (
        "replace with no match leaves labels alone",
        &[("a", "boo")],
        "- source_labels: [a]\n  regex: f\n  target_label: b\n  replacement: bar\n",
        Some(&[("a", "boo")]),
    ),
    (
        "replace with empty result deletes the target",
        &[("a", "foo"), ("b", "x")],
        "- source_labels: [c]\n  regex: (.*)\n  target_label: b\n",
        Some(&[("a", "foo")]),
    ),
    (
        "replace fixed value on empty source (fast path)",
        &[("a", "foo")],
        "- target_label: env\n  replacement: prod\n",
        Some(&[("a", "foo"), ("env", "prod")]),
    ),
    (
        "replace target from a capture",
        &[("a", "some-name-value")],
        "- source_labels: [a]\n  regex: some-([^-]+)-([^,]+)\n  target_label: ${1}\n  replacement: ${2}\n",
        Some(&[("a", "some-name-value"), ("name", "value")]),
    ),
    (
        "replace invalid target from a capture is skipped",
        &[("a", "some-name-0")],
        "- source_labels: [a]\n  regex: some-([^-]+)-([^,]+)\n  target_label: ${3}\n  replacement: ${1}\n",
        Some(&[("a", "some-name-0")]),
    ),
    (
        "replace $1x is the group named 1x, as in Go",
        &[("a", "foo")],
        "- source_labels: [a]\n  regex: (f)(.*)\n  target_label: b\n  replacement: $1x\n",
        Some(&[("a", "foo")]),
    ),
    (
        "replace $$ is a dollar",
        &[("a", "foo")],
        "- source_labels: [a]\n  target_label: b\n  replacement: $$$1\n",
        Some(&[("a", "foo"), ("b", "$foo")]),
    ),
    (
        "replace named group",
        &[("__address__", "host:9100")],
        "- source_labels: [__address__]\n  regex: (?P<host>[^:]+):.*\n  target_label: host\n  replacement: $host\n",
        Some(&[("__address__", "host:9100"), ("host", "host")]),
    ),
    (
        "keep drops non-matching",
        &[("a", "foo")],
        "- source_labels: [a]\n  regex: f\n  action: keep\n",
        None,
    ),
    (
        "keep keeps matching",
        &[("a", "foo")],
        "- source_labels: [a]\n  regex: f.*\n  action: keep\n",
        Some(&[("a", "foo")]),
    ),
    (
        "keep on a missing label matches the empty string",
        &[("a", "foo")],
        "- source_labels: [b]\n  regex: ''\n  action: keep\n",
        Some(&[("a", "foo")]),
    ),
    (
        "drop matching",
        &[("a", "foo")],
        "- source_labels: [a]\n  regex: '.*o.*'\n  action: drop\n",
        None,
    ),
    (
        "drop non-matching keeps",
        &[("a", "boo")],
        "- source_labels: [a]\n  regex: f.*\n  action: Drop\n",
        Some(&[("a", "boo")]),
    ),
    (
        "keepequal keeps equal",
        &[("__tmp_port", "1234"), ("__port1", "1234")],
        "- source_labels: [__tmp_port]\n  target_label: __port1\n  action: keepequal\n",
        Some(&[("__tmp_port", "1234"), ("__port1", "1234")]),
    ),
    (
        "keepequal drops different",
        &[("__tmp_port", "1234"), ("__port1", "9090")],
        "- source_labels: [__tmp_port]\n  target_label: __port1\n  action: keepequal\n",
        None,
    ),
    (
        "dropequal drops equal",
        &[("__tmp_port", "1234"), ("__port1", "1234")],
        "- source_labels: [__tmp_port]\n  target_label: __port1\n  action: dropequal\n",
        None,
    ),
    (
        "dropequal keeps different",
        &[("__tmp_port", "1234"), ("__port1", "9090")],
        "- source_labels: [__tmp_port]\n  target_label: __port1\n  action: dropequal\n",
        Some(&[("__tmp_port", "1234"), ("__port1", "9090")]),
    ),
    (
        "hashmod matches Prometheus's md5",
        &[("a", "foo"), ("b", "bar"), ("c", "baz")],
        "- source_labels: [c]\n  target_label: d\n  modulus: 1000\n  action: hashmod\n",
        Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]),
    ),
    (
        "hashmod sharding example from the docs",
        &[("__address__", "localhost:9100")],
        "- source_labels: [__address__]\n  modulus: 8\n  target_label: __tmp_hash\n  action: hashmod\n- source_labels: [__tmp_hash]\n  regex: '7'\n  action: keep\n",
        Some(&[("__address__", "localhost:9100"), ("__tmp_hash", "7")]),
    ),
    (
        "labelmap copies with a template",
        &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
        "- regex: (b.*)\n  replacement: bar_${1}\n  action: labelmap\n",
        Some(&[("a", "foo"), ("b1", "bar"), ("b2", "baz"), ("bar_b1", "bar"), ("bar_b2", "baz")]),
    ),
    (
        "labelmap of kubernetes meta labels (docs example)",
        &[("__meta_kubernetes_pod_label_app", "web"), ("job", "k")],
        "- regex: __meta_kubernetes_pod_label_(.+)\n  action: labelmap\n",
        Some(&[("__meta_kubernetes_pod_label_app", "web"), ("app", "web"), ("job", "k")]),
    ),
    (
        "labeldrop",
        &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
        "- regex: b.*\n  action: labeldrop\n",
        Some(&[("a", "foo")]),
    ),
    (
        "labelkeep",
        &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
        "- regex: b.*\n  action: labelkeep\n",
        Some(&[("b1", "bar"), ("b2", "baz")]),
    ),
    (
        "lowercase",
        &[("foo", "bAr123Foo")],
        "- source_labels: [foo]\n  target_label: foo_lower\n  action: lowercase\n",
        Some(&[("foo", "bAr123Foo"), ("foo_lower", "bar123foo")]),
    ),
    (
        "uppercase",
        &[("foo", "bAr123Foo")],
        "- source_labels: [foo]\n  target_label: foo_upper\n  action: uppercase\n",
        Some(&[("foo", "bAr123Foo"), ("foo_upper", "BAR123FOO")]),
    ),
    (
        "rules apply in order and see earlier results",
        &[("a", "foo")],
        "- source_labels: [a]\n  target_label: b\n- source_labels: [b]\n  regex: foo\n  action: drop\n",
        None,
    ),
    (
        "dot does not match newline, as in Go",
        &[("a", "foo\nbar")],
        "- source_labels: [a]\n  regex: foo.bar\n  action: drop\n",
        Some(&[("a", "foo\nbar")]),
    ),
];

#[test]
fn relabel_table() {
    for (name, input, yaml, want) in CASES {
        let got = process(&ls(input), &rules(yaml));
        let want = want.map(ls);
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn defaults_are_prometheus_defaults() {
    let r = &rules("- target_label: x\n")[0];
    assert_eq!(r.action, Action::Replace);
    assert_eq!(r.separator, ";");
    assert_eq!(r.regex_text, "(.*)");
    assert_eq!(r.replacement, "$1");
}

#[test]
fn validation_errors_are_prometheus_messages() {
    let cases: &[(&str, &str)] = &[
        ("- action: hashmod\n  target_label: x\n", "relabel configuration for hashmod requires non-zero modulus"),
        ("- action: replace\n", "relabel configuration for replace action requires 'target_label' value"),
        ("- action: lowercase\n  source_labels: [a]\n", "relabel configuration for lowercase action requires 'target_label' value"),
        ("- target_label: 1bad\n", "\"1bad\" is invalid 'target_label' for replace action"),
        ("- target_label: ${1\n", "is invalid 'target_label' for replace action"),
        ("- action: uppercase\n  target_label: x\n  replacement: y\n", "'replacement' can not be set for uppercase action"),
        ("- action: labelmap\n  replacement: 'a-b'\n", "\"a-b\" is invalid 'replacement' for labelmap action"),
        ("- action: keepequal\n  target_label: x\n  regex: a\n", "keepequal action requires only 'source_labels' and `target_label`, and no other fields"),
        ("- action: labeldrop\n  regex: a\n  source_labels: [x]\n", "labeldrop action requires only 'regex', and no other fields"),
        ("- action: labelkeep\n  regex: a\n  separator: ','\n", "labelkeep action requires only 'regex', and no other fields"),
        ("- action: explode\n", "unknown relabel action \"explode\""),
        ("- action: ''\n", "relabel action cannot be empty"),
        ("- regex: '(unclosed'\n  target_label: x\n", "invalid regex"),
        ("- target_label: x\n  bogus: 1\n", "bogus"),
    ];
    for (yaml, want) in cases {
        let e = rule_error(yaml);
        assert!(
            e.contains(want),
            "{yaml:?}: error {e:?} does not contain {want:?}"
        );
    }
}

#[test]
fn label_template_syntax() {
    for ok in ["a", "_a1", "${1}", "$1", "foo_${1}_bar", "$name", "a$1"] {
        assert!(is_valid_label_template(ok), "{ok}");
    }
    for bad in ["", "1a", "a-b", "${1", "$", "${}", "a b"] {
        assert!(!is_valid_label_template(bad), "{bad}");
    }
}
