//! The Slack integration: Alertmanager's `slack_configs` message (one
//! attachment with title, text, colour, fields and actions) posted as JSON to an
//! incoming-webhook URL, so it also works with Slack-compatible chat servers.

use super::data::{render_field, NotificationData};
use super::http::Poster;
use super::{HttpClient, NotifyError};
use crate::alertmanager::config::{GlobalConfig, SlackConfig};
use serde::Serialize;

/// Alertmanager's default for each templated field that is not written.
const DEFAULT_COLOR: &str = r#"{{ if eq .Status "firing" }}danger{{ else }}good{{ end }}"#;

/// Where the message goes: a URL, or a file holding it (read at each send, as
/// Alertmanager does, so a rotated secret is picked up).
#[derive(Debug, Clone)]
pub(super) enum ApiUrl {
    Url(String),
    File(String),
}

/// A built Slack integration.
pub(super) struct Slack {
    pub(super) api_url: ApiUrl,
    conf: SlackConfig,
    /// Its `http_config`: credentials and TLS.
    poster: Option<Poster>,
}

fn or_default(v: &Option<String>, name: &str) -> String {
    v.clone()
        .unwrap_or_else(|| format!("{{{{ template \"slack.default.{name}\" . }}}}"))
}

impl Slack {
    /// Builds the integration from its config and the global defaults.
    pub(super) fn new(conf: &SlackConfig, global: &GlobalConfig) -> Result<Slack, String> {
        let api_url = match (
            &conf.api_url,
            &conf.api_url_file,
            &global.slack_api_url,
            &global.slack_api_url_file,
        ) {
            (Some(u), _, _, _) => ApiUrl::Url(u.clone()),
            (None, Some(f), _, _) => ApiUrl::File(f.clone()),
            (None, None, Some(u), _) => ApiUrl::Url(u.clone()),
            (None, None, None, Some(f)) => ApiUrl::File(f.clone()),
            (None, None, None, None) => {
                return Err("no global Slack API URL set either inline or in a file".into())
            }
        };
        Ok(Slack {
            api_url,
            conf: conf.clone(),
            poster: None,
        })
    }

    /// Posts with `poster`'s credentials and TLS client.
    pub(super) fn with_poster(mut self, poster: Poster) -> Slack {
        self.poster = Some(poster);
        self
    }

    /// Builds the message for `data`.
    pub(super) fn message(&self, data: &NotificationData) -> Result<SlackMessage, NotifyError> {
        let c = &self.conf;
        let r = |t: &str| render_field(t, data);
        let mrkdwn_in = if c.mrkdwn_in.is_empty() {
            vec!["fallback".into(), "pretext".into(), "text".into()]
        } else {
            c.mrkdwn_in.clone()
        };
        let fields = c
            .fields
            .iter()
            .map(|f| {
                Ok(Field {
                    title: r(&f.title)?,
                    value: r(&f.value)?,
                    short: f.short.unwrap_or(c.short_fields),
                })
            })
            .collect::<Result<Vec<_>, NotifyError>>()?;
        let actions = c
            .actions
            .iter()
            .map(|a| {
                Ok(Action {
                    kind: r(&a.kind)?,
                    text: r(&a.text)?,
                    url: r(&a.url)?,
                    style: r(&a.style)?,
                    name: r(&a.name)?,
                    value: r(&a.value)?,
                    confirm: match &a.confirm {
                        None => None,
                        Some(cf) => Some(Confirm {
                            title: r(&cf.title)?,
                            text: r(&cf.text)?,
                            ok_text: r(&cf.ok_text)?,
                            dismiss_text: r(&cf.dismiss_text)?,
                        }),
                    },
                })
            })
            .collect::<Result<Vec<_>, NotifyError>>()?;
        let attachment = Attachment {
            title: r(&or_default(&c.title, "title"))?,
            title_link: r(&or_default(&c.title_link, "titlelink"))?,
            pretext: r(&or_default(&c.pretext, "pretext"))?,
            text: r(&or_default(&c.text, "text"))?,
            fallback: r(&or_default(&c.fallback, "fallback"))?,
            callback_id: r(&or_default(&c.callback_id, "callbackid"))?,
            fields,
            actions,
            image_url: r(c.image_url.as_deref().unwrap_or(""))?,
            thumb_url: r(c.thumb_url.as_deref().unwrap_or(""))?,
            footer: r(&or_default(&c.footer, "footer"))?,
            color: r(c.color.as_deref().unwrap_or(DEFAULT_COLOR))?,
            mrkdwn_in,
        };
        Ok(SlackMessage {
            channel: r(c.channel.as_deref().unwrap_or(""))?,
            username: r(&or_default(&c.username, "username"))?,
            icon_emoji: r(&or_default(&c.icon_emoji, "iconemoji"))?,
            icon_url: r(&or_default(&c.icon_url, "iconurl"))?,
            link_names: c.link_names,
            attachments: vec![attachment],
        })
    }

    /// Sends one notification. Server errors are retried, client errors not
    /// (Alertmanager 0.25 does not read the response body of a success).
    pub(super) async fn notify(
        &self,
        client: &HttpClient,
        data: &NotificationData,
    ) -> Result<(), NotifyError> {
        let msg = self.message(data)?;
        let body = serde_json::to_vec(&msg)
            .map_err(|e| NotifyError::Permanent(format!("encoding Slack message: {e}")))?;
        let url = match &self.api_url {
            ApiUrl::Url(u) => u.clone(),
            ApiUrl::File(f) => std::fs::read_to_string(f)
                .map_err(|e| NotifyError::Permanent(format!("reading api_url_file {f}: {e}")))?
                .trim()
                .to_string(),
        };
        let sent = match &self.poster {
            Some(p) => p.post(client, &url, body).await,
            None => super::post_json(client, &url, body, None).await,
        };
        sent.map_err(|e| e.map(|m| format!("channel {:?}: {}", msg.channel, redact(&m, &url))))
    }
}

/// Slack webhook URLs are secrets: error messages name only their host.
fn redact(message: &str, url: &str) -> String {
    let host_end = url
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| url[start..].find('/').map(|j| start + j))
        .unwrap_or(url.len());
    message.replace(url, &format!("{}/<redacted>", &url[..host_end]))
}

/// The JSON posted (Alertmanager's `slack.request`), empty optional fields left
/// out as Go's `omitempty` does.
#[derive(Debug, Serialize)]
pub(super) struct SlackMessage {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub icon_emoji: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub icon_url: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub link_names: bool,
    pub attachments: Vec<Attachment>,
}

/// The one attachment of a message.
#[derive(Debug, Serialize)]
pub(super) struct Attachment {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub title_link: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pretext: String,
    pub text: String,
    pub fallback: String,
    pub callback_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image_url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub thumb_url: String,
    pub footer: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub color: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mrkdwn_in: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Field {
    pub title: String,
    pub value: String,
    pub short: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct Action {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub style: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Confirm>,
}

#[derive(Debug, Serialize)]
pub(super) struct Confirm {
    pub title: String,
    pub text: String,
    pub ok_text: String,
    pub dismiss_text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_url_path() {
        assert_eq!(
            redact(
                "POST http://h:1/services/T/B/secret: refused",
                "http://h:1/services/T/B/secret"
            ),
            "POST http://h:1/<redacted>: refused"
        );
    }
}
