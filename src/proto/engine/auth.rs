//! Digest authentication (RFC 7616) as the engine applies it: a device's session per host, the
//! `Authorization` line written into a request's wire as it is assigned, and the one retry a
//! `401` challenge earns.

use super::*;

/// A request's Digest state: its credentials, the span of its `Authorization` line in the
/// wire (empty until the device's challenge is known), and whether a challenge was answered.
#[derive(Debug)]
pub(super) struct DigestAuth {
    pub(super) creds: Arc<Credentials>,
    /// Where the line starts: the end of the head's last header line.
    pub(super) at: usize,
    /// The line's length (0: none yet).
    pub(super) len: usize,
    /// The device challenged this request once: a second 401 is the caller's.
    pub(super) challenged: bool,
}

/// A device's Digest challenge and the nonce count of its nonce.
#[derive(Debug)]
pub(super) struct DigestSession {
    pub(super) challenge: Challenge,
    pub(super) nc: u32,
}

impl Engine {
    /// A `401` for request `r`: if it carries Digest credentials, was not challenged before,
    /// and the response holds a Digest challenge we can answer, the device's session is
    /// (re)started from it and the request goes back to the head of its queue to be sent again
    /// with the answer. The device refused the request, so sending it again is safe whatever
    /// the method. Returns whether it did.
    pub(super) fn digest_challenged(&mut self, r: Key, resp: &Response) -> bool {
        let Some(p) = self.reqs.get_mut(r) else { return false };
        let Some(a) = p.auth.as_deref_mut() else { return false };
        if a.challenged {
            return false;
        }
        let Some(h) = self.hosts.get_mut(&p.host) else { return false };
        // Only a challenge the credentials' policy allows, never a downgrade (digest.rs).
        let previous = h.digest.as_ref().map(|s| &s.challenge);
        let www = resp.header_bytes("www-authenticate");
        let Some(challenge) = digest::answerable(www, previous, &a.creds, &p.host) else {
            return false;
        };
        log::debug!("request {}: {} asks for Digest authentication; sending it again", p.id.0, p.host);
        a.challenged = true;
        p.on = None;
        match &mut h.digest {
            // The same nonce (this request's answer was refused for another reason, or two
            // requests were challenged at once): its count goes on, a server may refuse a repeat.
            Some(s) if s.challenge.nonce == challenge.nonce => s.challenge = challenge,
            _ => h.digest = Some(DigestSession { challenge, nc: 0 }),
        }
        h.queue.push_front(r);
        true
    }
}

/// Writes (or rewrites) the `Authorization` line of a Digest request into its wire, answering
/// `session`'s challenge with its current nonce count and a fresh client nonce.
pub(super) fn authorize(wire: &mut Vec<u8>, a: &mut DigestAuth, session: &DigestSession) {
    let line = wire.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let uri = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let value = digest::authorization(&session.challenge, &a.creds, &method, &uri, session.nc, &cnonce());
    let new = format!("Authorization: {value}\r\n");
    wire.splice(a.at..a.at + a.len, new.bytes());
    a.len = new.len();
}

/// A client nonce: 128 bits from the standard library's randomly keyed hasher (keys from the
/// operating system's random source), so that it cannot be predicted by the server.
pub(super) fn cnonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut out = String::with_capacity(32);
    for i in 0..2u64 {
        let mut h = state.build_hasher();
        h.write_u64(i);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}
