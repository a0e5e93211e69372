//! The email integration: Alertmanager's `email_configs` over SMTP — the
//! `global.smtp_*` defaults, STARTTLS when `require_tls` (the default), implicit
//! TLS on port 465, authentication chosen from what the server offers, templated
//! headers, and a `multipart/alternative` body of the text and HTML parts in
//! quoted-printable.

use super::data::{render_field, NotificationData};
use super::smtp::{Auth, SmtpClient, SmtpError};
use super::NotifyError;
use crate::alertmanager::config::{canonical_header, EmailConfig, GlobalConfig};
use crate::config::TlsConfig;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Alertmanager's default `smtp_hello`.
pub const DEFAULT_HELLO: &str = "localhost";
const DEFAULT_SUBJECT: &str = r#"{{ template "email.default.subject" . }}"#;
const DEFAULT_HTML: &str = r#"{{ template "email.default.html" . }}"#;

/// A built email integration: the config with the global defaults applied.
#[derive(Debug, Clone)]
pub(super) struct Email {
    to: String,
    from: String,
    hello: String,
    smarthost: String,
    auth_username: String,
    auth_password: String,
    auth_secret: String,
    auth_identity: String,
    require_tls: bool,
    tls_config: TlsConfig,
    /// Header templates by canonical name; always has Subject, To and From.
    headers: BTreeMap<String, String>,
    html: String,
    text: String,
}

fn read_secret(inline: &Option<String>, file: &Option<String>) -> Result<String, String> {
    match (inline, file) {
        (Some(s), _) if !s.is_empty() => Ok(s.clone()),
        (_, Some(f)) if !f.is_empty() => std::fs::read_to_string(f)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("reading {f}: {e}")),
        _ => Ok(String::new()),
    }
}

fn pick(own: &str, global: &Option<String>) -> String {
    if own.is_empty() {
        global.clone().unwrap_or_default()
    } else {
        own.to_string()
    }
}

impl Email {
    /// Applies the global defaults to `c`, as Alertmanager does when it loads
    /// the config.
    pub(super) fn new(c: &EmailConfig, g: &GlobalConfig) -> Result<Email, String> {
        let own_password = read_secret(&c.auth_password, &c.auth_password_file)?;
        let auth_password = if own_password.is_empty() {
            read_secret(&g.smtp_auth_password, &g.smtp_auth_password_file)?
        } else {
            own_password
        };
        let own_secret = read_secret(&c.auth_secret, &c.auth_secret_file)?;
        let auth_secret = if own_secret.is_empty() {
            read_secret(&g.smtp_auth_secret, &g.smtp_auth_secret_file)?
        } else {
            own_secret
        };
        let mut headers: BTreeMap<String, String> = c
            .headers
            .iter()
            .map(|(k, v)| (canonical_header(k), v.clone()))
            .collect();
        let from = pick(&c.from, &g.smtp_from);
        headers
            .entry("Subject".into())
            .or_insert_with(|| DEFAULT_SUBJECT.into());
        headers.entry("To".into()).or_insert_with(|| c.to.clone());
        headers.entry("From".into()).or_insert_with(|| from.clone());
        let smarthost = pick(&c.smarthost, &g.smtp_smarthost);
        if smarthost.is_empty() {
            return Err("no global SMTP smarthost set".into());
        }
        Ok(Email {
            to: c.to.clone(),
            from,
            hello: {
                let h = pick(&c.hello, &g.smtp_hello);
                if h.is_empty() {
                    DEFAULT_HELLO.into()
                } else {
                    h
                }
            },
            smarthost,
            auth_username: pick(
                c.auth_username.as_deref().unwrap_or(""),
                &g.smtp_auth_username,
            ),
            auth_password,
            auth_secret,
            auth_identity: pick(
                c.auth_identity.as_deref().unwrap_or(""),
                &g.smtp_auth_identity,
            ),
            require_tls: c.require_tls.or(g.smtp_require_tls).unwrap_or(true),
            tls_config: c
                .tls_config
                .clone()
                .or_else(|| g.smtp_tls_config.clone())
                .unwrap_or_default(),
            headers,
            html: c.html.clone().unwrap_or_else(|| DEFAULT_HTML.into()),
            text: c.text.clone().unwrap_or_default(),
        })
    }

