//! `https://` (feature `tls`): rustls, driven sans-IO by the driver.
//!
//! A connection's `ClientConnection` takes the bytes the socket gave and gives the bytes to
//! write, as the rest of the core does; the engine never sees TLS. What TLS changes for the
//! promises, and where:
//!
//! - A connection is handed to the engine as connected only once its handshake is complete: a
//!   warm spare opened ahead of need is *handshaken* ahead of need, and the next command pays no
//!   handshake. Every new connection to a device seen before resumes its session (rustls's
//!   in-memory session cache: TLS 1.3 tickets, TLS 1.2 session IDs and tickets). No 0-RTT: early
//!   data can be replayed.
//! - A close is a FIN whatever its form: a `close_notify`, a bare TCP FIN without one (many
//!   embedded stacks), or a RST move an idle connection out of `Open(Idle)` exactly as on plain
//!   TCP, and the pre-write check reads what waits in the socket *through TLS*, so a
//!   `close_notify` already there is seen, and records normal on an idle TLS 1.3 connection
//!   (NewSessionTicket, KeyUpdate) do not retire it, where application data does.
//! - A response cut by a FIN without `close_notify` is truncated (RFC 8446 §6.1): an error,
//!   never a complete close-delimited body.
//! - A failed handshake is [`crate::Error::Tls`]: nothing was sent.

mod verify;

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::error::{Error, TlsFailure};
use verify::{DeviceVerifier, Judge};

/// How finwatch authenticates the devices it talks TLS to. Without a CA or a pin every
/// certificate is refused: finwatch carries no root store, because a device's certificate is
/// issued by its maker's or the plant's CA, or is self-signed, never by a public CA.
///
/// ```
/// # fn main() -> finwatch::Result<()> {
/// use finwatch::{Client, TlsConfig};
/// // A self-signed device, pinned by its public key (curl's `--pinnedpubkey sha256//…`):
/// let tls = TlsConfig::new().pin_sha256("sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")?;
/// let client = Client::builder().tls(tls).build()?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct TlsConfig {
    roots: Vec<CertificateDer<'static>>,
    pins: Vec<[u8; 32]>,
    insecure: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cas", &self.roots.len())
            .field("pins", &self.pins.len())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl TlsConfig {
    /// No CA, no pin: add one of them, or every device is refused.
    pub fn new() -> TlsConfig {
        TlsConfig::default()
    }

    /// Trusts the CA certificates in `pem` (one or more `BEGIN CERTIFICATE` blocks): a device's
    /// certificate must chain to one of them, be valid now, and be for the name or IP address
    /// in the URL (an IP address matches an IP subjectAltName; SNI is sent for names only).
    pub fn add_ca_pem(mut self, pem: &[u8]) -> crate::Result<TlsConfig> {
        let before = self.roots.len();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::invalid_request(format!("CA certificates: {e}")))?;
            self.roots.push(cert);
        }
        if self.roots.len() == before {
            return Err(Error::invalid_request("CA certificates: no `BEGIN CERTIFICATE` block"));
        }
        Ok(self)
    }

    /// [`TlsConfig::add_ca_pem`] with the contents of a file (curl's `--cacert`).
    pub fn ca_file(self, path: impl AsRef<std::path::Path>) -> crate::Result<TlsConfig> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| Error::invalid_request(format!("CA file {}: {e}", path.display())))?;
        self.add_ca_pem(&pem)
    }

    /// Accepts a device whose public key has this SHA-256 (of its SubjectPublicKeyInfo), in
    /// curl's form `sha256//BASE64` (several joined with `;`): what serves a self-signed device
    /// certificate without turning verification off. A pinned key is accepted whatever its
    /// certificate's issuer, name or dates; the handshake's signatures are still checked
    /// against it. With pins, CAs are not consulted: a key that matches no pin is refused.
    ///
    /// The pin of a certificate: `openssl x509 -in device.pem -pubkey -noout | openssl pkey
    /// -pubin -outform der | openssl dgst -sha256 -binary | base64`.
    pub fn pin_sha256(mut self, pins: &str) -> crate::Result<TlsConfig> {
        let pins = verify::parse_pins(pins).map_err(|e| Error::invalid_request(format!("TLS pin: {e}")))?;
        self.pins.extend(pins);
        Ok(self)
    }

    /// **Dangerous**: accepts any certificate from anyone: no authentication at all, so anyone
    /// on the path can read and change every command. For a bench with a device whose
    /// certificate cannot be had any other way; never in a plant. Each new connection logs a
    /// warning.
    pub fn dangerous_accept_any_certificate(mut self) -> TlsConfig {
        self.insecure = true;
        self
    }

    /// The connector for the driver.
    pub(crate) fn connector(&self) -> crate::Result<Arc<Connector>> {
        // ring, though rustls 0.23.48 deprecates its provider for lacking post-quantum key
        // exchange: it builds with a C compiler alone, on every target controllers use (ARMv7,
        // i686), where aws-lc-rs needs more of the build machine; PQ protects recorded traffic
        // against a future quantum computer, which control commands on a plant network rarely
        // need to outlast. An `aws-lc-rs` feature is the way to offer it.
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        // X25519 first (ring's default list starts with P-384): its key exchange costs a quarter
        // of P-384's CPU on both sides, and a device's CPU is what a command waits for
        // (compare/'s TLS scenarios: a resumed handshake took the device ~570 µs of CPU with
        // P-384, ~90 µs with X25519; PERFORMANCE.md). P-256 and P-384 stay for devices without
        // X25519.
        {
            use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
            provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
        }
        let provider = Arc::new(provider);
        let judge = if self.insecure {
            Judge::Anything
        } else if !self.pins.is_empty() {
            Judge::Pins(self.pins.clone())
        } else {
            let mut roots = RootCertStore::empty();
            for cert in &self.roots {
                roots
                    .add(cert.clone())
                    .map_err(|e| Error::invalid_request(format!("CA certificate refused: {e}")))?;
            }
            if roots.is_empty() {
                Judge::Nothing
            } else {
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| Error::invalid_request(format!("CA certificates: {e}")))?;
                Judge::Roots(webpki)
            }
        };
        let untrusting = matches!(judge, Judge::Nothing);
        let verifier = Arc::new(DeviceVerifier::new(judge, &provider));
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid_request(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Arc::new(Connector { config: Arc::new(config), insecure: self.insecure, untrusting }))
    }
}

