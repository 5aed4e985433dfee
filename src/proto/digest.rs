//! HTTP Digest access authentication (RFC 7616), sans-IO: a `WWW-Authenticate: Digest`
//! challenge in, an `Authorization` value out.
//!
//! Supported: algorithms `MD5`, `MD5-sess`, `SHA-256`, `SHA-256-sess` (SHA-256 preferred when
//! a server offers both), `qop=auth` and the legacy form without `qop` (RFC 2069), and the
//! `nextnonce` of `Authentication-Info` (one-time nonces cost no 401 each). Not
//! supported: `auth-int` alone, `SHA-512-256`, `userhash=true`; such a challenge is left to
//! the caller (the 401 is delivered). The hashes are written here (RFC 1321, FIPS 180-4) and
//! checked against their published vectors and RFC 7616's worked example.
//!
//! Two defences beyond the RFC's letter:
//!
//! - **No downgrade.** The challenge is the server's to choose, and nothing authenticates it:
//!   a device that is replaced, misconfigured, or a man in the middle can answer a client that
//!   has been using `SHA-256` with `qop=auth` with an `MD5` challenge without `qop`, and
//!   without `qop` the same `Authorization` value is valid for every request to the same URI
//!   until the nonce changes (RFC 7616 §5.5: replay), while MD5 is the weaker hash to guess a
//!   password from offline (§5.13 lists downgrade as the attack; §3.7 lets the client pick the
//!   strongest). [`acceptable`] refuses any challenge weaker than the device's session, and
//!   what the caller's [`DigestPolicy`] rules out; a refused challenge is not answered (its
//!   `401` is the caller's response).
//! - **Nothing injected.** Every quoted value is written as an RFC 9110 §5.6.4 quoted-string,
//!   and a request target that would need escaping (`"`, `\`) is refused for Digest requests
//!   before anything is sent ([`check_target`]).

use std::fmt;

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

/// The user's credentials, and what they may answer.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub user: String,
    pub password: String,
    pub policy: DigestPolicy,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("policy", &self.policy)
            .finish()
    }
}

/// Which Digest challenges a request's credentials may answer
/// ([`crate::RequestBuilder::digest_policy`]).
///
/// Whatever the policy, a device's session is never downgraded: once a device's challenge
/// was answered with `SHA-256`, a later challenge offering only `MD5` is refused, and once it
/// was answered with `qop=auth`, one without `qop` is (the `401` is returned as the response,
/// with a warning in the log). The device's session lives as long as the client remembers the
/// device; a device that really went back to older firmware needs a new client.
///
/// The default accepts `MD5` and the RFC 2069 form without `qop` from a device that never
/// offered better: old devices only do that. A device known to do better should be held to
/// it:
///
/// ```
/// use finwatch::{DigestPolicy, Request};
/// let strict = DigestPolicy::new().require_sha256(true).require_qop(true);
/// assert_eq!(strict, DigestPolicy::strict());
/// let req = Request::get("http://10.0.0.5/io-state").digest_auth("admin", "secret").digest_policy(strict).build()?;
/// # let _ = req;
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DigestPolicy {
    require_sha256: bool,
    require_qop: bool,
}

impl DigestPolicy {
    /// The default: no downgrade of a device's session; `MD5` and no `qop` accepted from a
    /// device that never offered better.
    pub const fn new() -> DigestPolicy {
        DigestPolicy { require_sha256: false, require_qop: false }
    }

    /// Only `SHA-256` (or `SHA-256-sess`) and `qop=auth`: both requirements below.
    pub const fn strict() -> DigestPolicy {
        DigestPolicy { require_sha256: true, require_qop: true }
    }

    /// Refuse challenges whose algorithm is `MD5` (or `MD5-sess`): the credentials answer only
    /// `SHA-256` ones.
    pub const fn require_sha256(mut self, yes: bool) -> DigestPolicy {
        self.require_sha256 = yes;
        self
    }