    fn tls(&self, host: &str) -> Result<Arc<rustls::ClientConfig>, NotifyError> {
        use crate::scrape::tls;
        let what = format!("email to {}", self.to);
        let material = tls::read_material(&what, &self.tls_config)
            .map_err(|e| NotifyError::Permanent(e.to_string()))?;
        let mut cfg = tls::client_config(&what, &self.tls_config, &material)
            .map_err(|e| NotifyError::Permanent(e.to_string()))?;
        // Go's TLS dialer speaks no ALPN to mail servers either.
        cfg.alpn_protocols.clear();
        let _ = host;
        Ok(Arc::new(cfg))
    }

    /// The auth exchange to use among the mechanisms the server offers, in the
    /// server's order, as Alertmanager picks it; `None` without a username.
    fn auth(&self, mechs: &str, tls: bool, host: &str) -> Result<Option<Auth>, String> {
        if self.auth_username.is_empty() {
            return Ok(None);
        }
        let mut errs = Vec::new();
        for mech in mechs.split(' ') {
            match mech {
                "CRAM-MD5" => {
                    if self.auth_secret.is_empty() {
                        errs.push("missing secret for CRAM-MD5 auth mechanism".to_string());
                        continue;
                    }
                    return Ok(Some(Auth::CramMd5 {
                        username: self.auth_username.clone(),
                        secret: self.auth_secret.clone(),
                    }));
                }
                "PLAIN" => {
                    if self.auth_password.is_empty() {
                        errs.push("missing password for PLAIN auth mechanism".to_string());
                        continue;
                    }
                    // Go's PlainAuth sends the password only over TLS or to
                    // this machine.
                    if !tls && !matches!(host, "localhost" | "127.0.0.1" | "::1") {
                        return Err("unencrypted connection".into());
                    }
                    return Ok(Some(Auth::Plain {
                        identity: self.auth_identity.clone(),
                        username: self.auth_username.clone(),
                        password: self.auth_password.clone(),
                    }));
                }
                "LOGIN" => {
                    if self.auth_password.is_empty() {
                        errs.push("missing password for LOGIN auth mechanism".to_string());
                        continue;
                    }
                    return Ok(Some(Auth::Login {
                        username: self.auth_username.clone(),
                        password: self.auth_password.clone(),
                    }));
                }
                _ => {}
            }
        }
        if errs.is_empty() {
            errs.push(format!("unknown auth mechanism: {mechs}"));
        }
        Err(errs.join("; "))
    }

    /// Sends one notification: connection and server errors are retried,
    /// template and address errors are not.
    pub(super) async fn notify(&self, data: &NotificationData) -> Result<(), NotifyError> {
        let retry = |e: String| NotifyError::Retryable(format!("{}: {e}", self.smarthost));
        let (host, port) = split_host_port(&self.smarthost).ok_or_else(|| {
            NotifyError::Permanent(format!("invalid address: {}", self.smarthost))
        })?;
        let implicit_tls = if port == "465" {
            Some(self.tls(&host)?)
        } else {
            None
        };
        let mut c = SmtpClient::connect(&self.smarthost, &host, &self.hello, implicit_tls)
            .await
            .map_err(|e| retry(e.to_string()))?;
        let res = self.exchange(&mut c, &host, data).await;
        let quit = c.quit().await;
        res?;
        if let Err(e) = quit {
            tracing::debug!(error = %e, "failed to close SMTP connection");
        }
        Ok(())
    }

    async fn exchange(
        &self,
        c: &mut SmtpClient,
        host: &str,
        data: &NotificationData,
    ) -> Result<(), NotifyError> {
        let retry = |e: String| NotifyError::Retryable(format!("{}: {e}", self.smarthost));
        if self.require_tls && !c.is_tls() {
            if c.extension("STARTTLS").is_none() {
                return Err(retry(format!(
                    "require_tls: true (default), but {:?} does not advertise the STARTTLS extension",
                    self.smarthost
                )));
            }
            let cfg = self.tls(host)?;
            c.starttls(cfg)
                .await
                .map_err(|e| retry(format!("starttls failed: {e}")))?;
        }
        if let Some(mechs) = c.extension("AUTH").map(str::to_string) {
            if let Some(auth) = self.auth(&mechs, c.is_tls(), host).map_err(retry)? {
                c.auth(&auth)
                    .await
                    .map_err(|e| retry(format!("authentication failed: {e}")))?;
            }
        }
        let from = render_field(&self.from, data)?;
        let to = render_field(&self.to, data)?;
        let from = parse_address_list(&from)
            .map_err(|e| NotifyError::Permanent(format!("parsing from addresses: {e}")))?;
        if from.len() != 1 {
            return Err(NotifyError::Permanent(
                "must be exactly one from address".into(),
            ));
        }
        let to = parse_address_list(&to)
            .map_err(|e| NotifyError::Permanent(format!("parsing to addresses: {e}")))?;
        let message = self.message(data)?;
        c.send(&from[0], &to, &message)
            .await
            .map_err(|e: SmtpError| retry(e.to_string()))
    }

