//! Tests of Prometheus's template functions and data in alert templates, and of
//! templates in alerting rules evaluated end to end (`query`, `if`, `with`,
//! template errors in the rule's health). Expected strings are what Prometheus
//! produces for the same templates.

use super::group::Group;
use super::template::{self, QueryFn, TemplateData};
use super::RuleGroups;
use crate::labels::Labels;
use crate::promql::Engine;
use crate::storage::memory::MemStorage;
use crate::storage::Appendable;
use std::collections::BTreeMap;

fn data() -> TemplateData<'static> {
    TemplateData {
        labels: [("instance", "host.example.com:9100"), ("job", "node")].into(),
        external_labels: [("dc", "eu")].into(),
        external_url: "http://prom.example.com:9090/path/prefix",
        value: 12.5,
    }
}

fn x(t: &str) -> String {
    match template::expand(t, &data()) {
        Ok(s) => s,
        Err(e) => panic!("{t:?}: {e}"),
    }
}

fn fake_query(q: &str) -> Result<Vec<(Labels, f64)>, String> {
    match q {
        "up" => Ok(vec![
            (
                Labels::from_pairs(&[("__name__", "up"), ("instance", "b")]),
                0.0,
            ),
            (
                Labels::from_pairs(&[("__name__", "up"), ("instance", "a")]),
                1.0,
            ),
        ]),
        "scalar" => Ok(vec![(Labels::empty(), 3.5)]),
        "str" => Ok(vec![(Labels::from_pairs(&[("__value__", "hello")]), 0.0)]),
        "empty" => Ok(vec![]),
        other => Err(format!("bad query {other:?}")),
    }
}

fn xq(t: &str) -> Result<String, template::TemplateError> {
    let q: &QueryFn = &fake_query;
    template::expand_alert("Test", t, &data(), Some(q))
}

#[test]
fn data_and_variables() {
    assert_eq!(
        x("{{ $labels.job }} {{ .Labels.job }} {{ index $labels \"job\" }}"),
        "node node node"
    );
    assert_eq!(
        x("{{ $externalLabels.dc }} {{ .ExternalLabels.dc }}"),
        "eu eu"
    );
    assert_eq!(
        x("{{ $externalURL }}|{{ .ExternalURL }}"),
        "http://prom.example.com:9090/path/prefix|http://prom.example.com:9090/path/prefix"
    );
    assert_eq!(
        x("{{ $value }} {{ .Value }} {{ printf \"%.1f\" $value }}"),
        "12.5 12.5 12.5"
    );
    // missingkey=zero: a missing label is empty, not <no value>.
    assert_eq!(x("[{{ $labels.nope }}]"), "[]");
    assert_eq!(x("{{ if gt $value 10.0 }}big{{ end }}"), "big");
}

#[test]
fn humanize_functions() {
    assert_eq!(x("{{ humanize 0 }} {{ humanize 1.5 }} {{ humanize 1234567 }} {{ humanize 0.00123 }} {{ humanize -1e12 }}"), "0 1.5 1.235M 1.23m -1T");
    assert_eq!(x("{{ humanize \"2048\" }}"), "2.048k");
    assert_eq!(
        x("{{ humanize1024 1048576 }} {{ humanize1024 1 }} {{ humanize1024 1536 }}"),
        "1Mi 1 1.5ki"
    );
    assert_eq!(x("{{ humanizeDuration 0 }}|{{ humanizeDuration 0.1 }}|{{ humanizeDuration 1.5 }}|{{ humanizeDuration 60 }}|{{ humanizeDuration 3600 }}|{{ humanizeDuration 90061.5 }}|{{ humanizeDuration 0.0001 }}|{{ humanizeDuration -61 }}"),
        "0s|100ms|1.5s|1m 0s|1h 0m 0s|1d 1h 1m 1s|100us|-1m 1s");
    assert_eq!(
        x("{{ humanizePercentage 0.1234567 }} {{ 0.5 | humanizePercentage }}"),
        "12.35% 50%"
    );
    assert_eq!(
        x("{{ humanizeTimestamp 1435065584.128 }}"),
        "2015-06-23 13:19:44.128 +0000 UTC"
    );
    assert_eq!(
        x("{{ toTime 1435065584.128 }}"),
        "2015-06-23 13:19:44.128 +0000 UTC"
    );
    assert_eq!(
        x("{{ (toTime 1435065584).Format \"2006-01-02T15:04:05Z07:00\" }}"),
        "2015-06-23T13:19:44Z"
    );
    assert_eq!(
        x("{{ humanize \"NaN\" }} {{ humanizeTimestamp \"+Inf\" }}"),
        "NaN +Inf"
    );
}

