//! The TLS test support (tests/support/tls.rs) checked: its certificates, and (later) its devices
//! driven by a plain blocking rustls client.
#![cfg(feature = "tls")]

mod support;

use support::tls::*;

#[test]
fn the_pki_is_generated_pem_and_der_agree() {
    let pki = Pki::get();
    assert!(std::ptr::eq(pki, Pki::get()), "once per process");
    for (pem, der) in [(&pki.ca_pem, &pki.ca_der), (&pki.good.pem, &pki.good.der)] {
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(b64, base64(der));
    }
}

#[test]
fn sha256_and_base64_match_known_vectors() {
    // RFC 4648 §10.
    for (input, output) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), output);
    }
    // FIPS 180-2 "abc".
    assert_eq!(base64(&sha256(b"abc")), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
}

#[test]
fn spki_of_finds_what_rcgen_wrote_and_each_certificate_has_its_own_key() {
    let pki = Pki::get();
    for c in [&pki.good, &pki.expired, &pki.wrong_name, &pki.self_signed] {
        assert_eq!(spki_of(&c.der), Some(&c.spki_der[..]));
        assert_eq!(c.pin, format!("sha256//{}", base64(&sha256(&c.spki_der))));
    }
    let pins: std::collections::BTreeSet<_> =
        [&pki.good, &pki.expired, &pki.wrong_name, &pki.self_signed].map(|c| c.pin.clone()).into();
    assert_eq!(pins.len(), 4, "a key per certificate");
    assert_eq!(spki_of(b"\x30\x03\x02\x01"), None, "truncated DER");
}
