//! The webhook notification body, byte for byte as Alertmanager 0.25's webhook
//! notifier writes it: the alerts truncated to `max_alerts` first, the template
//! data of what is left (receiver name regex-quoted, firing alerts' `endsAt`
//! as Go's zero time), version 4, and the JSON as Go's `json.Encoder` writes
//! it (struct fields in declaration order, map keys sorted, `<`, `>` and `&`
//! escaped as `\u003c` …, a trailing newline). Written straight from the
//! shared alerts, with no intermediate copies.

use super::NotifyContext;
use crate::alertmanager::template::quote_meta;
use crate::alertmanager::types::{format_rfc3339_nano, zero_time, Alert};
use crate::labels::Labels;
use std::collections::BTreeMap;

/// The webhook body for `alerts` (already sorted); `max_alerts` 0 means all.
pub fn webhook_body(ctx: &NotifyContext<'_>, alerts: &[Alert], max_alerts: u64) -> Vec<u8> {
    let keep = match usize::try_from(max_alerts) {
        Ok(0) | Err(_) => alerts.len(),
        Ok(m) => alerts.len().min(m),
    };
    let truncated = alerts.len() - keep;
    let alerts = &alerts[..keep];
    let firing = alerts.iter().any(|a| !a.resolved_at(ctx.now));

    let mut out = Vec::with_capacity(512 + alerts.len() * 512);
    out.extend_from_slice(b"{\"receiver\":");
    go_string(&mut out, &quote_meta(ctx.receiver));
    out.extend_from_slice(b",\"status\":");
    go_string(&mut out, if firing { "firing" } else { "resolved" });
    out.extend_from_slice(b",\"alerts\":[");
    for (i, a) in alerts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let resolved = a.resolved_at(ctx.now);
        out.extend_from_slice(b"{\"status\":");
        go_string(&mut out, if resolved { "resolved" } else { "firing" });
        out.extend_from_slice(b",\"labels\":");
        go_labels(&mut out, &a.labels);
        out.extend_from_slice(b",\"annotations\":");
        go_map(
            &mut out,
            a.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        out.extend_from_slice(b",\"startsAt\":");
        go_string(&mut out, &format_rfc3339_nano(a.starts_at));
        out.extend_from_slice(b",\"endsAt\":");
        // An end that is not reached yet is not shown (Alertmanager's
        // `types.Alerts`).
        let ends_at = if resolved { a.ends_at } else { zero_time() };
        go_string(&mut out, &format_rfc3339_nano(ends_at));
        out.extend_from_slice(b",\"generatorURL\":");
        go_string(&mut out, &a.generator_url);
        out.extend_from_slice(b",\"fingerprint\":");
        go_string(&mut out, &format!("{:016x}", a.fingerprint()));
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"groupLabels\":");
    go_labels(&mut out, ctx.group_labels);
    out.extend_from_slice(b",\"commonLabels\":");
    let common_labels = common(alerts.iter().map(|a| {
        a.labels
            .iter()
            .map(|l| (l.name, l.value))
            .collect::<BTreeMap<_, _>>()
    }));
    go_map(&mut out, common_labels.into_iter());
    out.extend_from_slice(b",\"commonAnnotations\":");
    let common_annotations = common(alerts.iter().map(|a| {
        a.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<BTreeMap<_, _>>()
    }));
    go_map(&mut out, common_annotations.into_iter());
    out.extend_from_slice(b",\"externalURL\":");
    go_string(&mut out, ctx.external_url);
    out.extend_from_slice(b",\"version\":\"4\",\"groupKey\":");
    go_string(&mut out, ctx.group_key);
    out.extend_from_slice(format!(",\"truncatedAlerts\":{truncated}}}\n").as_bytes());
    out
}

/// The pairs every map has with the same value.
fn common<'a>(
    mut maps: impl Iterator<Item = BTreeMap<&'a str, &'a str>>,
) -> BTreeMap<&'a str, &'a str> {
    let Some(mut acc) = maps.next() else {
        return BTreeMap::new();
    };
    for m in maps {
        if acc.is_empty() {
            break;
        }
        acc.retain(|k, v| m.get(k) == Some(v));
    }
    acc
}

fn go_labels(out: &mut Vec<u8>, labels: &Labels) {
    go_map(out, labels.iter().map(|l| (l.name, l.value)));
}