#[test]
fn string_functions() {
    assert_eq!(
        x("{{ title \"it's\" }} {{ title \"aa bb-cc CC\" }}|{{ toUpper \"ab\" }}|{{ toLower \"AB\" }}"),
        "It'S Aa Bb-Cc CC|AB|ab"
    );
    assert_eq!(
        x("{{ match \"a+\" \"baaa\" }} {{ match \"^a$\" \"ba\" }}"),
        "true false"
    );
    assert_eq!(x("{{ reReplaceAll \"(a)b\" \"x$1\" \"abab\" }}"), "xaxa");
    assert_eq!(
        x("{{ reReplaceAll \":.*\" \"\" $labels.instance }}"),
        "host.example.com"
    );
    assert_eq!(x("{{ stripPort \"foo.com:12345\" }} {{ stripPort \"[::1]:12345\" }} {{ stripPort \"foo.com\" }}"), "foo.com ::1 foo.com");
    assert_eq!(x("{{ stripDomain \"foo.example.com:12345\" }} {{ stripDomain \"192.168.0.1:12345\" }} {{ stripDomain \"localhost\" }}"), "foo:12345 192.168.0.1:12345 localhost");
    assert_eq!(x("{{ parseDuration \"1h2m10ms\" }}"), "3720.01");
    assert_eq!(x("{{ safeHtml \"<b>\" }}"), "<b>");
    assert_eq!(
        x("{{ pathPrefix }} {{ externalURL }}"),
        "/path/prefix http://prom.example.com:9090/path/prefix"
    );
    assert_eq!(
        x("{{ graphLink \"up == 0\" }}"),
        "/graph?g0.expr=up+%3D%3D+0&g0.tab=0"
    );
    assert_eq!(x("{{ tableLink \"up\" }}"), "/graph?g0.expr=up&g0.tab=1");
}

#[test]
fn args_and_tmpl() {
    assert_eq!(x("{{ define \"x\" }}{{ .arg0 }} {{ .arg1 }}{{ end }}{{ template \"x\" (args 1 \"two\") }}"), "1 two");
    assert_eq!(
        x("{{ define \"a\" }}<{{ . }}>{{ end }}{{ $n := \"a\" }}{{ tmpl $n $labels.job }}"),
        "<node>"
    );
}

#[test]
fn query_functions() {
    let r = |t: &str| xq(t).unwrap_or_else(|e| panic!("{t:?}: {e}"));
    assert_eq!(
        r("{{ range query \"up\" }}{{ .Labels.instance }}={{ .Value }} {{ end }}"),
        "b=0 a=1 "
    );
    assert_eq!(r("{{ range query \"up\" | sortByLabel \"instance\" }}{{ label \"instance\" . }}{{ end }}"), "ab");
    assert_eq!(r("{{ query \"up\" | first | value }}"), "0");
    assert_eq!(
        r("{{ with query \"scalar\" }}{{ . | first | value | humanize }}{{ end }}"),
        "3.5"
    );
    assert_eq!(
        r("{{ with query \"empty\" }}some{{ else }}none{{ end }}"),
        "none"
    );
    assert_eq!(r("{{ query \"str\" | first | strvalue }}"), "hello");
    let e = xq("{{ query \"empty\" | first }}").unwrap_err().to_string();
    assert_eq!(e, "error executing template __alert_Test: template: __alert_Test:1:131: executing \"__alert_Test\" at <first>: error calling first: first() called on vector with no elements");
    let e = xq("{{ query \"boom\" }}").unwrap_err().to_string();
    assert!(
        e.ends_with("error calling query: bad query \"boom\""),
        "{e}"
    );
}

