//! TLS for https scraping: turns a job's `tls_config` into a rustls client
//! configuration the way Prometheus's HTTP client (prometheus/common) does:
//! CA from `ca_file`/`ca` or else the system's roots, a client certificate from
//! `cert_file`/`cert` + `key_file`/`key`, `server_name` for SNI and
//! verification, `insecure_skip_verify`, and `min_version`/`max_version`.
//!
//! The files are read by `read_material`, kept beside the built client, and
//! compared at each scrape, so a rotated certificate is picked up as Prometheus
//! picks it up, and a missing file is the target's error, never a panic.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsConfig;

/// Largest CA, certificate or key file read.
const TLS_FILE_BYTES_MAX: u64 = 4 << 20;

/// Why a job's `tls_config` could not be turned into a client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsSetupError {
    #[error("job {job:?}: unable to load specified CA cert {file}: {message}")]
    CaFile {
        job: String,
        file: String,
        message: String,
    },
    #[error("job {job:?}: unable to use specified CA cert {what}: {message}")]
    CaParse {
        job: String,
        what: String,
        message: String,
    },
    #[error("job {job:?}: unable to read specified client {kind} {file}: {message}")]
    ClientFile {
        job: String,
        kind: &'static str,
        file: String,
        message: String,
    },
    #[error("job {job:?}: unable to use specified client cert ({cert}) & key ({key}): {message}")]
    ClientCert {
        job: String,
        cert: String,
        key: String,
        message: String,
    },
    #[error("job {job:?}: tls_config: {message}")]
    Invalid { job: String, message: String },
    #[error("job {job:?}: unable to load the system's CA certificates: {message}")]
    SystemRoots { job: String, message: String },
}

/// The bytes of a `tls_config`'s files (or inline PEM), compared at each scrape
/// to notice rotated files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