    /// The message: rendered headers, then the multipart body.
    fn message(&self, data: &NotificationData) -> Result<Vec<u8>, NotifyError> {
        let mut out = String::new();
        for (name, t) in &self.headers {
            let value = render_field(t, data).map_err(|e| {
                NotifyError::Permanent(format!("executing {name:?} header template: {e}"))
            })?;
            out.push_str(&format!("{name}: {}\r\n", q_encode(&value)));
        }
        let boundary = {
            let r = ulid::Ulid::new().random() ^ (ulid::Ulid::new().random() << 48);
            format!("{r:030x}{:030x}", ulid::Ulid::new().random())
        };
        let boundary = &boundary[boundary.len() - 60..];
        out.push_str(&format!(
            "Date: {}\r\n",
            jiff::Zoned::now().strftime("%a, %d %b %Y %H:%M:%S %z")
        ));
        out.push_str(&format!(
            "Content-Type: multipart/alternative;  boundary={boundary}\r\n"
        ));
        out.push_str("MIME-Version: 1.0\r\n\r\n");
        let mut first = true;
        // The text part first and HTML last: the preferred alternative goes
        // last (RFC 2046, 5.1.4).
        for (body, kind) in [(&self.text, "plain"), (&self.html, "html")] {
            if body.is_empty() {
                continue;
            }
            let rendered = render_field(body, data)?;
            if !first {
                out.push_str("\r\n");
            }
            first = false;
            out.push_str(&format!(
                "--{boundary}\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Type: text/{kind}; charset=UTF-8\r\n\r\n"
            ));
            out.push_str(&quoted_printable(&rendered));
        }
        out.push_str(&format!("\r\n--{boundary}--\r\n"));
        Ok(out.into_bytes())
    }
}

fn split_host_port(s: &str) -> Option<(String, String)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((host.to_string(), port.to_string()))
}

