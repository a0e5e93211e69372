//! A small SMTP client (RFC 5321) with what Alertmanager's email integration
//! uses from Go's `net/smtp`: EHLO (HELO fallback), STARTTLS, implicit TLS,
//! AUTH CRAM-MD5 / PLAIN / LOGIN, MAIL, RCPT, DATA with dot-stuffing, QUIT.
//!
//! Every reply is read with a limit on its size, so a broken server cannot make
//! us buffer without bound.

use rustls::pki_types::ServerName;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest reply line read, in bytes (RFC 5321 allows 512).
pub const REPLY_LINE_LEN_MAX: usize = 4096;
/// Most lines in one multi-line reply.
pub const REPLY_LINES_MAX: usize = 256;

/// An SMTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{code} {text}")]
    Reply { code: u16, text: String },
    #[error("{0}")]
    Protocol(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One SMTP connection.
pub struct SmtpClient {
    conn: BufReader<Box<dyn Stream>>,
    /// The server's host name, for TLS.
    host: String,
    /// What we call ourselves in EHLO.
    local_name: String,
    /// Extensions from the last EHLO (upper-case keyword → parameters).
    ext: Vec<(String, String)>,
    tls: bool,
}

impl SmtpClient {
    /// Connects to `addr` (`host:port`), over TLS from the start when `tls` is
    /// given (port 465), reads the greeting and says EHLO `local_name`.
    pub async fn connect(
        addr: &str,
        host: &str,
        local_name: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<SmtpClient, SmtpError> {
        let tcp = TcpStream::connect(addr).await?;
        let (stream, is_tls): (Box<dyn Stream>, bool) = match tls {
            Some(cfg) => (Box::new(tls_wrap(tcp, host, cfg).await?), true),
            None => (Box::new(tcp), false),
        };
        let mut c = SmtpClient {
            conn: BufReader::new(stream),
            host: host.to_string(),
            local_name: local_name.to_string(),
            ext: Vec::new(),
            tls: is_tls,
        };
        c.expect(220).await?;
        c.hello().await?;
        Ok(c)
    }

    async fn hello(&mut self) -> Result<(), SmtpError> {
        let name = self.local_name.clone();
        let (code, lines) = self.cmd(&format!("EHLO {name}")).await?;
        if code == 250 {
            self.ext = lines
                .iter()
                .skip(1)
                .map(|l| match l.split_once(' ') {
                    Some((k, v)) => (k.to_ascii_uppercase(), v.to_string()),
                    None => (l.to_ascii_uppercase(), String::new()),
                })
                .collect();
            return Ok(());
        }
        self.ext.clear();
        let (code, lines) = self.cmd(&format!("HELO {name}")).await?;
        check(code, &lines, 250)
    }

    /// Whether the server announced `name`, and its parameters.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.ext
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Upgrades the connection with STARTTLS and says EHLO again.
    pub async fn starttls(&mut self, cfg: Arc<rustls::ClientConfig>) -> Result<(), SmtpError> {
        let (code, lines) = self.cmd("STARTTLS").await?;
        check(code, &lines, 220)?;
        let placeholder: Box<dyn Stream> = Box::new(closed_stream());
        let old = std::mem::replace(&mut self.conn, BufReader::new(placeholder));
        if !old.buffer().is_empty() {
            return Err(SmtpError::Protocol(
                "server sent data before the TLS handshake".into(),
            ));
        }
        let stream = old.into_inner();
        let tls = tls_wrap(stream, &self.host, cfg).await?;
        self.conn = BufReader::new(Box::new(tls));
        self.tls = true;
        self.hello().await
    }

    /// Authenticates with `AUTH mech` and the given exchange.
    pub async fn auth(&mut self, auth: &Auth) -> Result<(), SmtpError> {
        match auth {
            Auth::Plain {
                identity,
                username,
                password,
            } => {
                let resp = base64(format!("{identity}\0{username}\0{password}").as_bytes());
                let (code, lines) = self.cmd(&format!("AUTH PLAIN {resp}")).await?;
                check(code, &lines, 235)
            }
            Auth::Login { username, password } => {
                let (code, lines) = self.cmd("AUTH LOGIN").await?;
                check(code, &lines, 334)?;
                let (code, lines) = self.cmd(&base64(username.as_bytes())).await?;
                check(code, &lines, 334)?;
                let (code, lines) = self.cmd(&base64(password.as_bytes())).await?;
                check(code, &lines, 235)
            }
            Auth::CramMd5 { username, secret } => {
                let (code, lines) = self.cmd("AUTH CRAM-MD5").await?;
                check(code, &lines, 334)?;
                let challenge = base64_decode(lines.first().map(String::as_str).unwrap_or(""))
                    .ok_or_else(|| SmtpError::Protocol("bad CRAM-MD5 challenge".into()))?;
                let digest = hmac_md5(secret.as_bytes(), &challenge);
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                let (code, lines) = self
                    .cmd(&base64(format!("{username} {hex}").as_bytes()))
                    .await?;
                check(code, &lines, 235)
            }
        }
    }

    /// MAIL FROM, RCPT TO for each recipient, then DATA with `message` (CRLF
    /// line ends), dot-stuffed.
    pub async fn send(
        &mut self,
        from: &str,
        to: &[String],
        message: &[u8],
    ) -> Result<(), SmtpError> {
        let (code, lines) = self.cmd(&format!("MAIL FROM:<{from}>")).await?;
        check(code, &lines, 250)
            .map_err(|e| SmtpError::Protocol(format!("sending mail from: {e}")))?;
        for rcpt in to {
            let (code, lines) = self.cmd(&format!("RCPT TO:<{rcpt}>")).await?;
            check(code, &lines, 25)
                .map_err(|e| SmtpError::Protocol(format!("sending rcpt to: {e}")))?;
        }
        let (code, lines) = self.cmd("DATA").await?;
        check(code, &lines, 354)?;
        let mut out = Vec::with_capacity(message.len() + 64);
        let mut at_line_start = true;
        for &b in message {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.conn.get_mut().write_all(&out).await?;
        self.conn.get_mut().flush().await?;
        let (code, lines) = self.read_reply().await?;
        check(code, &lines, 250)
    }

    /// Says QUIT and waits for the answer.
    pub async fn quit(mut self) -> Result<(), SmtpError> {
        let (code, lines) = self.cmd("QUIT").await?;
        check(code, &lines, 221)
    }

    async fn cmd(&mut self, line: &str) -> Result<(u16, Vec<String>), SmtpError> {
        let w = self.conn.get_mut();
        w.write_all(line.as_bytes()).await?;
        w.write_all(b"\r\n").await?;
        w.flush().await?;
        self.read_reply().await
    }

    async fn expect(&mut self, want: u16) -> Result<(), SmtpError> {
        let (code, lines) = self.read_reply().await?;
        check(code, &lines, want)
    }

    /// Reads one (possibly multi-line) reply: its code and the text of each line.
    async fn read_reply(&mut self) -> Result<(u16, Vec<String>), SmtpError> {
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = (&mut self.conn)
                .take(REPLY_LINE_LEN_MAX as u64)
                .read_until(b'\n', &mut buf)
                .await?;
            if n == 0 {
                return Err(SmtpError::Protocol("connection closed by server".into()));
            }
            if !buf.ends_with(b"\n") {
                return Err(SmtpError::Protocol(format!(
                    "reply line longer than {REPLY_LINE_LEN_MAX} bytes"
                )));
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if line.len() < 3 || !line.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
                return Err(SmtpError::Protocol(format!("malformed reply {line:?}")));
            }
            let code: u16 = line[..3].parse().unwrap_or(0);
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok((code, lines));
            }
            if lines.len() >= REPLY_LINES_MAX {
                return Err(SmtpError::Protocol(format!(
                    "reply longer than {REPLY_LINES_MAX} lines"
                )));
            }
        }
    }
}

/// An authentication exchange.
#[derive(Debug, Clone)]
pub enum Auth {
    Plain {
        identity: String,
        username: String,
        password: String,
    },
    Login {
        username: String,
        password: String,
    },
    CramMd5 {
        username: String,
        secret: String,
    },
}

/// Accepts `code` exactly, or any code of the class when `want` < 100 (`25` is 25x).
fn check(code: u16, lines: &[String], want: u16) -> Result<(), SmtpError> {
    let ok = if want < 100 {
        code / 10 == want
    } else {
        code == want
    };
    if ok {
        Ok(())
    } else {
        Err(SmtpError::Reply {
            code,
            text: lines.join("\n"),
        })
    }
}

async fn tls_wrap<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    host: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<S>, SmtpError> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| SmtpError::Protocol(format!("invalid TLS server name {host:?}: {e}")))?;
    let conn = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, stream)
        .await?;
    Ok(conn)
}

/// A closed in-memory stream: a placeholder while the TCP stream moves into TLS.
fn closed_stream() -> tokio::io::DuplexStream {
    tokio::io::duplex(1).0
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on bad input.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim().bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// HMAC-MD5 (RFC 2104), for CRAM-MD5.
fn hmac_md5(key: &[u8], msg: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..16].copy_from_slice(&Md5::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Md5::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Md5::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "\0user\0pass",
        ] {
            assert_eq!(base64_decode(&base64(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fo"), "Zm8=");
    }

    #[test]
    fn hmac_md5_matches_rfc_2104() {
        // RFC 2104's second test vector.
        let d = hmac_md5(b"Jefe", b"what do ya want for nothing?");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "750c783e6ab0b503eaa86e310a5db738");
    }
}
