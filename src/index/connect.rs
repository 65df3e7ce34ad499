//! Where the index lives and how to reach it: the `postgresql://` URL parsed once, TLS decided by the
//! host and `sslmode` (libpq's meanings), and a redacted form for messages (the password never shows).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::str::FromStr;
use std::sync::Arc;

/// libpq's `sslmode` values mirrorflow honours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP (loopback hosts only).
    Disable,
    /// TLS when the server offers it (loopback hosts only; elsewhere TLS is required).
    Prefer,
    /// TLS, the certificate not checked (libpq's `require`), unless `sslrootcert` is given.
    Require,
    /// TLS, the certificate chain checked against the roots; the host name not.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, String> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }
}

/// A parsed index URL: the connection settings, the TLS policy in force, and a printable form.
#[derive(Clone)]
pub struct Target {
    /// tokio-postgres settings (the TLS parameters removed: mirrorflow applies them itself).
    pub config: tokio_postgres::Config,
    /// The TLS mode in force (after the loopback rule).
    pub ssl_mode: SslMode,
    /// `sslrootcert`: a PEM file of roots to trust instead of the system's.
    pub root_cert: Option<std::path::PathBuf>,
    /// `postgresql://user@host:port/db`, for messages.
    pub display: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({}, {:?})", self.display, self.ssl_mode)
    }
}

/// True for hosts traffic to which never leaves the machine: TLS is optional there.
fn is_loopback(host: &tokio_postgres::config::Host) -> bool {
    match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// True when every address the driver may dial is loopback: each host's `hostaddr` when the URL
/// gives them (libpq's rule, which tokio-postgres follows: it replaces the host's address), else each
/// host of a multi-host URL. The host name alone would let `hostaddr=203.0.113.7` pass as local.
fn dials_loopback_only(config: &tokio_postgres::Config) -> bool {
    let addrs = config.get_hostaddrs();
    if addrs.is_empty() {
        config.get_hosts().iter().all(is_loopback)
    } else {
        addrs.iter().all(std::net::IpAddr::is_loopback)
    }
}

impl Target {
    /// Parses `url`; the error says what is wrong and never repeats the password.
    pub fn parse(url: &str) -> Result<Target, String> {
        let mut parsed = url::Url::parse(url).map_err(|e| format!("not a postgresql:// URL ({e})"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!("the URL must start with postgresql:// (not {}://)", parsed.scheme()));
        }
        let mut ssl_mode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "sslmode" => ssl_mode = Some(SslMode::parse(&v)?),
                "sslrootcert" => root_cert = Some(std::path::PathBuf::from(v.as_ref())),
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        parsed.set_query(None);
        if !kept.is_empty() {
            parsed.query_pairs_mut().extend_pairs(kept);
        }
        let config = tokio_postgres::Config::from_str(parsed.as_str())
            .map_err(|e| format!("cannot read the connection settings: {}", super::describe(&e)))?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err("the URL names no host".into());
        }
        let loopback = dials_loopback_only(&config);
        let ssl_mode = match (ssl_mode, loopback) {
            (None, true) => SslMode::Prefer,
            (None | Some(SslMode::Prefer), false) => SslMode::Require,
            (Some(SslMode::Disable), false) => {
                return Err("sslmode=disable is refused for a host that is not loopback: the index needs TLS \
                            over a network (use sslmode=require or verify-full)"
                    .into());
            }
            (Some(mode), _) => mode,
        };
        let _ = parsed.set_password(None);
        parsed.set_query(None);
        Ok(Target { config, ssl_mode, root_cert, display: parsed.to_string() })
    }

    /// Connects (TLS per [`SslMode`]); the connection's driver runs on its own task.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, String> {
        let mut config = self.config.clone();
        config.connect_timeout(std::time::Duration::from_secs(10));
        config.keepalives_idle(std::time::Duration::from_secs(30));
        config.application_name("mirrorflow");
        let describe =
            |e: tokio_postgres::Error| format!("cannot connect to {}: {}", self.display, super::describe(&e));
        if self.ssl_mode == SslMode::Disable {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(describe)?;
            tokio::spawn(drive_connection(conn));
            return Ok(client);
        }
        config.ssl_mode(match self.ssl_mode {
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config()?);
        let (client, conn) = config.connect(tls).await.map_err(describe)?;
        tokio::spawn(drive_connection(conn));
        Ok(client)
    }

    /// The rustls settings for the mode: what is checked of the server's certificate.
    fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let checked = matches!(self.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull)
            || (self.ssl_mode == SslMode::Require && self.root_cert.is_some());
        if !checked {
            let verifier = Arc::new(EncryptOnly(provider));
            return Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth());
        }
        let roots = Arc::new(self.roots()?);
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("TLS roots: {e}"))?;
        let verifier = Arc::new(ChainChecked { inner: webpki, check_name: self.ssl_mode == SslMode::VerifyFull });
        Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
    }

    /// `sslrootcert`'s certificates, else the system's.
    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = match &self.root_cert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?
            }
            None => rustls_native_certs::load_native_certs().certs,
        };
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err("no trusted root certificates (set sslrootcert to the server's CA file)".into());
        }
        Ok(roots)
    }
}

