//! HTTP Digest access authentication (RFC 7616), sans-IO: a `WWW-Authenticate: Digest`
//! challenge in, an `Authorization` value out.
//!
//! Supported: algorithms `MD5`, `MD5-sess`, `SHA-256`, `SHA-256-sess` (SHA-256 preferred when
//! a server offers both), `qop=auth` and the legacy form without `qop` (RFC 2069), and the
//! `nextnonce` of `Authentication-Info` (one-time nonces cost no 401 each). Not
//! supported: `auth-int` alone, `SHA-512-256`, `userhash=true`; such a challenge is left to
//! the caller (the 401 is delivered). The hashes are written here (RFC 1321, FIPS 180-4) and
//! checked against their published vectors and RFC 7616's worked example.

/// A hash algorithm of the Digest scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex(&md5(data)),
            Algorithm::Sha256 => hex(&sha256(data)),
        }
    }
}

/// A parsed Digest challenge we can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// `-sess`: the first hash includes the nonces.
    pub sess: bool,
    /// The algorithm token as the server wrote it (echoed back).
    pub algorithm_token: Option<String>,
    /// `qop=auth` offered (else the RFC 2069 form).
    pub qop_auth: bool,
}

/// The user's credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// The best Digest challenge we can answer among the `WWW-Authenticate` values, if any.
pub(crate) fn best_challenge<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<Challenge> {
    let mut best: Option<Challenge> = None;
    for v in values {
        for (scheme, params) in parse_challenges(v) {
            if !scheme.eq_ignore_ascii_case("digest") {
                continue;
            }
            let Some(c) = challenge_from(&params) else { continue };
            if best.as_ref().is_none_or(|b| b.algorithm == Algorithm::Md5 && c.algorithm == Algorithm::Sha256)
            {
                best = Some(c);
            }
        }
    }
    best
}

/// The `nextnonce` of an `Authentication-Info` header (RFC 7616 §3.5): the nonce the server
/// wants the next request to use (a server with one-time nonces sends one with every response).
pub(crate) fn next_nonce<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut found = None;
    for v in values {
        // A list of auth-params without a scheme: parsed as the parameters of a dummy one.
        let mut with_scheme = b"Info ".to_vec();
        with_scheme.extend_from_slice(v);
        for (_, params) in parse_challenges(&with_scheme) {
            if let Some((_, n)) = params.into_iter().find(|(k, _)| k.eq_ignore_ascii_case("nextnonce")) {
                found = Some(n);
            }
        }
    }
    found.filter(|n| !n.is_empty())
}

fn challenge_from(params: &[(String, String)]) -> Option<Challenge> {
    let get = |name: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let realm = get("realm")?.to_string();
    let nonce = get("nonce")?.to_string();
    if get("userhash").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    let token = get("algorithm");
    let (algorithm, sess) = match token.map(str::to_ascii_uppercase).as_deref() {
        None | Some("MD5") => (Algorithm::Md5, false),
        Some("MD5-SESS") => (Algorithm::Md5, true),
        Some("SHA-256") => (Algorithm::Sha256, false),
        Some("SHA-256-SESS") => (Algorithm::Sha256, true),
        Some(_) => return None,
    };
    let qop_auth = match get("qop") {
        None => false,
        Some(q) if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) => true,
        // Only auth-int (or something unknown) offered: not answerable.
        Some(_) => return None,
    };
    // The -sess variants need a cnonce, which exists only with qop.
    if sess && !qop_auth {
        return None;
    }
    Some(Challenge {
        realm,
        nonce,
        opaque: get("opaque").map(str::to_string),
        algorithm,
        sess,
        algorithm_token: token.map(str::to_string),
        qop_auth,
    })
}

