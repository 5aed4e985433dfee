//! How a device's certificate is judged: by a CA the caller trusts (webpki: chain, validity,
//! the name or IP address connected to), by a pin of its public key (the SHA-256 of its
//! SubjectPublicKeyInfo, curl's `sha256//BASE64`: what serves a self-signed device certificate
//! without turning verification off), or not at all (a mode whose name says it is dangerous).
//!
//! The handshake's signatures are always checked against the certificate's key, whatever
//! judged the certificate: a pin without that check would accept anyone who replays the
//! device's certificate.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, Error, SignatureScheme};

/// What judges a device's certificate.
#[derive(Debug)]
pub(crate) enum Judge {
    /// A pin matches: accepted, whatever its issuer, name or dates.
    Pins(Vec<[u8; 32]>),
    /// Chain to one of the caller's CAs, valid now, for the name or address connected to.
    Roots(Arc<WebPkiServerVerifier>),
    /// Anything (`TlsConfig::dangerous_accept_any_certificate`).
    Anything,
    /// Nothing: no CA and no pin were given.
    Nothing,
}

/// The verifier finwatch installs in rustls.
#[derive(Debug)]
pub(crate) struct DeviceVerifier {
    pub(crate) judge: Judge,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl DeviceVerifier {
    pub(crate) fn new(judge: Judge, provider: &CryptoProvider) -> DeviceVerifier {
        DeviceVerifier { judge, algorithms: provider.signature_verification_algorithms }
    }
}

/// The error a pin mismatch is reported with (the one use of this variant here, so that the
/// error mapping can tell it from a certificate webpki refused).
pub(crate) fn pin_mismatch() -> Error {
    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

impl ServerCertVerifier for DeviceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match &self.judge {
            Judge::Pins(pins) => {
                let spki =
                    spki(end_entity).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
                let hash = crate::proto::digest::sha256(spki);
                if pins.contains(&hash) { Ok(ServerCertVerified::assertion()) } else { Err(pin_mismatch()) }
            }
            Judge::Roots(webpki) => {
                webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            Judge::Anything => Ok(ServerCertVerified::assertion()),
            Judge::Nothing => Err(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SubjectPublicKeyInfo of a DER certificate, as its DER bytes (tag and length included,
/// which is what curl's and HPKP's pins hash). `None` for anything that is not a certificate.
///
/// ```text
/// Certificate ::= SEQUENCE { tbsCertificate TBSCertificate, … }
/// TBSCertificate ::= SEQUENCE { version [0] EXPLICIT OPTIONAL, serialNumber, signature,
///                               issuer, validity, subject, subjectPublicKeyInfo, … }
/// ```
pub(crate) fn spki(cert: &[u8]) -> Option<&[u8]> {
    let (cert_body, _) = der(cert, 0x30)?;
    let (mut tbs, _) = der(cert_body, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der(tbs, 0xa0)?.1; // the version
    }
    for _ in 0..5 {
        tbs = skip(tbs)?; // serialNumber, signature, issuer, validity, subject
    }
    let len = tlv_len(tbs)?;
    (tbs.first() == Some(&0x30)).then(|| &tbs[..len])
}

/// The contents of the TLV at the start of `input` with tag `tag`, and what follows it.
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let (header, len) = header(input)?;
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

/// What follows the TLV at the start of `input`.
fn skip(input: &[u8]) -> Option<&[u8]> {
    input.get(tlv_len(input)?..)
}

/// The whole length (header and contents) of the TLV at the start of `input`.
fn tlv_len(input: &[u8]) -> Option<usize> {
    let (header, len) = header(input)?;
    let total = header.checked_add(len)?;
    (total <= input.len()).then_some(total)
}

/// A DER header's own length and the contents' length (definite lengths only, as DER has).
fn header(input: &[u8]) -> Option<(usize, usize)> {
    let first = *input.get(1)?;
    if first < 0x80 {
        return Some((2, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for &b in input.get(2..2 + n)? {
        len = len.checked_mul(256)?.checked_add(usize::from(b))?;
    }
    Some((2 + n, len))
}

/// A pin in curl's form, `sha256//BASE64` (several joined with `;` are several pins).
pub(crate) fn parse_pins(pins: &str) -> Result<Vec<[u8; 32]>, String> {
    pins.split(';')
        .map(|p| {
            let b64 = p.trim().strip_prefix("sha256//").ok_or_else(|| {
                "a pin is sha256//BASE64 (the SHA-256 of the public key's SubjectPublicKeyInfo), \
                 as curl's --pinnedpubkey takes it"
                    .to_string()
            })?;
            let raw = base64_decode(b64).ok_or("the pin's BASE64 is malformed")?;
            <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| "the pin is not 32 bytes (SHA-256)".to_string())
        })
        .collect()
}

/// Standard BASE64 with padding (RFC 4648 §4), as pins are written.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i == bytes.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | u32::from(value(c)?);
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_like_curls() {
        let zero = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(parse_pins(zero).unwrap(), vec![[0u8; 32]]);
        assert_eq!(parse_pins(&format!("{zero};{zero}")).unwrap().len(), 2);
        for bad in
            ["AAAA", "sha256//AAAA", "sha1//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "sha256//!!!!"]
        {
            assert!(parse_pins(bad).is_err(), "{bad}");
        }
        assert_eq!(base64_decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGVsbA=="), Some(b"hell".to_vec()));
        assert_eq!(base64_decode("aGVs"), Some(b"hel".to_vec()));
        assert_eq!(base64_decode("aG=s"), None);
    }

    #[test]
    fn spki_of_garbage_is_none_never_a_panic() {
        for input in
            [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x03\x30\x01\x00", b"\x02\x01\x00"]
        {
            assert_eq!(spki(input), None);
        }
        // Every prefix of a well-formed skeleton parses or fails, never panics.
        let skeleton = [
            0x30, 0x15, 0x30, 0x13, 0x02, 0x01, 0x01, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30,
            0x06, 0x30, 0x01, 0x00, 0x03, 0x01, 0x00,
        ];
        assert_eq!(spki(&skeleton), Some(&skeleton[15..23]));
        for n in 0..skeleton.len() {
            let _ = spki(&skeleton[..n]);
        }
    }
}
