//! Tests of Alertmanager's template data, functions and default templates. The
//! expected strings are what Alertmanager's `default.tmpl` renders for the same
//! notification, worked out from its definitions.

use super::template::{render, Data, Templates};
use super::types::{parse_rfc3339, zero_time, Alert};
use crate::labels::Labels;
use jiff::Timestamp;
use std::collections::BTreeMap;

fn ts(s: &str) -> Timestamp {
    parse_rfc3339(s).unwrap()
}

fn alert(instance: &str, ends_at: Timestamp) -> Alert {
    Alert {
        labels: Labels::from_pairs(&[
            ("alertname", "HighLoad"),
            ("instance", instance),
            ("job", "node"),
            ("severity", "page"),
        ]),
        annotations: BTreeMap::from([("summary".to_string(), format!("load high on {instance}"))])
            .into(),
        starts_at: ts("2024-01-01T00:00:00Z"),
        ends_at,
        generator_url: format!(
            "http://prom:9090/graph?g0.expr=load%7Binstance%3D%22{instance}%22%7D"
        )
        .into(),
        updated_at: ts("2024-01-01T00:00:00Z"),
        timeout: false,
    }
}

fn now() -> Timestamp {
    ts("2024-01-01T01:00:00Z")
}

/// One firing and one resolved alert, grouped by alertname.
fn mixed() -> Data {
    let alerts = [
        alert("a", zero_time()),
        alert("b", ts("2024-01-01T00:30:00Z")),
    ];
    Data::new(
        "team-x (pager)",
        &Labels::from_pairs(&[("alertname", "HighLoad")]),
        &alerts,
        "http://am:9093",
        now(),
    )
}

fn list(instance: &str) -> String {
    format!(
        "Labels:\n - alertname = HighLoad\n - instance = {instance}\n - job = node\n - severity = page\nAnnotations:\n - summary = load high on {instance}\nSource: http://prom:9090/graph?g0.expr=load%7Binstance%3D%22{instance}%22%7D\n"
    )
}