    /// Refuse challenges without `qop=auth` (the RFC 2069 form): without a nonce count and a
    /// client nonce, the same `Authorization` value is accepted again for the same URI until
    /// the nonce changes, so whoever sees it can replay the command.
    pub const fn require_qop(mut self, yes: bool) -> DigestPolicy {
        self.require_qop = yes;
        self
    }

    /// Whether `SHA-256` is required.
    pub const fn requires_sha256(&self) -> bool {
        self.require_sha256
    }

    /// Whether `qop=auth` is required.
    pub const fn requires_qop(&self) -> bool {
        self.require_qop
    }
}

/// Why a challenge is not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The device's session used `SHA-256`; the challenge offers only `MD5`.
    AlgorithmDowngrade,
    /// The device's session used `qop=auth`; the challenge has none.
    QopDowngrade,
    /// The credentials require `SHA-256`.
    Sha256Required,
    /// The credentials require `qop=auth`.
    QopRequired,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::AlgorithmDowngrade => "the Digest challenge offers only MD5 where the device's session used SHA-256 (a downgrade)",
            Refusal::QopDowngrade => "the Digest challenge drops qop=auth, which the device's session used (a downgrade: replayable)",
            Refusal::Sha256Required => "the Digest challenge offers only MD5 and the credentials require SHA-256",
            Refusal::QopRequired => "the Digest challenge has no qop=auth and the credentials require it",
        })
    }
}

/// Whether `offered` may be answered, given the device's session (`previous`: the challenge
/// last accepted from it) and the credentials' `policy`. Pure: the table in the tests is the
/// specification. `-sess` and the nonce, realm and opaque are not compared: changing them is
/// the server's right (a new nonce is the point of a new challenge), and `-sess` is not
/// weaker. Since only an acceptable challenge replaces the session, the session only ever
/// gets stronger: `previous` is the strongest the device has used.
pub(crate) fn acceptable(
    previous: Option<&Challenge>,
    offered: &Challenge,
    policy: DigestPolicy,
) -> Result<(), Refusal> {
    let sha = offered.algorithm == Algorithm::Sha256;
    if let Some(p) = previous {
        if p.algorithm == Algorithm::Sha256 && !sha {
            return Err(Refusal::AlgorithmDowngrade);
        }
        if p.qop_auth && !offered.qop_auth {
            return Err(Refusal::QopDowngrade);
        }
    }
    if policy.require_sha256 && !sha {
        return Err(Refusal::Sha256Required);
    }
    if policy.require_qop && !offered.qop_auth {
        return Err(Refusal::QopRequired);
    }
    Ok(())
}

/// The challenge to answer among the `WWW-Authenticate` values of a `401` from `host`: the
/// best (see [`best_challenge`]) of those [`acceptable`] after `previous` under `creds`'
/// policy. `None` when there is none we can answer, or none acceptable: then the refusal of
/// the best one is logged as a warning (the `401` goes to the caller).
pub(crate) fn answerable<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    previous: Option<&Challenge>,
    creds: &Credentials,
    host: &dyn fmt::Display,
) -> Option<Challenge> {
    let mut best: Option<Challenge> = None;
    let mut refused: Option<(Challenge, Refusal)> = None;
    for c in challenges(values) {
        match acceptable(previous, &c, creds.policy) {
            Ok(()) => {
                if best.as_ref().is_none_or(|b| rank(&c) > rank(b)) {
                    best = Some(c);
                }
            }
            Err(why) => {
                if refused.as_ref().is_none_or(|(b, _)| rank(&c) > rank(b)) {
                    refused = Some((c, why));
                }
            }
        }
    }
    if best.is_none()
        && let Some((c, why)) = refused
    {
        log::warn!(
            "{host}: {why}; not answered, the 401 is the response (offered {:?}{})",
            c.algorithm,
            if c.qop_auth { ", qop=auth" } else { "" }
        );
    }
    best
}

