//! The data a notification's templates are rendered from (Alertmanager's
//! `template.Data`) and `render_field`, the one function every templated field
//! of every integration goes through.
//!
//! `render_field` is a stand-in until hearth has a Go `text/template` engine: it
//! renders literal text, `{{ template "NAME" . }}` for Alertmanager's default
//! template names (with short texts of our own), a few plain fields
//! (`{{ .Status }}`, `{{ .Receiver }}`, `{{ .ExternalURL }}`, `{{ .GroupKey }}`,
//! `{{ .CommonLabels.NAME }}`, …) and the `{{ if eq .Status "firing" }}A{{ else }}B{{ end }}`
//! form Alertmanager's default Slack colour uses. Anything else is an error
//! that names the action, so a config that needs the real engine says so.

use super::NotifyError;
use crate::alertmanager::types::Alert;
use crate::labels::Labels;
use jiff::Timestamp;
use std::collections::BTreeMap;

/// One alert as templates see it (Alertmanager's `template.Alert`).
#[derive(Debug, Clone, PartialEq)]
pub struct DataAlert {
    /// `firing` or `resolved`.
    pub status: &'static str,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub generator_url: String,
    /// The label fingerprint as 16 hex digits.
    pub fingerprint: String,
}

/// The data of one notification (Alertmanager's `template.Data`, plus the
/// group key).
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationData {
    /// The receiver's name.
    pub receiver: String,
    /// `firing` when any alert fires, else `resolved`.
    pub status: &'static str,
    pub alerts: Vec<DataAlert>,
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert has with the same value.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert has with the same value.
    pub common_annotations: BTreeMap<String, String>,
    /// `--web.external-url`.
    pub external_url: String,
    pub group_key: String,
}

pub(super) fn to_map(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .map(|l| (l.name.to_string(), l.value.to_string()))
        .collect()
}