/// A JSON object of pairs given in key order (Go sorts map keys bytewise, as
/// `BTreeMap<String, _>` and label sets are ordered).
fn go_map<'a>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push(b'{');
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        go_string(out, k);
        out.push(b':');
        go_string(out, v);
    }
    out.push(b'}');
}

/// A JSON string as Go's `encoding/json` writes it with HTML escaping on (the
/// `json.Encoder` default; Go 1.19, which Debian's Alertmanager 0.25 is built
/// with): `\"`, `\\`, `\n`, `\r`, `\t`, every other control character and `<`,
/// `>`, `&`, U+2028 and U+2029 as `\u00XX` with lowercase hex digits.
pub fn go_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' => {
                let b = c as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alertmanager::template::Templates;
    use jiff::Timestamp;
    use std::sync::Arc;

    fn s(v: &str) -> String {
        let mut out = Vec::new();
        go_string(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_go_does() {
        assert_eq!(s("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(s("q\"\\\n\r\t"), r#""q\"\\\n\r\t""#);
        assert_eq!(s("\u{8}\u{c}\u{1}\u{1f}"), r#""\u0008\u000c\u0001\u001f""#);
        assert_eq!(s("\u{2028}\u{2029}é\u{7f}"), "\"\\u2028\\u2029é\u{7f}\"");
    }

    fn alert(name: &str, ann: &str, ends: Timestamp) -> Alert {
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        Alert {
            labels: Labels::from_pairs(&[("alertname", "A"), ("n", name)]),
            annotations: Arc::new(BTreeMap::from([("s".to_string(), ann.to_string())])),
            starts_at: t,
            ends_at: ends,
            generator_url: "http://x/graph?g0.expr=a&b".into(),
            updated_at: t,
            timeout: false,
        }
    }

    #[test]
    fn body_is_truncated_first_and_encoded_like_alertmanager() {
        let now = Timestamp::from_second(1_700_000_100).unwrap();
        let later = Timestamp::from_second(1_700_003_600).unwrap();
        let templates = Templates::defaults().unwrap();
        let group_labels = Labels::from_pairs(&[("alertname", "A")]);
        let ctx = NotifyContext {
            receiver: "team.x",
            group_key: "{}:{alertname=\"A\"}",
            group_labels: &group_labels,
            external_url: "http://am:9093",
            now,
            templates: &templates,
        };
        // The second alert differs in its annotation; truncated away, it no
        // longer removes the annotation from the common ones.
        let alerts = [alert("1", "x", later), alert("2", "y", now)];
        let body = String::from_utf8(webhook_body(&ctx, &alerts, 1)).unwrap();
        let want = concat!(
            r#"{"receiver":"team\\.x","status":"firing","alerts":[{"status":"firing","#,
            r#""labels":{"alertname":"A","n":"1"},"annotations":{"s":"x"},"#,
            r#""startsAt":"2023-11-14T22:13:20Z","endsAt":"0001-01-01T00:00:00Z","#,
            r#""generatorURL":"http://x/graph?g0.expr=a\u0026b","fingerprint":""#,
        );
        assert!(body.starts_with(want), "{body}");
        assert!(body.ends_with(concat!(
            r#""groupLabels":{"alertname":"A"},"commonLabels":{"alertname":"A","n":"1"},"#,
            r#""commonAnnotations":{"s":"x"},"externalURL":"http://am:9093","version":"4","#,
            r#""groupKey":"{}:{alertname=\"A\"}","truncatedAlerts":1}"#,
            "\n"
        )));
        // All of them: the resolved one shows its end; commons shrink.
        let body = String::from_utf8(webhook_body(&ctx, &alerts, 0)).unwrap();
        assert!(body.contains(r#""status":"resolved","labels":{"alertname":"A","n":"2"}"#));
        assert!(
            body.contains(r#""endsAt":"2023-11-14T22:15:00Z""#),
            "{body}"
        );
        assert!(body.contains(r#""commonLabels":{"alertname":"A"},"commonAnnotations":{},"#));
        assert!(body.contains(r#""truncatedAlerts":0}"#));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["alerts"][0]["generatorURL"], "http://x/graph?g0.expr=a&b");
    }
}
