//! A fast hasher for the engine's host map.
//!
//! The map is looked up several times per command (submit, dispatch, completion), and std's
//! SipHash of a `host:port` key, once per lookup, was 14 % of the engine's CPU per command
//! (`benches/micro.rs`, "engine: one command"). Now a key is hashed once, when its request is
//! submitted ([`HostKey`]), and the map hashes that one word. The keys come from the caller's own
//! URLs, never from a server, so the flooding resistance SipHash buys is not needed; each eight
//! bytes go through MurmurHash3's 64-bit finalizer, which spreads every input bit over the whole
//! word (a plain multiply-rotate hash collided on keys like `10.0.0.92:80` and `10.0.0.19:80`).

use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        let mut x = self.hash ^ word;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        self.hash = x;
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // The last byte is free (at most seven are left): it carries the count, so "a" and
            // "a\0" differ.
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            word[7] = rest.len() as u8;
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type FastBuild = BuildHasherDefault<FastHasher>;

/// A host's key (`host:port`) with its hash computed once, when a request is submitted: every
/// later lookup (dispatch, completion, connection end) hashes one word, and compares the
/// shared string by pointer before by content.
#[derive(Clone)]
pub(crate) struct HostKey {
    hash: u64,
    name: Arc<str>,
}

impl HostKey {
    pub(crate) fn new(name: Arc<str>) -> HostKey {
        HostKey { hash: FastBuild::default().hash_one(&*name), name }
    }

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.name
    }
}

impl From<&str> for HostKey {
    fn from(name: &str) -> HostKey {
        HostKey::new(name.into())
    }
}

impl Hash for HostKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for HostKey {
    fn eq(&self, other: &HostKey) -> bool {
        Arc::ptr_eq(&self.name, &other.name) || (self.hash == other.hash && self.name == other.name)
    }
}

impl Eq for HostKey {}

impl Deref for HostKey {
    type Target = Arc<str>;
    fn deref(&self) -> &Arc<str> {
        &self.name
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn distinct_hosts_hash_apart_and_equal_ones_alike() {
        let b = FastBuild::default();
        let h = |s: &str| b.hash_one(s);
        assert_eq!(h("10.0.0.5:80"), h("10.0.0.5:80"));
        let mut keys: Vec<String> = (0..4096).map(|i| format!("10.0.{}.{}:80", i / 256, i % 256)).collect();
        keys.extend((0..4096).map(|i| format!("device-{i}.local:{}", 8000 + i % 7)));
        let mut hashes: Vec<u64> = keys.iter().map(|k| h(k)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), keys.len());
        // Keys differing only past the eighth byte, and only in length, differ too.
        assert_ne!(h("device-01.local:80"), h("device-01.local:81"));
        assert_ne!(h("a"), h("a\0"));
    }

    #[test]
    fn host_keys_are_equal_by_content_whatever_the_allocation() {
        let a = HostKey::new(Arc::from("10.0.0.5:80"));
        let b = HostKey::new(Arc::from("10.0.0.5:80"));
        let c = HostKey::new(Arc::from("10.0.0.6:80"));
        assert!(a == b && a == a.clone() && a != c);
        let b_ = FastBuild::default();
        assert_eq!(b_.hash_one(&a), b_.hash_one(&b));
    }
}