pub(super) fn common(maps: &[BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some(first) = maps.first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| maps[1..].iter().all(|m| m.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl NotificationData {
    /// The data for `alerts` (already sorted) sent to `ctx.receiver` at `ctx.now`.
    pub fn new(ctx: &super::NotifyContext<'_>, alerts: &[Alert]) -> NotificationData {
        let data_alerts: Vec<DataAlert> = alerts
            .iter()
            .map(|a| DataAlert {
                status: a.status_at(ctx.now),
                labels: to_map(&a.labels),
                annotations: a.annotations.clone(),
                starts_at: a.starts_at,
                ends_at: a.ends_at,
                generator_url: a.generator_url.clone(),
                fingerprint: format!("{:016x}", a.fingerprint()),
            })
            .collect();
        let labels: Vec<_> = data_alerts.iter().map(|a| a.labels.clone()).collect();
        let annotations: Vec<_> = data_alerts.iter().map(|a| a.annotations.clone()).collect();
        let firing = data_alerts.iter().any(|a| a.status == "firing");
        NotificationData {
            receiver: ctx.receiver.to_string(),
            status: if firing { "firing" } else { "resolved" },
            alerts: data_alerts,
            group_labels: to_map(ctx.group_labels),
            common_labels: common(&labels),
            common_annotations: common(&annotations),
            external_url: ctx.external_url.to_string(),
            group_key: ctx.group_key.to_string(),
        }
    }

    /// The firing alerts.
    pub fn firing(&self) -> impl Iterator<Item = &DataAlert> {
        self.alerts.iter().filter(|a| a.status == "firing")
    }

    /// The resolved alerts.
    pub fn resolved(&self) -> impl Iterator<Item = &DataAlert> {
        self.alerts.iter().filter(|a| a.status == "resolved")
    }
}

/// Renders one templated field of a receiver config against `data`.
///
/// This is the single place templates are executed; see the module comment for
/// what the stand-in understands.
pub fn render_field(template: &str, data: &NotificationData) -> Result<String, NotifyError> {
    let mut out = String::new();
    let mut rest = template;
    // The stack of `if` branches we are in: whether output is on.
    let mut conds: Vec<(bool, bool)> = Vec::new(); // (condition, in else branch)
    let emitting = |conds: &[(bool, bool)]| conds.iter().all(|(c, e)| *c != *e);
    while let Some(start) = rest.find("{{") {
        if emitting(&conds) {
            out.push_str(&rest[..start]);
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(template_error(template, "unclosed action"));
        };
        let action = after[..end]
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        rest = &after[end + 2..];
        let words: Vec<&str> = action.split_whitespace().collect();
        match words.as_slice() {
            ["if", "eq", ".Status", lit] => {
                let want = lit.trim_matches('"');
                conds.push((data.status == want, false));
            }
            ["else"] => match conds.last_mut() {
                Some((_, e)) if !*e => *e = true,
                _ => return Err(template_error(template, "unexpected {{else}}")),
            },
            ["end"] => {
                if conds.pop().is_none() {
                    return Err(template_error(template, "unexpected {{end}}"));
                }
            }
            ["template", name, "."] => {
                if emitting(&conds) {
                    let name = name.trim_matches('"');
                    out.push_str(&default_template(name, data).ok_or_else(|| {
                        template_error(template, &format!("no such template {name:?}"))
                    })?);
                }
            }
            [field] if field.starts_with('.') => {
                if emitting(&conds) {
                    out.push_str(&field_value(field, data).ok_or_else(|| {
                        template_error(template, &format!("cannot evaluate {field}"))
                    })?);
                }
            }
            _ => {
                return Err(template_error(
                    template,
                    &format!("{{{{{action}}}}} needs the full template engine"),
                ))
            }
        }
    }
    if !conds.is_empty() {
        return Err(template_error(template, "missing {{end}}"));
    }
    out.push_str(rest);
    Ok(out)
}

fn template_error(template: &str, what: &str) -> NotifyError {
    NotifyError::Permanent(format!("template {template:?}: {what}"))
}

fn field_value(field: &str, data: &NotificationData) -> Option<String> {
    let parts: Vec<&str> = field.trim_start_matches('.').split('.').collect();
    let map_get = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
    Some(match parts.as_slice() {
        ["Status"] => data.status.to_string(),
        ["Receiver"] => data.receiver.clone(),
        ["ExternalURL"] => data.external_url.clone(),
        ["GroupKey"] => data.group_key.clone(),
        ["GroupLabels", k] => map_get(&data.group_labels, k),
        ["CommonLabels", k] => map_get(&data.common_labels, k),
        ["CommonAnnotations", k] => map_get(&data.common_annotations, k),
        _ => return None,
    })
}

/// Query-escapes as Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `[FIRING:2] group label values (other common label values)`, the shape of
/// Alertmanager's `__subject`.
fn subject(data: &NotificationData) -> String {
    let mut s = format!("[{}", data.status.to_uppercase());
    if data.status == "firing" {
        s.push_str(&format!(":{}", data.firing().count()));
    }
    s.push_str("] ");
    let values: Vec<&str> = data.group_labels.values().map(String::as_str).collect();
    s.push_str(&values.join(" "));
    s.push(' ');
    if data.common_labels.len() > data.group_labels.len() {
        let rest: Vec<&str> = data
            .common_labels
            .iter()
            .filter(|(k, _)| !data.group_labels.contains_key(*k))
            .map(|(_, v)| v.as_str())
            .collect();
        s.push_str(&format!("({})", rest.join(" ")));
    }
    s
}

fn alerts_url(data: &NotificationData) -> String {
    format!(
        "{}/#/alerts?receiver={}",
        data.external_url,
        query_escape(&data.receiver)
    )
}

fn text_list(data: &NotificationData) -> String {
    let mut s = String::new();
    for a in &data.alerts {
        s.push_str(&format!("[{}]", a.status));
        for (k, v) in &a.labels {
            s.push_str(&format!(" {k}={v}"));
        }
        s.push('\n');
        for (k, v) in &a.annotations {
            s.push_str(&format!("  {k}: {v}\n"));
        }
        if !a.generator_url.is_empty() {
            s.push_str(&format!("  Source: {}\n", a.generator_url));
        }
    }
    s
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
}

fn html(data: &NotificationData) -> String {
    let mut s = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"UTF-8\"><title>");
    s.push_str(&html_escape(&subject(data)));
    s.push_str("</title></head><body>\n");
    s.push_str(&format!(
        "<p><a href=\"{}\">View in Alertmanager</a></p>\n",
        html_escape(&alerts_url(data))
    ));
    for (title, alerts) in [
        ("firing", data.firing().collect::<Vec<_>>()),
        ("resolved", data.resolved().collect()),
    ] {
        if alerts.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "<p><strong>[{}] {} {title}</strong></p>\n<ul>\n",
            alerts.len(),
            if alerts.len() == 1 { "alert" } else { "alerts" }
        ));
        for a in alerts {
            s.push_str("<li>");
            for (k, v) in &a.labels {
                s.push_str(&format!("{} = {}<br>", html_escape(k), html_escape(v)));
            }
            for (k, v) in &a.annotations {
                s.push_str(&format!("{} = {}<br>", html_escape(k), html_escape(v)));
            }
            if !a.generator_url.is_empty() {
                s.push_str(&format!(
                    "<a href=\"{}\">Source</a>",
                    html_escape(&a.generator_url)
                ));
            }
            s.push_str("</li>\n");
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</body></html>\n");
    s
}

/// Short stand-ins for Alertmanager's default templates (`default.tmpl`):
/// the same names and roles, not the same texts.
fn default_template(name: &str, data: &NotificationData) -> Option<String> {
    Some(match name {
        "__alertmanager" | "slack.default.username" => "Alertmanager".to_string(),
        "__alertmanagerURL" | "slack.default.titlelink" => alerts_url(data),
        "__subject" | "email.default.subject" | "slack.default.title" => subject(data),
        "__text_alert_list" | "email.default.text" => text_list(data),
        "email.default.html" => html(data),
        "slack.default.fallback" => format!("{} | {}", subject(data), alerts_url(data)),
        "slack.default.pretext"
        | "slack.default.text"
        | "slack.default.callbackid"
        | "slack.default.iconemoji"
        | "slack.default.iconurl"
        | "slack.default.footer" => String::new(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(status: &'static str) -> NotificationData {
        NotificationData {
            receiver: "team x".into(),
            status,
            alerts: vec![],
            group_labels: [("alertname".to_string(), "Disk".to_string())].into(),
            common_labels: [
                ("alertname".to_string(), "Disk".to_string()),
                ("sev".to_string(), "page".to_string()),
            ]
            .into(),
            common_annotations: BTreeMap::new(),
            external_url: "http://am".into(),
            group_key: "{}:{alertname=\"Disk\"}".into(),
        }
    }

    #[test]
    fn renders_literals_fields_defaults_and_the_colour_condition() {
        let d = data("firing");
        assert_eq!(render_field("plain", &d).unwrap(), "plain");
        assert_eq!(
            render_field("{{ .Status }}/{{ .CommonLabels.sev }}", &d).unwrap(),
            "firing/page"
        );
        let colour = r#"{{ if eq .Status "firing" }}danger{{ else }}good{{ end }}"#;
        assert_eq!(render_field(colour, &d).unwrap(), "danger");
        assert_eq!(render_field(colour, &data("resolved")).unwrap(), "good");
        assert_eq!(
            render_field(r#"{{ template "slack.default.titlelink" . }}"#, &d).unwrap(),
            "http://am/#/alerts?receiver=team+x"
        );
        let subject = render_field(r#"{{ template "email.default.subject" . }}"#, &d).unwrap();
        assert!(subject.starts_with("[FIRING:0] Disk"), "{subject}");
    }

    #[test]
    fn unknown_templates_and_actions_are_errors_naming_them() {
        let d = data("firing");
        let e = render_field(r#"{{ template "nope" . }}"#, &d).unwrap_err();
        assert!(e.to_string().contains("\"nope\""), "{e}");
        let e = render_field("{{ range .Alerts }}x{{ end }}", &d).unwrap_err();
        assert!(e.to_string().contains("range .Alerts"), "{e}");
        assert!(render_field("{{ .Status ", &d).is_err());
    }
}