/// Splits a `WWW-Authenticate` value into challenges: `scheme` then `name=value` parameters
/// (token or quoted-string), several challenges separated by commas (RFC 9110 §11.6.1).
/// Malformed parts end the parse (what was read before is kept).
fn parse_challenges(v: &[u8]) -> Vec<(String, Vec<(String, String)>)> {
    let s = String::from_utf8_lossy(v);
    let b = s.as_bytes();
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && is_tchar(b[*i]) {
            *i += 1;
        }
        s[start..*i].to_string()
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            return out;
        }
        let t = token(&mut i);
        if t.is_empty() {
            return out;
        }
        // Spaces after the token.
        let mut j = i;
        while j < b.len() && matches!(b[j], b' ' | b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() && !(j + 1 < b.len() && b[j + 1] == b'=') {
            // name=value of the current challenge.
            i = j + 1;
            while i < b.len() && matches!(b[i], b' ' | b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut val = String::new();
                loop {
                    if i >= b.len() {
                        return out; // unterminated quoted-string
                    }
                    match b[i] {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        // quoted-pair: the next character, whatever its length in UTF-8.
                        b'\\' if i + 1 < b.len() => {
                            let ch = s[i + 1..].chars().next().unwrap_or('\u{fffd}');
                            val.push(ch);
                            i += 1 + ch.len_utf8();
                        }
                        _ => {
                            // Copy one UTF-8 character.
                            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                            val.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                val
            } else {
                token(&mut i)
            };
            if let Some(last) = out.last_mut() {
                last.1.push((t, value));
            }
        } else {
            // A new challenge's scheme (a token68 after it is not used by Digest: skipped).
            out.push((t, Vec::new()));
            i = j;
            if i < b.len() && b[i] != b',' && !is_tchar(b[i]) {
                return out;
            }
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `Authorization` header value answering `c` for `method uri`, with nonce count `nc` and
/// client nonce `cnonce` (both used only with `qop=auth`).
pub(crate) fn authorization(
    c: &Challenge,
    creds: &Credentials,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let alg = c.algorithm;
    let mut ha1 = alg.hex(format!("{}:{}:{}", creds.user, c.realm, creds.password).as_bytes());
    if c.sess {
        ha1 = alg.hex(format!("{ha1}:{}:{cnonce}", c.nonce).as_bytes());
    }
    let ha2 = alg.hex(format!("{method}:{uri}").as_bytes());
    let nc = format!("{nc:08x}");
    let response = if c.qop_auth {
        alg.hex(format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", c.nonce).as_bytes())
    } else {
        alg.hex(format!("{ha1}:{}:{ha2}", c.nonce).as_bytes())
    };
    let mut v =
        format!("Digest username=\"{}\", realm=\"{}\", uri=\"{uri}\", ", quote(&creds.user), quote(&c.realm));
    if let Some(a) = &c.algorithm_token {
        v.push_str(&format!("algorithm={a}, "));
    }
    v.push_str(&format!("nonce=\"{}\", ", quote(&c.nonce)));
    if c.qop_auth {
        v.push_str(&format!("nc={nc}, cnonce=\"{cnonce}\", qop=auth, "));
    }
    v.push_str(&format!("response=\"{response}\""));
    if let Some(o) = &c.opaque {
        v.push_str(&format!(", opaque=\"{}\"", quote(o)));
    }
    v
}

/// Escapes `"` and `\` for a quoted-string.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// MD5 (RFC 1321). Digest auth needs it; it is not used for anything else.
pub(crate) fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
        5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15,
        21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    // K[i] = floor(abs(sin(i + 1)) * 2^32).
    const K: [u32; 64] = [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
        0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
        0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
        0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
        0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
        0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
        0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
    ];
    let mut h: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    for block in padded(data, false).chunks_exact(64) {
        let mut m = [0u32; 16];
        for (x, w) in m.iter_mut().zip(block.chunks_exact(4)) {
            *x = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        }
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(K[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// SHA-256 (FIPS 180-4).
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    for block in padded(data, true).chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// The message padded to whole 64-byte blocks: `0x80`, zeros, the bit length (64 bits, big-
/// endian for SHA-256, little-endian for MD5).
fn padded(data: &[u8], big_endian: bool) -> Vec<u8> {
    let bits = (data.len() as u64).wrapping_mul(8);
    let mut m = Vec::with_capacity(data.len() + 72);
    m.extend_from_slice(data);
    m.push(0x80);
    while m.len() % 64 != 56 {
        m.push(0);
    }
    m.extend_from_slice(&if big_endian { bits.to_be_bytes() } else { bits.to_le_bytes() });
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_rfc_1321() {
        for (input, expected) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            assert_eq!(hex(&md5(input.as_bytes())), expected, "{input:?}");
        }
    }

    #[test]
    fn sha256_matches_fips_180() {
        for (input, expected) in [
            ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (
                "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
        ] {
            assert_eq!(hex(&sha256(input.as_bytes())), expected, "{input:?}");
        }
        // Lengths around the padding boundary agree with the one-block/two-block split.
        assert_eq!(
            hex(&sha256(&[b'a'; 64])),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"
        );
    }

    /// RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
    #[test]
    fn rfc_7616_example() {
        let creds = Credentials { user: "Mufasa".into(), password: "Circle of Life".into() };
        let header = br#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
        let header_md5 = br#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        // Both offered: SHA-256 is chosen whatever the order.
        let both = [&header_md5[..], &header[..]];
        let sha = best_challenge(both.iter().copied()).unwrap();
        assert_eq!(sha.algorithm, Algorithm::Sha256);
        let v = authorization(&sha, &creds, "GET", "/dir/index.html", 1, cnonce);
        assert!(
            v.contains(r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#),
            "{v}"
        );
        assert!(
            v.contains("nc=00000001, cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth"),
            "{v}"
        );
        assert!(v.contains(r#"opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#), "{v}");
        let md5c = best_challenge([&header_md5[..]].into_iter()).unwrap();
        let v = authorization(&md5c, &creds, "GET", "/dir/index.html", 1, cnonce);
        assert!(v.contains(r#"response="8ca523f5e9506fed4657c9700eebdbec""#), "{v}");
    }

    /// RFC 2617 §3.5 (the RFC 2069-compatible form is RFC 2617's without qop; this is its
    /// qop=auth example, MD5 without an algorithm parameter).
    #[test]
    fn rfc_2617_example() {
        let creds = Credentials { user: "Mufasa".into(), password: "Circle Of Life".into() };
        let header = br#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = best_challenge([&header[..]].into_iter()).unwrap();
        assert_eq!((c.algorithm, c.sess, c.qop_auth), (Algorithm::Md5, false, true));
        let v = authorization(&c, &creds, "GET", "/dir/index.html", 1, "0a4f113b");
        assert!(v.contains(r#"response="6629fae49393a05397450978507c4ef1""#), "{v}");
        assert!(!v.contains("algorithm="), "not sent when the server did not name it: {v}");
    }

    /// Any bytes: no panic (a multi-byte character after a backslash once split a character).
    #[test]
    fn arbitrary_challenges_do_not_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet: Vec<&[u8]> = vec![
            b"Digest ",
            b"realm",
            b"nonce",
            b"qop",
            b"=",
            b"\"",
            b"\\",
            b",",
            b" ",
            b"auth",
            b"\xc3\xa9",
            b"\xff",
            b"algorithm=SHA-256",
            b"a",
            b"%",
            b"\t",
        ];
        for _ in 0..20_000 {
            let mut v = Vec::new();
            for _ in 0..(x % 24) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.extend_from_slice(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            if let Some(c) = best_challenge([v.as_slice()].into_iter()) {
                let creds = Credentials { user: "u".into(), password: "p".into() };
                let _ = authorization(&c, &creds, "GET", "/", 1, "c");
            }
        }
        assert!(best_challenge([&b"Digest realm=\"\\\xc3\xa9\", nonce=n"[..]].into_iter()).is_some());
    }

    #[test]
    fn next_nonce_is_read_from_authentication_info() {
        let v = b"qop=auth, rspauth=\"6629fae4\", cnonce=\"0a4f113b\", nc=00000001, nextnonce=\"n2\"";
        assert_eq!(next_nonce([&v[..]].into_iter()).as_deref(), Some("n2"));
        assert_eq!(next_nonce([&b"nextnonce=tok"[..]].into_iter()).as_deref(), Some("tok"));
        assert_eq!(next_nonce([&b"rspauth=\"x\""[..]].into_iter()), None);
        assert_eq!(next_nonce([&b"nextnonce=\"\""[..]].into_iter()), None);
    }

    #[test]
    fn challenges_are_parsed_like_rfc_9110_says() {
        // Several challenges in one value, Basic first; escapes in a quoted-string.
        let v = br#"Basic realm="x", Digest realm="a \"b\"", nonce=abc, qop=auth"#;
        let c = best_challenge([&v[..]].into_iter()).unwrap();
        assert_eq!((c.realm.as_str(), c.nonce.as_str(), c.qop_auth), ("a \"b\"", "abc", true));
        // Unanswerable: no nonce; auth-int only; unknown algorithm; userhash; -sess without qop.
        for v in [
            &br#"Digest realm="a""#[..],
            br#"Digest realm="a", nonce="n", qop="auth-int""#,
            br#"Digest realm="a", nonce="n", algorithm=SHA-512-256"#,
            br#"Digest realm="a", nonce="n", userhash=true"#,
            br#"Digest realm="a", nonce="n", algorithm=MD5-sess"#,
            br#"Basic realm="a""#,
            br#"Digest realm="a, nonce="n"#,
            b"",
            b",,,",
        ] {
            assert_eq!(best_challenge([v].into_iter()), None, "{}", String::from_utf8_lossy(v));
        }
        // Legacy (no qop): the RFC 2069 response, no nc/cnonce.
        let c = best_challenge([&br#"Digest realm="r", nonce="n""#[..]].into_iter()).unwrap();
        let v =
            authorization(&c, &Credentials { user: "u".into(), password: "p".into() }, "PUT", "/io", 1, "c");
        assert!(!v.contains("nc=") && !v.contains("qop"), "{v}");
        let expect = hex(&md5(format!("{}:n:{}", hex(&md5(b"u:r:p")), hex(&md5(b"PUT:/io"))).as_bytes()));
        assert!(v.contains(&format!("response=\"{expect}\"")), "{v}");
    }
}