fn r(text: &str, d: &Data) -> String {
    render(text, d).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn data_fields() {
    let d = mixed();
    assert_eq!(d.receiver, "team-x \\(pager\\)");
    assert_eq!(d.status, "firing");
    assert_eq!(
        r("{{ .Receiver }}|{{ .Status }}|{{ .ExternalURL }}", &d),
        "team-x \\(pager\\)|firing|http://am:9093"
    );
    assert_eq!(
        r(
            "{{ len .Alerts }} {{ len .Alerts.Firing }} {{ len .Alerts.Resolved }}",
            &d
        ),
        "2 1 1"
    );
    assert_eq!(
        r(
            "{{ range .Alerts }}{{ .Status }}:{{ .Labels.instance }} {{ end }}",
            &d
        ),
        "firing:a resolved:b "
    );
    assert_eq!(
        r("{{ .CommonLabels.Names }} {{ .CommonLabels.Values }}", &d),
        "[alertname job severity] [HighLoad node page]"
    );
    assert_eq!(
        r("{{ .CommonLabels }}", &d),
        "map[alertname:HighLoad job:node severity:page]"
    );
    assert_eq!(r("{{ len .CommonAnnotations }}", &d), "0");
    assert_eq!(
        r(
            "{{ range .GroupLabels.SortedPairs }}{{ .Name }}={{ .Value }}{{ end }}",
            &d
        ),
        "alertname=HighLoad"
    );
    assert_eq!(
        r(
            "{{ (.CommonLabels.Remove (stringSlice \"job\" \"alertname\")).Names }}",
            &d
        ),
        "[severity]"
    );
    let a = &d.alerts[0];
    assert_eq!(a.fingerprint.len(), 16);
    assert_eq!(r("{{ (index .Alerts 0).Fingerprint }}", &d), a.fingerprint);
    assert_eq!(
        r("{{ (index .Alerts 0).StartsAt }}", &d),
        "2024-01-01 00:00:00 +0000 UTC"
    );
    // A firing alert shows no end; a resolved one its end.
    assert_eq!(
        r("{{ (index .Alerts 0).EndsAt }}", &d),
        "0001-01-01 00:00:00 +0000 UTC"
    );
    assert_eq!(
        r("{{ (index .Alerts 1).EndsAt.Format \"15:04\" }}", &d),
        "00:30"
    );
    // Missing keys are empty (missingkey=zero).
    assert_eq!(r("[{{ .CommonLabels.nope }}]", &d), "[]");
}

#[test]
fn functions() {
    let d = mixed();
    assert_eq!(r("{{ toUpper \"a\" }}{{ toLower \"B\" }} {{ title \"hello world\" }} [{{ trimSpace \"  x \" }}]", &d), "Ab Hello World [x]");
    assert_eq!(r("{{ join \", \" (stringSlice \"a\" \"b\") }}", &d), "a, b");
    assert_eq!(
        r(
            "{{ match \"^High\" .CommonLabels.alertname }} {{ reReplaceAll \"o+\" \"0\" \"foo\" }}",
            &d
        ),
        "true f0"
    );
    assert_eq!(
        r(
            "{{ safeHtml \"<b>\" }} {{ safeUrl \"http://x\" }} {{ urlUnescape \"a%20b+c\" }}",
            &d
        ),
        "<b> http://x a b c"
    );
    assert_eq!(
        r(
            "{{ date \"2006-01-02 15:04:05 MST\" (index .Alerts 0).StartsAt }}",
            &d
        ),
        "2024-01-01 00:00:00 UTC"
    );
    assert_eq!(
        r(
            "{{ (index .Alerts 0).StartsAt | tz \"Europe/Berlin\" | date \"Jan 2 15:04 -07:00\" }}",
            &d
        ),
        "Jan 1 01:00 +01:00"
    );
    assert_eq!(r("{{ humanizeDuration 3661 }}", &d), "1h 1m 1s");
    let since = r("{{ since (index .Alerts 0).StartsAt }}", &d);
    assert!(since.ends_with('s') && since.contains('h'), "{since}");
    assert!(render("{{ urlUnescape \"%zz\" }}", &d)
        .unwrap_err()
        .to_string()
        .contains("invalid URL escape \"%zz\""));
    assert!(render("{{ tz \"Nowhere/Zone\" .Alerts }}", &d).is_err());
}

#[test]
fn default_subject_and_text_templates() {
    let d = mixed();
    assert_eq!(
        r("{{ template \"__subject\" . }}", &d),
        "[FIRING:1] HighLoad (node page)"
    );
    assert_eq!(
        r("{{ template \"slack.default.title\" . }}", &d),
        "[FIRING:1] HighLoad (node page)"
    );
    assert_eq!(
        r("{{ template \"email.default.subject\" . }}", &d),
        "[FIRING:1] HighLoad (node page)"
    );
    assert_eq!(
        r("{{ template \"slack.default.fallback\" . }}", &d),
        "[FIRING:1] HighLoad (node page) | http://am:9093/#/alerts"
    );
    assert_eq!(
        r("{{ template \"slack.default.username\" . }}", &d),
        "AlertManager"
    );
    assert_eq!(
        r(
            "[{{ template \"slack.default.text\" . }}][{{ template \"__description\" . }}]",
            &d
        ),
        "[][]"
    );
    assert_eq!(
        r("{{ template \"__text_alert_list\" .Alerts }}", &d),
        format!("{}{}", list("a"), list("b"))
    );
    assert_eq!(
        r("{{ template \"opsgenie.default.description\" . }}", &d),
        format!(
            "\nAlerts Firing:\n{}\nAlerts Resolved:\n{}",
            list("a"),
            list("b")
        )
    );
    assert_eq!(
        r("{{ template \"pushover.default.message\" . }}", &d),
        format!(
            "\n\nAlerts Firing:\n{}\n\n\nAlerts Resolved:\n{}\n\n",
            list("a"),
            list("b")
        )
    );
    assert_eq!(
        r("{{ template \"victorops.default.state_message\" . }}", &d),
        "[FIRING:1] HighLoad (node page) | http://am:9093/#/alerts"
    );

    // All resolved, and grouped by every common label: no parenthesised part,
    // and Alertmanager's trailing space after the group values stays.
    let alerts = [alert("b", ts("2024-01-01T00:30:00Z"))];
    let group = Labels::from_pairs(&[
        ("alertname", "HighLoad"),
        ("instance", "b"),
        ("job", "node"),
        ("severity", "page"),
    ]);
    let d = Data::new("r", &group, &alerts, "", now());
    assert_eq!(
        r("{{ template \"__subject\" . }}", &d),
        "[RESOLVED] HighLoad b node page "
    );
    assert_eq!(
        r("{{ template \"opsgenie.default.description\" . }}", &d),
        format!("load high on b\n\nAlerts Resolved:\n{}", list("b"))
    );
}

#[test]
fn default_email_html_lists_alerts_with_escaping() {
    let mut d = mixed();
    d.alerts[0]
        .annotations
        .insert("note".into(), "<script>".into());
    let html = r("{{ template \"email.default.html\" . }}", &d);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains("<title>[FIRING:1] HighLoad (node page)</title>"),
        "{html}"
    );
    assert!(html.contains("2 alerts for alertname=HighLoad"), "{html}");
    assert!(
        html.contains("<h2>[1] Firing</h2>") && html.contains("<h2>[1] Resolved</h2>"),
        "{html}"
    );
    assert!(html.contains("note = &lt;script&gt;"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
}

#[test]
fn user_templates_load_from_globs_and_override_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tmpl")).unwrap();
    std::fs::write(
        dir.path().join("tmpl/a.tmpl"),
        "{{ define \"my.title\" }}{{ .Status | toUpper }} {{ .CommonLabels.alertname }}{{ end }}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tmpl/b.tmpl"),
        "{{ define \"__alertmanager\" }}hearth{{ end }}",
    )
    .unwrap();
    let t = Templates::load(
        dir.path(),
        &["tmpl/*.tmpl".to_string(), "missing/*.tmpl".to_string()],
    )
    .unwrap();
    assert!(t.has("my.title") && t.has("slack.default.title"));
    let d = mixed();
    assert_eq!(
        t.render("{{ template \"my.title\" . }}", &d).unwrap(),
        "FIRING HighLoad"
    );
    assert_eq!(
        t.render("{{ template \"slack.default.username\" . }}", &d)
            .unwrap(),
        "hearth"
    );
    assert_eq!(t.render("", &d).unwrap(), "");
    // A broken file is an error naming it.
    std::fs::write(
        dir.path().join("tmpl/c.tmpl"),
        "{{ define \"x\" }}{{ nope }}{{ end }}",
    )
    .unwrap();
    let e = Templates::load(dir.path(), &["tmpl/*.tmpl".to_string()])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "template: c.tmpl:1: function \"nope\" not defined");
    // Errors while rendering name the template, line and column.
    let e = t
        .render("x\n{{ .Alerts.Nope }}", &d)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "template: :2:3: executing \"\" at <.Alerts.Nope>: can't evaluate field Nope in type template.Alerts");
}