#[test]
fn errors_read_like_prometheus() {
    let e = template::expand("{{ humanize \"x\" }}", &data())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "error executing template __alert_: template: __alert_:1:115: executing \"__alert_\" at <humanize \"x\">: error calling humanize: strconv.ParseFloat: parsing \"x\": invalid syntax");
    let e = template::expand("a\n{{ nope }}", &data())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "error parsing template __alert_: template: __alert_:2: function \"nope\" not defined"
    );
    let e = template::expand("{{ toUpper $value }}", &data())
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("wrong type for value; expected string; got float64"),
        "{e}"
    );
    // Comparing a float with an int literal is an error, as in Go.
    let e = template::expand("{{ if gt $value 10 }}x{{ end }}", &data())
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("error calling gt: incompatible types for comparison"),
        "{e}"
    );
}

fn append(s: &MemStorage, pairs: &[(&str, &str)], t: i64, v: f64) {
    let mut a = s.appender();
    a.append(0, &Labels::from_pairs(pairs), t, v).unwrap();
    a.commit().unwrap();
}

const RULES: &str = r#"
groups:
  - name: g
    rules:
      - alert: Load
        expr: load > 0
        labels:
          level: '{{ if gt $value 10.0 }}high{{ else }}low{{ end }}'
        annotations:
          peers: '{{ range query "sort(load)" }}{{ .Labels.job }}={{ .Value }} {{ end }}'
          other: '{{ with query "load{job=\"none\"}" }}{{ . | first | value }}{{ else }}no other{{ end }}'
          top: '{{ with query "topk(1, load)" }}{{ (first .).Labels.job }} at {{ . | first | value | humanize }}{{ end }}'
          link: '{{ $externalURL }}/alerts'
      - alert: Broken
        expr: load > 0
        annotations:
          summary: 'value {{ humanize "not a number" }}'
"#;

#[test]
fn alert_templates_run_queries_and_report_errors_in_health() {
    let s = MemStorage::new();
    append(&s, &[("__name__", "load"), ("job", "a")], 0, 5.0);
    append(&s, &[("__name__", "load"), ("job", "b")], 0, 20.0);
    let rgs = RuleGroups::parse(RULES, "t.yml").unwrap();
    let g = Group::new(&rgs.groups[0], "t.yml", 60_000, &BTreeMap::new())
        .unwrap()
        .with_external_url("http://hearth:9090");
    g.eval(&Engine::default(), &s, &s, 10_000);

    let load = &g.rules[0];
    assert_eq!(load.health().0, "ok", "{:?}", load.health().1);
    let alerts = load.active_alerts();
    assert_eq!(alerts.len(), 2);
    let by_job: BTreeMap<String, _> = alerts
        .iter()
        .map(|a| (a.labels.get("job").to_string(), a))
        .collect();
    assert_eq!(by_job["a"].labels.get("level"), "low");
    assert_eq!(by_job["b"].labels.get("level"), "high");
    for a in alerts.iter() {
        assert_eq!(a.annotations["peers"], "a=5 b=20 ");
        assert_eq!(a.annotations["other"], "no other");
        assert_eq!(a.annotations["top"], "b at 20");
        assert_eq!(a.annotations["link"], "http://hearth:9090/alerts");
    }

    // A template error does not stop the rule: the alert fires with the error
    // in its text, and the error shows in the rule's health.
    let broken = &g.rules[1];
    let (health, err, _, _) = broken.health();
    assert_eq!(health, "err");
    let err = err.unwrap_or_default();
    assert!(
        err.starts_with("error executing template __alert_Broken: template: __alert_Broken:1:"),
        "{err}"
    );
    assert!(err.contains("error calling humanize"), "{err}");
    let alerts = broken.active_alerts();
    assert_eq!(alerts.len(), 2);
    assert!(alerts[0].annotations["summary"]
        .starts_with("<error expanding template: error executing template __alert_Broken"));
}