/// A client's TLS settings, shared by its connections (and their session cache).
#[derive(Debug)]
pub(crate) struct Connector {
    config: Arc<ClientConfig>,
    insecure: bool,
    /// No CA and no pin were given: the refusal says how to give one.
    untrusting: bool,
}

impl Connector {
    /// A session for a connection to `label` (`https://host:port`, the host's key).
    pub(crate) fn session(&self, label: &str) -> Result<Session, Error> {
        let host = host_of(label);
        let name = ServerName::try_from(host.to_string()).map_err(|e| Error::Tls {
            host: label.to_string(),
            failure: TlsFailure::Handshake,
            reason: format!("{host:?} is not a name or an address a certificate can be for: {e}"),
        })?;
        if self.insecure {
            log::warn!("{label}: TLS with ANY certificate accepted (dangerous_accept_any_certificate)");
        }
        let conn = ClientConnection::new(Arc::clone(&self.config), name).map_err(|e| self.error(label, e))?;
        Ok(Session { conn, handshaken: false, credit: 0, tcp_eof: false })
    }

    /// A rustls error during a handshake with `label`, as the crate's error.
    pub(crate) fn error(&self, label: &str, e: rustls::Error) -> Error {
        use rustls::{CertificateError, Error as E};
        let failure = match &e {
            E::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => {
                TlsFailure::PinMismatch
            }
            E::InvalidCertificate(_) => TlsFailure::CertificateRefused,
            _ => TlsFailure::Handshake,
        };
        let mut reason = match &e {
            E::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => {
                "the device's public key matches no pin".to_string()
            }
            E::InvalidCertificate(c) => format!("{c:?}"),
            other => other.to_string(),
        };
        if self.untrusting && failure != TlsFailure::Handshake {
            reason.push_str(" (no CA or pin is configured: TlsConfig::add_ca_pem, ca_file or pin_sha256)");
        }
        Error::Tls { host: label.to_string(), failure, reason }
    }
}

/// The host of a TLS host key (`https://host:port`, `https://[v6%zone]:port`), for SNI and
/// verification: without brackets, port or zone.
fn host_of(label: &str) -> &str {
    let rest = label.strip_prefix("https://").unwrap_or(label);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => rest.rsplit_once(':').map_or(rest, |(h, _)| h),
    };
    host.split('%').next().unwrap_or(host)
}

/// Whether a host key is a TLS one.
pub(crate) fn is_tls_label(label: &str) -> bool {
    label.starts_with("https://")
}

/// One connection's TLS state.
pub(crate) struct Session {
    pub(crate) conn: ClientConnection,
    /// The handshake completed and the engine was told the connection is up.
    pub(crate) handshaken: bool,
    /// Plaintext the engine wrote into rustls whose records are not all in the socket yet: it
    /// counts as written (`Engine::on_written`) only once they are, so that a request's stage
    /// says what the device can have.
    pub(crate) credit: usize,
    /// The socket's read returned 0.
    pub(crate) tcp_eof: bool,
}

impl Session {
    /// The handshake, for the trace and `ctl -v`: version, cipher suite, resumed or not.
    pub(crate) fn handshake(&self) -> crate::TraceKind {
        crate::TraceKind::TlsHandshake {
            version: self.conn.protocol_version().map_or("?".to_string(), |v| format!("{v:?}")),
            cipher: self
                .conn
                .negotiated_cipher_suite()
                .map_or("?".to_string(), |s| format!("{:?}", s.suite())),
            resumed: self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }
}

/// `io::Write` over a kernel's socket, for `ClientConnection::write_tls`.
pub(crate) struct KernelWriter<'a, K: crate::os::Kernel> {
    pub(crate) k: &'a mut K,
    pub(crate) s: &'a mut K::Stream,
}

impl<K: crate::os::Kernel> io::Write for KernelWriter<'_, K> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.k.write(self.s, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_labels() {
        assert_eq!(host_of("https://10.0.0.5:443"), "10.0.0.5");
        assert_eq!(host_of("https://device.local:8443"), "device.local");
        assert_eq!(host_of("https://[fe80::1%eth0]:443"), "fe80::1");
        assert_eq!(host_of("https://[::1]:443"), "::1");
        assert!(is_tls_label("https://10.0.0.5:443") && !is_tls_label("10.0.0.5:80"));
    }
}
