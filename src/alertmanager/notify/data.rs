//! The data a notification's templates are rendered from (Alertmanager's
//! `template.Data`) and `render_field`, the one function every templated field
//! of every integration goes through: it expands the field with the default
//! templates and the config's `templates:` files (`alertmanager::template`).

use super::NotifyError;
use crate::alertmanager::template::{Data, Templates};
use crate::alertmanager::types::Alert;

/// The data of one notification and the templates its fields may call.
#[derive(Debug, Clone)]
pub struct NotificationData {
    /// Alertmanager's template data: receiver, status, alerts, group and common
    /// labels, common annotations, external URL.
    pub data: Data,
    templates: Templates,
}

impl NotificationData {
    /// The data for `alerts` (already sorted) sent to `ctx.receiver` at `ctx.now`.
    pub fn new(ctx: &super::NotifyContext<'_>, alerts: &[Alert]) -> NotificationData {
        NotificationData {
            data: Data::new(
                ctx.receiver,
                ctx.group_labels,
                alerts,
                ctx.external_url,
                ctx.now,
            ),
            templates: ctx.templates.clone(),
        }
    }
}

/// Renders one templated field of a receiver config against `data`. A template
/// that fails to execute is a permanent error naming the field's text (a retry
/// would fail the same way).
pub fn render_field(template: &str, data: &NotificationData) -> Result<String, NotifyError> {
    data.templates
        .render(template, &data.data)
        .map_err(|e| NotifyError::Permanent(format!("template {template:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alertmanager::notify::NotifyContext;
    use crate::labels::Labels;

    fn data(resolved: bool) -> NotificationData {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let labels = Labels::from_pairs(&[("alertname", "Disk"), ("sev", "page")]);
        let alert = Alert {
            labels,
            annotations: Default::default(),
            starts_at: now,
            ends_at: if resolved {
                now
            } else {
                crate::alertmanager::types::zero_time()
            },
            generator_url: "".into(),
            updated_at: now,
            timeout: false,
        };
        let templates = Templates::defaults().unwrap();
        let group_labels = Labels::from_pairs(&[("alertname", "Disk")]);
        let ctx = NotifyContext {
            receiver: "team x",
            group_key: "{}:{alertname=\"Disk\"}",
            group_labels: &group_labels,
            external_url: "http://am",
            now,
            templates: &templates,
        };
        NotificationData::new(&ctx, &[alert])
    }

    #[test]
    fn renders_fields_and_default_templates_with_the_engine() {
        let d = data(false);
        assert_eq!(render_field("plain", &d).unwrap(), "plain");
        assert_eq!(
            render_field("{{ .Status }}/{{ .CommonLabels.sev }}", &d).unwrap(),
            "firing/page"
        );
        let colour = r#"{{ if eq .Status "firing" }}danger{{ else }}good{{ end }}"#;
        assert_eq!(render_field(colour, &d).unwrap(), "danger");
        assert_eq!(render_field(colour, &data(true)).unwrap(), "good");
        assert_eq!(
            render_field("{{ range .Alerts }}{{ .Labels.alertname }}{{ end }}", &d).unwrap(),
            "Disk"
        );
        let subject = render_field(r#"{{ template "email.default.subject" . }}"#, &d).unwrap();
        assert!(subject.starts_with("[FIRING:1] Disk"), "{subject}");
    }

    #[test]
    fn unknown_templates_and_bad_actions_are_errors_naming_them() {
        let d = data(false);
        let e = render_field(r#"{{ template "nope" . }}"#, &d).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(render_field("{{ .Status ", &d).is_err());
    }
}