/// The server's preference is not ours (RFC 7616 §3.7: the client picks): `SHA-256` over
/// `MD5`, then `qop=auth` over none.
fn rank(c: &Challenge) -> (bool, bool) {
    (c.algorithm == Algorithm::Sha256, c.qop_auth)
}

/// Whether a Digest answer for a device's session may go out with these credentials in
/// advance (before the device asks): only if their policy accepts the session's challenge.
pub(crate) fn may_answer(session: &Challenge, creds: &Credentials) -> bool {
    acceptable(None, session, creds.policy).is_ok()
}

/// Refuses a request target that Digest would have to escape in its `uri` parameter.
///
/// RFC 7616 §3.4 sends `uri` as a quoted-string, whose `"` and `\` must be written as
/// quoted-pairs (RFC 9110 §5.6.4), and the response hash is over the target as sent in the
/// request line. A server that does not undo the escapes (many embedded ones compare the
/// parameter with the request line byte for byte) refuses such an answer, and one that
/// parses quoted-strings naively can be made to read parameters out of the target
/// (`/a",username="admin`). Neither `"` nor `\` is allowed unescaped in a URI (RFC 3986
/// §2: only its percent-encoded forms `%22` and `%5C` are), so refusing them costs a correct
/// caller nothing: percent-encode them. Control characters, space and non-ASCII are refused
/// already by [`crate::Url::parse`]; they are checked here too, since the `uri` parameter
/// must never carry them.
pub(crate) fn check_target(target: &str) -> Result<(), &'static str> {
    if target.bytes().any(|b| matches!(b, b'"' | b'\\') || !(0x21..0x7f).contains(&b)) {
        return Err("a Digest request's target must not contain '\"', '\\', spaces or control characters \
                    (percent-encode them: %22, %5C)");
    }
    Ok(())
}

/// Every Digest challenge we can answer among the `WWW-Authenticate` values.
fn challenges<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for v in values {
        for (scheme, params) in parse_challenges(v) {
            if scheme.eq_ignore_ascii_case("digest")
                && let Some(c) = challenge_from(&params)
            {
                out.push(c);
            }
        }
    }
    out
}