/// Reads the CA, certificate and key of `tls` (files or inline text).
pub fn read_material(job: &str, tls: &TlsConfig) -> Result<TlsMaterial, TlsSetupError> {
    let invalid = |message: &str| TlsSetupError::Invalid {
        job: job.to_string(),
        message: message.to_string(),
    };
    if tls.ca.is_some() && tls.ca_file.is_some() {
        return Err(invalid("at most one of ca and ca_file must be configured"));
    }
    if tls.cert.is_some() && tls.cert_file.is_some() {
        return Err(invalid(
            "at most one of cert and cert_file must be configured",
        ));
    }
    if tls.key.is_some() && tls.key_file.is_some() {
        return Err(invalid(
            "at most one of key and key_file must be configured",
        ));
    }
    let has_cert = tls.cert.is_some() || tls.cert_file.is_some();
    let has_key = tls.key.is_some() || tls.key_file.is_some();
    if has_cert && !has_key {
        return Err(invalid("client cert specified without client key"));
    }
    if has_key && !has_cert {
        return Err(invalid("client key specified without client cert"));
    }
    let ca = match (&tls.ca, &tls.ca_file) {
        (Some(text), _) => Some(text.as_bytes().to_vec()),
        (None, Some(file)) => Some(read_file(file).map_err(|message| TlsSetupError::CaFile {
            job: job.to_string(),
            file: file.clone(),
            message,
        })?),
        (None, None) => None,
    };
    let client =
        |kind: &'static str, text: &Option<String>, file: &Option<String>| match (text, file) {
            (Some(text), _) => Ok(Some(text.as_bytes().to_vec())),
            (None, Some(file)) => {
                read_file(file)
                    .map(Some)
                    .map_err(|message| TlsSetupError::ClientFile {
                        job: job.to_string(),
                        kind,
                        file: file.clone(),
                        message,
                    })
            }
            (None, None) => Ok(None),
        };
    Ok(TlsMaterial {
        ca,
        cert: client("cert", &tls.cert, &tls.cert_file)?,
        key: client("key", &tls.key, &tls.key_file)?,
    })
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > TLS_FILE_BYTES_MAX {
        return Err(format!("file larger than {TLS_FILE_BYTES_MAX} bytes"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// The TLS versions `min_version`..=`max_version` allow, among those rustls
/// speaks (1.2 and 1.3; Go's default minimum is 1.2 as well).
fn versions(
    job: &str,
    tls: &TlsConfig,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsSetupError> {
    let rank = |v: &Option<String>, default: u8| -> Result<u8, TlsSetupError> {
        match v.as_deref() {
            None | Some("") => Ok(default),
            Some("TLS10") => Ok(10),
            Some("TLS11") => Ok(11),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(other) => Err(TlsSetupError::Invalid {
                job: job.to_string(),
                message: format!("unknown TLS version: {other}"),
            }),
        }
    };
    let min = rank(&tls.min_version, 12)?;
    let max = rank(&tls.max_version, 13)?;
    if min > max {
        return Err(TlsSetupError::Invalid {
            job: job.to_string(),
            message: format!(
                "max_version must be greater than or equal to min_version, got min_version {} and max_version {}",
                tls.min_version.as_deref().unwrap_or(""),
                tls.max_version.as_deref().unwrap_or("")
            ),
        });
    }
    let out: Vec<_> = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(r, _)| (min..=max).contains(r))
        .map(|(_, v)| v)
        .collect();
    if out.is_empty() {
        return Err(TlsSetupError::Invalid {
            job: job.to_string(),
            message: "max_version below TLS12: only TLS 1.2 and 1.3 are supported".into(),
        });
    }
    Ok(out)
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's CA certificates, loaded once.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(loaded.certs);
            if store.is_empty() {
                let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
                return Err(if errors.is_empty() {
                    "no CA certificates found".to_string()
                } else {
                    errors.join("; ")
                });
            }
            Ok(Arc::new(store))
        })
        .clone()
}

/// Builds the rustls client configuration for `tls` from its `material`.
pub fn client_config(
    job: &str,
    tls: &TlsConfig,
    material: &TlsMaterial,
) -> Result<ClientConfig, TlsSetupError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(job, tls)?)
        .map_err(|e| TlsSetupError::Invalid {
            job: job.to_string(),
            message: e.to_string(),
        })?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
    } else {
        let roots = match &material.ca {
            Some(pem) => {
                let what = tls.ca_file.clone().unwrap_or_else(|| "(inline ca)".into());
                let ca_err = |message: String| TlsSetupError::CaParse {
                    job: job.to_string(),
                    what: what.clone(),
                    message,
                };
                let certs = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ca_err(e.to_string()))?;
                let mut store = RootCertStore::empty();
                let (added, _ignored) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(ca_err("no certificates found".into()));
                }
                Arc::new(store)
            }
            None => system_roots().map_err(|message| TlsSetupError::SystemRoots {
                job: job.to_string(),
                message,
            })?,
        };
        builder.with_root_certificates(roots)
    };
    match (&material.cert, &material.key) {
        (Some(cert), Some(key)) => {
            let cert_err = |message: String| TlsSetupError::ClientCert {
                job: job.to_string(),
                cert: tls.cert_file.clone().unwrap_or_else(|| "inline".into()),
                key: tls.key_file.clone().unwrap_or_else(|| "inline".into()),
                message,
            };
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| cert_err(e.to_string()))?;
            if chain.is_empty() {
                return Err(cert_err("no certificate found".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| cert_err(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| cert_err(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The name a connection verifies and sends as SNI when `server_name` is set.
pub fn server_name(
    job: &str,
    tls: &TlsConfig,
) -> Result<Option<ServerName<'static>>, TlsSetupError> {
    match tls.server_name.as_deref() {
        None | Some("") => Ok(None),
        Some(name) => {
            let name = name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(name);
            ServerName::try_from(name.to_string())
                .map(Some)
                .map_err(|e| TlsSetupError::Invalid {
                    job: job.to_string(),
                    message: format!("server_name {name:?}: {e}"),
                })
        }
    }
}

/// Go's wording for the TLS failures users meet most, so messages on targets
/// read as Prometheus's do; others keep rustls's own text.
pub fn describe_error(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let what = match c {
                C::UnknownIssuer => "x509: certificate signed by unknown authority".to_string(),
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => {
                    format!("x509: certificate has expired or is not yet valid ({c:?})")
                }
                C::NotValidForNameContext {
                    expected,
                    presented,
                } => {
                    let names: Vec<&str> = presented.iter().map(|p| bare_name(p)).collect();
                    format!(
                        "x509: certificate is valid for {}, not {}",
                        names.join(", "),
                        expected.to_str()
                    )
                }
                C::NotValidForName => {
                    "x509: certificate is not valid for the requested name".to_string()
                }
                _ => format!("x509: {e}"),
            };
            format!("tls: failed to verify certificate: {what}")
        }
        rustls::Error::AlertReceived(alert) => {
            use rustls::AlertDescription as A;
            let text = match alert {
                A::ProtocolVersion => "protocol version not supported".to_string(),
                A::CertificateRequired => "certificate required".to_string(),
                A::BadCertificate => "bad certificate".to_string(),
                A::UnknownCA => "unknown certificate authority".to_string(),
                A::HandshakeFailure => "handshake failure".to_string(),
                other => format!("{other:?}"),
            };
            format!("remote error: tls: {text}")
        }
        _ => format!("tls: {e}"),
    }
}

/// `example.com` from rustls's `DnsName("example.com")` or `IpAddress(10.0.0.1)`.
fn bare_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

/// `insecure_skip_verify`: any server certificate is accepted, but handshake
/// signatures are still checked so the session is well formed.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(min: Option<&str>, max: Option<&str>) -> TlsConfig {
        TlsConfig {
            min_version: min.map(str::to_string),
            max_version: max.map(str::to_string),
            ..TlsConfig::default()
        }
    }

    #[test]
    fn versions_follow_min_and_max() {
        assert_eq!(versions("j", &tls(None, None)).map(|v| v.len()), Ok(2));
        assert_eq!(
            versions("j", &tls(Some("TLS10"), None)).map(|v| v.len()),
            Ok(2)
        );
        let only13 = versions("j", &tls(Some("TLS13"), None)).unwrap_or_default();
        assert_eq!(only13.len(), 1);
        assert_eq!(only13[0].version, rustls::ProtocolVersion::TLSv1_3);
        let only12 = versions("j", &tls(None, Some("TLS12"))).unwrap_or_default();
        assert_eq!(only12.len(), 1);
        assert_eq!(only12[0].version, rustls::ProtocolVersion::TLSv1_2);
        let err = versions("j", &tls(Some("TLS9"), None))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("job \"j\": tls_config: unknown TLS version: TLS9")
        );
        assert!(versions("j", &tls(Some("TLS13"), Some("TLS12"))).is_err());
        assert!(versions("j", &tls(None, Some("TLS11"))).is_err());
    }

    #[test]
    fn name_mismatch_reads_like_go() {
        let e =
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("localhost")
                    .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())),
                presented: vec![
                    "IpAddress(127.0.0.1)".into(),
                    "DnsName(\"exporter.test\")".into(),
                ],
            });
        assert_eq!(
            describe_error(&e),
            "tls: failed to verify certificate: x509: certificate is valid for 127.0.0.1, exporter.test, not localhost"
        );
    }

    #[test]
    fn missing_files_name_job_and_file() {
        let cfg = TlsConfig {
            ca_file: Some("no/such/ca.pem".into()),
            ..TlsConfig::default()
        };
        let msg = read_material("node", &cfg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.starts_with("job \"node\": unable to load specified CA cert no/such/ca.pem: "),
            "{msg}"
        );
        let cfg = TlsConfig {
            cert_file: Some("c.pem".into()),
            ..TlsConfig::default()
        };
        assert!(read_material("node", &cfg).is_err());
    }
}