async fn drive_connection<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "index connection closed");
    }
}

/// libpq's `sslmode=require`: the session is encrypted, the certificate is not checked (its signature
/// over the handshake still is).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` and `verify-full`: the chain is checked against the roots; the host name only for
/// `verify-full`.
#[derive(Debug)]
struct ChainChecked {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ChainChecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_required_off_loopback_and_the_password_never_shows() {
        let t = Target::parse("postgresql://u:s3cret@db.example.com:5432/postgres").unwrap();
        assert_eq!(t.ssl_mode, SslMode::Require, "no sslmode: TLS required off loopback");
        assert!(!t.display.contains("s3cret"), "{}", t.display);
        let err = Target::parse("postgresql://u:s3cret@db.example.com/postgres?sslmode=disable").unwrap_err();
        assert!(err.contains("sslmode=disable") && !err.contains("s3cret"), "{err}");
        let t = Target::parse("postgresql://u@db.example.com/postgres?sslmode=prefer").unwrap();
        assert_eq!(t.ssl_mode, SslMode::Require, "prefer off loopback means require");
        let t = Target::parse("postgres://u@db.example.com/postgres?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!((t.ssl_mode, t.root_cert.as_deref()), (SslMode::VerifyFull, Some(std::path::Path::new("/ca.pem"))));
    }

    #[test]
    fn loopback_may_go_without_tls_and_keeps_other_parameters() {
        let t = Target::parse("postgresql://postgres@127.0.0.1:5433/db?sslmode=disable&connect_timeout=3").unwrap();
        assert_eq!(t.ssl_mode, SslMode::Disable);
        assert_eq!(t.config.get_connect_timeout(), Some(&std::time::Duration::from_secs(3)));
        assert_eq!(Target::parse("postgresql://localhost/db").unwrap().ssl_mode, SslMode::Prefer);
        assert!(Target::parse("mysql://localhost/db").unwrap_err().contains("postgresql://"));
        assert!(Target::parse("postgresql://localhost/db?sslmode=maybe").unwrap_err().contains("sslmode"));
    }

    #[test]
    fn tls_off_is_refused_when_any_address_dialled_is_off_loopback() {
        let refused = [
            "postgresql://u@localhost/db?hostaddr=203.0.113.7&sslmode=disable",
            "postgresql://u@127.0.0.1/db?hostaddr=10.1.2.3&sslmode=disable",
            "postgresql://u@localhost,db.example.com/db?sslmode=disable",
            "postgresql:///db?host=localhost,db.example.com&user=u&sslmode=disable",
        ];
        for url in refused {
            let err = Target::parse(url).err().unwrap_or_else(|| panic!("{url} was accepted"));
            assert!(err.contains("sslmode=disable"), "{url}: {err}");
        }
        let t = Target::parse("postgresql://u@localhost/db?hostaddr=203.0.113.7").unwrap();
        assert_eq!(t.ssl_mode, SslMode::Require, "a hostaddr off loopback needs TLS whatever the host name");
        let t = Target::parse("postgresql://u@db.internal/db?hostaddr=127.0.0.1&sslmode=disable").unwrap();
        assert_eq!(t.ssl_mode, SslMode::Disable, "a loopback hostaddr is what is dialled");
        let err = Target::parse("postgresql:///db?hostaddr=203.0.113.7&sslmode=disable").unwrap_err();
        assert!(err.contains("sslmode=disable"), "a hostaddr without a host: {err}");
    }
}