/// The best Digest challenge we can answer among the `WWW-Authenticate` values, if any:
/// `SHA-256` over `MD5`, then `qop=auth` over none; the first of equals.
#[cfg(any(test, feature = "__internal"))]
pub(crate) fn best_challenge<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<Challenge> {
    let mut best: Option<Challenge> = None;
    for c in challenges(values) {
        if best.as_ref().is_none_or(|b| rank(&c) > rank(b)) {
            best = Some(c);
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
    // Echoed back in our quoted-strings, where a control character cannot be (RFC 9110 §5.6.4:
    // not even as a quoted-pair, HTAB aside); a bare CR would end our header line on some
    // servers. Unanswerable: the 401 is the caller's.
    if [Some(realm.as_str()), Some(nonce.as_str()), get("opaque")].into_iter().flatten().any(has_ctl) {
        return None;
    }
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
    // Every quoted value escaped (the target is checked by `check_target` before a Digest
    // request is built; escaping it too means no target can add parameters here).
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{}\", uri=\"{}\", ",
        quote(&creds.user),
        quote(&c.realm),
        quote(uri)
    );
    if let Some(a) = &c.algorithm_token {
        v.push_str(&format!("algorithm={a}, "));
    }
    v.push_str(&format!("nonce=\"{}\", ", quote(&c.nonce)));
    if c.qop_auth {
        v.push_str(&format!("nc={nc}, cnonce=\"{}\", qop=auth, ", quote(cnonce)));
    }
    v.push_str(&format!("response=\"{response}\""));
    if let Some(o) = &c.opaque {
        v.push_str(&format!(", opaque=\"{}\"", quote(o)));
    }
    v
}

/// `s` as the inside of a quoted-string (RFC 9110 §5.6.4): `"` and `\` as quoted-pairs.
/// Control characters other than HTAB cannot be in a quoted-string at all, escaped or not;
/// none get here (credentials, targets and challenges with them are refused before), and
/// should one, it is dropped: a wrong answer (a 401) rather than a broken header line.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for ch in s.chars() {
        match ch {
            '"' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            c if c != '\t' && c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A control character other than HTAB (C0, DEL, C1).
fn has_ctl(s: &str) -> bool {
    s.chars().any(|c| c != '\t' && c.is_control())
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

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials { user: user.into(), password: password.into(), policy: DigestPolicy::new() }
    }

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
        let creds = creds("Mufasa", "Circle of Life");
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
        let creds = creds("Mufasa", "Circle Of Life");
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
                let creds = creds("u", "p");
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
        let v = authorization(&c, &creds("u", "p"), "PUT", "/io", 1, "c");
        assert!(!v.contains("nc=") && !v.contains("qop"), "{v}");
        let expect = hex(&md5(format!("{}:n:{}", hex(&md5(b"u:r:p")), hex(&md5(b"PUT:/io"))).as_bytes()));
        assert!(v.contains(&format!("response=\"{expect}\"")), "{v}");
    }

    fn challenge(algorithm: Algorithm, qop_auth: bool) -> Challenge {
        Challenge {
            realm: "r".into(),
            nonce: "n".into(),
            opaque: None,
            algorithm,
            sess: false,
            algorithm_token: None,
            qop_auth,
        }
    }

    /// The downgrade rule and the policy, as a table: (previous session, offered, policy,
    /// verdict).
    #[test]
    fn acceptable_refuses_downgrades_and_what_the_policy_rules_out() {
        use Algorithm::{Md5, Sha256};
        let (any, sha, qop, strict) = (
            DigestPolicy::new(),
            DigestPolicy::new().require_sha256(true),
            DigestPolicy::new().require_qop(true),
            DigestPolicy::strict(),
        );
        let none: Option<(Algorithm, bool)> = None;
        type Row = (Option<(Algorithm, bool)>, (Algorithm, bool), DigestPolicy, Result<(), Refusal>);
        let table: &[Row] = &[
            // A first challenge: the policy alone decides; by default an old device's MD5
            // without qop is answered.
            (none, (Md5, false), any, Ok(())),
            (none, (Md5, true), any, Ok(())),
            (none, (Sha256, false), any, Ok(())),
            (none, (Md5, true), sha, Err(Refusal::Sha256Required)),
            (none, (Sha256, false), sha, Ok(())),
            (none, (Sha256, false), qop, Err(Refusal::QopRequired)),
            (none, (Md5, true), qop, Ok(())),
            (none, (Md5, false), strict, Err(Refusal::Sha256Required)),
            (none, (Sha256, false), strict, Err(Refusal::QopRequired)),
            (none, (Sha256, true), strict, Ok(())),
            // A device that only ever did MD5 without qop keeps being answered.
            (Some((Md5, false)), (Md5, false), any, Ok(())),
            // Upgrades are always fine.
            (Some((Md5, false)), (Sha256, true), any, Ok(())),
            (Some((Md5, false)), (Md5, true), any, Ok(())),
            // Downgrades never, whatever the policy.
            (Some((Sha256, true)), (Md5, true), any, Err(Refusal::AlgorithmDowngrade)),
            (Some((Sha256, false)), (Md5, false), any, Err(Refusal::AlgorithmDowngrade)),
            (Some((Sha256, true)), (Sha256, false), any, Err(Refusal::QopDowngrade)),
            (Some((Md5, true)), (Md5, false), any, Err(Refusal::QopDowngrade)),
            (Some((Sha256, true)), (Md5, false), any, Err(Refusal::AlgorithmDowngrade)),
            (Some((Sha256, true)), (Sha256, true), any, Ok(())),
            (Some((Sha256, true)), (Sha256, true), strict, Ok(())),
            // The policy on top of a session the device set up before it applied.
            (Some((Md5, true)), (Md5, true), sha, Err(Refusal::Sha256Required)),
        ];
        for &(prev, (alg, q), policy, expect) in table {
            let previous = prev.map(|(a, pq)| challenge(a, pq));
            let got = acceptable(previous.as_ref(), &challenge(alg, q), policy);
            assert_eq!(got, expect, "previous {prev:?}, offered {alg:?} qop={q}, {policy:?}");
        }
        // -sess is not a downgrade either way.
        let mut sess = challenge(Algorithm::Sha256, true);
        sess.sess = true;
        assert_eq!(acceptable(Some(&challenge(Algorithm::Sha256, true)), &sess, strict), Ok(()));
        assert_eq!(acceptable(Some(&sess), &challenge(Algorithm::Sha256, true), strict), Ok(()));
    }

    /// The challenge answered is the best acceptable one, not the server's first or the best
    /// of all: a server offering a weak one beside a strong one gets the strong one answered,
    /// and a downgrade with nothing acceptable gets none.
    #[test]
    fn answerable_picks_the_best_acceptable_challenge() {
        let md5_qop = &br#"Digest realm="r", nonce="n1", qop="auth", algorithm=MD5"#[..];
        let sha_bare = &br#"Digest realm="r", nonce="n2", algorithm=SHA-256"#[..];
        let sha_qop = &br#"Digest realm="r", nonce="n3", qop="auth", algorithm=SHA-256"#[..];
        let md5_bare = &br#"Digest realm="r", nonce="n4""#[..];
        let c = creds("u", "p");
        let pick = |values: &[&[u8]], previous: Option<&Challenge>, c: &Credentials| {
            answerable(values.iter().copied(), previous, c, &"dev:80").map(|x| x.nonce)
        };
        // Ranking: SHA-256 first, then qop.
        assert_eq!(pick(&[md5_bare, sha_bare, sha_qop, md5_qop], None, &c).as_deref(), Some("n3"));
        assert_eq!(pick(&[sha_bare, md5_qop], None, &c).as_deref(), Some("n2"));
        assert_eq!(best_challenge([sha_bare, sha_qop].into_iter()).map(|x| x.nonce).as_deref(), Some("n3"));
        // qop required: the MD5 one with qop beats the SHA-256 one without.
        let mut needs_qop = creds("u", "p");
        needs_qop.policy = DigestPolicy::new().require_qop(true);
        assert_eq!(pick(&[sha_bare, md5_qop], None, &needs_qop).as_deref(), Some("n1"));
        // After a SHA-256 session with qop: only SHA-256 with qop.
        let session = challenge(Algorithm::Sha256, true);
        assert_eq!(pick(&[md5_qop, sha_bare, md5_bare], Some(&session), &c), None);
        assert_eq!(pick(&[md5_qop, sha_qop], Some(&session), &c).as_deref(), Some("n3"));
        // Nothing answerable at all: None as before.
        assert_eq!(pick(&[&b"Basic realm=\"r\""[..]], None, &c), None);
        // In advance too: only a session the policy accepts.
        let strict = Credentials { policy: DigestPolicy::strict(), ..creds("u", "p") };
        assert!(!may_answer(&challenge(Algorithm::Md5, true), &strict));
        assert!(may_answer(&challenge(Algorithm::Sha256, true), &strict));
        assert!(may_answer(&challenge(Algorithm::Md5, false), &c));
    }

    /// The quoted-string parameters of an answer, parsed back the way a server would (our
    /// own parser follows RFC 9110): exactly the parameters we meant, with the values we meant.
    fn params_of(v: &str) -> Vec<(String, String)> {
        let mut parsed = parse_challenges(v.as_bytes());
        assert_eq!(parsed.len(), 1, "one scheme, no injected challenge: {v}");
        let (scheme, params) = parsed.remove(0);
        assert_eq!(scheme, "Digest");
        params
    }

    fn names(params: &[(String, String)]) -> Vec<&str> {
        params.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// A `"` or `\` anywhere a value is echoed (the target, the user, the server's realm,
    /// nonce and opaque) cannot add or change a parameter: each comes back as written.
    #[test]
    fn quoted_values_cannot_inject_parameters() {
        let evil = "/a\",username=\"admin\",x=\"\"";
        let header = br#"Digest realm="r\"ealm\\", qop="auth", nonce="n\", username=\"root", opaque="o\"p""#;
        let c = best_challenge([&header[..]].into_iter()).unwrap();
        assert_eq!((c.realm.as_str(), c.nonce.as_str()), ("r\"ealm\\", "n\", username=\"root"));
        let user = r#"op", realm="x"#;
        let v = authorization(&c, &creds(user, "pw"), "GET", evil, 1, "cn\"once");
        let params = params_of(&v);
        assert_eq!(
            names(&params),
            ["username", "realm", "uri", "nonce", "nc", "cnonce", "qop", "response", "opaque"],
            "{v}"
        );
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("uri"), Some(evil));
        assert_eq!(get("username"), Some(user));
        assert_eq!(get("realm"), Some("r\"ealm\\"));
        assert_eq!(get("nonce"), Some("n\", username=\"root"));
        assert_eq!(get("opaque"), Some("o\"p"));
        assert_eq!(get("cnonce"), Some("cn\"once"));
        // Written as RFC 9110 quoted-pairs.
        assert!(v.contains(r#"uri="/a\",username=\"admin\",x=\"\"","#), "{v}");
        // The hash is over the values themselves (what a server that unescapes compares).
        let ha1 = hex(&md5(format!("{user}:r\"ealm\\:pw").as_bytes()));
        let ha2 = hex(&md5(format!("GET:{evil}").as_bytes()));
        let nonce = "n\", username=\"root";
        let expect = hex(&md5(format!("{ha1}:{nonce}:00000001:cn\"once:auth:{ha2}").as_bytes()));
        assert_eq!(get("response"), Some(expect.as_str()));
    }

    /// A normal target goes out as it is: nothing to escape.
    #[test]
    fn normal_targets_are_written_as_they_are() {
        let c = best_challenge([&br#"Digest realm="r", nonce="n", qop=auth"#[..]].into_iter()).unwrap();
        for target in ["/", "/io-state?ioId=25602&x=%22%5C", "/unico/v1/interface/io;a=b", "/a'b~c!$*(),:@"] {
            assert_eq!(check_target(target), Ok(()), "{target}");
            let v = authorization(&c, &creds("u", "p"), "GET", target, 1, "c");
            assert!(v.contains(&format!("uri=\"{target}\"")), "{v}");
        }
        for target in ["/a\"b", "/a\\b", "/a b", "/a\rb", "/a\nb", "/\u{1}", "/\u{7f}", "/é"] {
            let err = check_target(target).unwrap_err();
            assert!(err.contains("%22"), "{err}");
        }
    }

    /// A control character in a value the answer would echo makes the challenge unanswerable
    /// (it could end our header line); the answer never carries one.
    #[test]
    fn control_characters_are_never_echoed() {
        for v in [
            &b"Digest realm=\"r\", nonce=\"n\rX-Evil: 1\""[..],
            b"Digest realm=\"r\x01\", nonce=\"n\"",
            b"Digest realm=\"r\", nonce=\"n\", opaque=\"o\x7f\"",
            b"Digest realm=\"r\", nonce=\"n\\\x00\"",
        ] {
            assert_eq!(best_challenge([v].into_iter()), None, "{}", String::from_utf8_lossy(v));
        }
        // A tab is allowed in a quoted-string.
        assert!(best_challenge([&b"Digest realm=\"a\tb\", nonce=\"n\""[..]].into_iter()).is_some());
        assert_eq!(quote("a\r\n\u{0}\"\\\tb"), "a\\\"\\\\\tb");
    }
}