/// The addresses of an RFC 5322 address list: `a@b`, `Name <a@b>`,
/// `"Quoted, Name" <a@b>`, separated by commas.
pub fn parse_address_list(s: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut angle = false;
    for ch in s.chars() {
        match ch {
            '"' if !angle => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if quoted || angle {
        return Err(format!("mail: unclosed quote or angle bracket in {s:?}"));
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            return Err("mail: no address".into());
        }
        let addr = match (p.rfind('<'), p.ends_with('>')) {
            (Some(i), true) => p[i + 1..p.len() - 1].trim(),
            (None, false) => p,
            _ => return Err(format!("mail: malformed address {p:?}")),
        };
        let valid = addr
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
            && !addr.contains(char::is_whitespace);
        if !valid {
            return Err(format!("mail: missing @ in addr-spec {addr:?}"));
        }
        out.push(addr.to_string());
    }
    Ok(out)
}

/// A header value as Go's `mime.QEncoding.Encode("utf-8", v)`: unchanged when
/// it is printable ASCII, else RFC 2047 encoded-words of at most 75 bytes.
fn q_encode(v: &str) -> String {
    let plain = v.bytes().all(|b| (b' '..=b'~').contains(&b) || b == b'\t');
    if plain {
        return v.to_string();
    }
    const PREFIX: &str = "=?utf-8?q?";
    const MAX_LEN: usize = 75 - PREFIX.len() - 2;
    let mut words = Vec::new();
    let mut cur = String::new();
    for ch in v.chars() {
        let mut enc = String::new();
        let mut buf = [0u8; 4];
        for &b in ch.encode_utf8(&mut buf).as_bytes() {
            match b {
                b' ' => enc.push('_'),
                b'!'..=b'~' if b != b'=' && b != b'?' && b != b'_' => enc.push(b as char),
                _ => enc.push_str(&format!("={b:02X}")),
            }
        }
        if cur.len() + enc.len() > MAX_LEN {
            words.push(std::mem::take(&mut cur));
        }
        cur.push_str(&enc);
    }
    words.push(cur);
    words
        .iter()
        .map(|w| format!("{PREFIX}{w}?="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quoted-printable (RFC 2045) as Go's `quotedprintable.Writer` writes text:
/// line breaks become CRLF, lines are soft-broken before 76 characters, and
/// `=`, control bytes, non-ASCII and trailing blanks are escaped.
pub fn quoted_printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    let normalized = s.replace("\r\n", "\n");
    let mut lines = normalized.split('\n').peekable();
    while let Some(line) = lines.next() {
        let bytes = line.as_bytes();
        let mut col = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let enc = match b {
                b' ' | b'\t' if last => format!("={b:02X}"),
                b' ' | b'\t' => (b as char).to_string(),
                b'=' => "=3D".to_string(),
                b'!'..=b'~' => (b as char).to_string(),
                _ => format!("={b:02X}"),
            };
            if col + enc.len() > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            col += enc.len();
            out.push_str(&enc);
        }
        if lines.peek().is_some() {
            out.push_str("\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_address_lists() {
        assert_eq!(
            parse_address_list(r#"a@x.org, "Ops, Team" <ops@x.org>, Bob <b@y>"#).unwrap(),
            vec!["a@x.org", "ops@x.org", "b@y"]
        );
        assert!(parse_address_list("nobody").is_err());
        assert!(parse_address_list("a@b,").is_err());
        assert!(parse_address_list("<a@b").is_err());
    }

    #[test]
    fn encodes_headers_and_bodies() {
        assert_eq!(q_encode("[FIRING:1] Disk"), "[FIRING:1] Disk");
        assert_eq!(q_encode("Grüße"), "=?utf-8?q?Gr=C3=BC=C3=9Fe?=");
        let long = "é".repeat(40);
        for w in q_encode(&long).split(' ') {
            assert!(w.len() <= 75, "{w}");
        }
        assert_eq!(quoted_printable("a=b \nc"), "a=3Db=20\r\nc");
        let qp = quoted_printable(&"x".repeat(200));
        assert!(qp.split("\r\n").all(|l| l.len() <= 76), "{qp}");
        assert_eq!(qp.replace("=\r\n", ""), "x".repeat(200));
    }

    fn email(mut c: EmailConfig, g: GlobalConfig) -> Email {
        c.to = "ops@x.org".into();
        Email::new(&c, &g).unwrap()
    }

    fn blank() -> EmailConfig {
        EmailConfig {
            send_resolved: false,
            to: String::new(),
            from: String::new(),
            hello: String::new(),
            smarthost: String::new(),
            auth_username: None,
            auth_password: None,
            auth_password_file: None,
            auth_secret: None,
            auth_secret_file: None,
            auth_identity: None,
            headers: BTreeMap::new(),
            html: None,
            text: None,
            require_tls: None,
            tls_config: None,
            threading: None,
        }
    }

    #[test]
    fn global_defaults_fill_what_the_receiver_leaves_out() {
        let g = GlobalConfig {
            smtp_from: Some("am@x.org".into()),
            smtp_smarthost: Some("mail:25".into()),
            smtp_auth_username: Some("u".into()),
            smtp_auth_password: Some("p".into()),
            ..GlobalConfig::default()
        };
        let e = email(blank(), g.clone());
        assert_eq!(e.from, "am@x.org");
        assert_eq!(e.smarthost, "mail:25");
        assert_eq!(e.hello, "localhost");
        assert!(e.require_tls);
        assert_eq!(e.headers["From"], "am@x.org");
        assert_eq!(e.headers["To"], "ops@x.org");
        assert!(e.headers.contains_key("Subject"));
        let mut own = blank();
        own.smarthost = "other:587".into();
        own.require_tls = Some(false);
        own.headers.insert("subject".into(), "custom".into());
        let e = email(own, g);
        assert_eq!(e.smarthost, "other:587");
        assert!(!e.require_tls);
        assert_eq!(e.headers["Subject"], "custom");
        assert!(matches!(
            e.auth("LOGIN PLAIN", false, "mail").unwrap(),
            Some(Auth::Login { .. })
        ));
        assert_eq!(
            e.auth("PLAIN", false, "mail").unwrap_err(),
            "unencrypted connection"
        );
        assert!(e
            .auth("XOAUTH2", true, "mail")
            .unwrap_err()
            .contains("unknown"));
    }
}
