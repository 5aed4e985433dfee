//! A small generational slab: stable keys for connections and requests.
//!
//! A key carries the slot's generation, so an action or readiness event that names a connection
//! which has since been closed (and whose slot was reused) is recognised as stale and ignored,
//! instead of being applied to an unrelated socket.
//!
//! Only the index goes to the poller (the mio token is `Key::index()`): a `usize` is 32 bits on
//! ARMv7 and i686, too narrow for index and generation together. The driver keeps each socket's
//! full key in its table and recovers an event's key from there (`Driver::poll_events`).

/// A slot index plus the generation it was issued in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    idx: u32,
    gen_: u32,
}

/// Slot indices stay below this (at most `u32::MAX` slots): `u32::MAX` as a `usize` is
/// `usize::MAX` on 32-bit targets, the token of the driver's waker, so no index may be it.
pub const MAX_SLOTS: usize = u32::MAX as usize;

impl Key {
    /// The slot index (the mio token of a connection's socket). Always below [`MAX_SLOTS`], so
    /// never `usize::MAX`, on any target.
    pub fn index(self) -> usize {
        self.idx as usize
    }

    /// A key made by hand, for tests that need one without a slab.
    #[cfg(test)]
    pub(crate) const fn for_test(idx: u32, gen_: u32) -> Key {
        Key { idx, gen_ }
    }
}

#[derive(Debug)]
struct Entry<T> {
    gen_: u32,
    value: Option<T>,
}

/// Generational slab.
#[derive(Debug)]
pub struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { entries: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, value: T) -> Key {
        self.len += 1;
        if let Some(idx) = self.free.pop() {
            let e = &mut self.entries[idx as usize];
            e.gen_ = e.gen_.wrapping_add(1);
            e.value = Some(value);
            Key { idx, gen_: e.gen_ }
        } else {
            let idx = next_index(self.entries.len()).expect("slab full: u32::MAX slots in use");
            self.entries.push(Entry { gen_: 0, value: Some(value) });
            Key { idx, gen_: 0 }
        }
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        self.entries.get(key.index()).filter(|e| e.gen_ == key.gen_).and_then(|e| e.value.as_ref())
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.entries.get_mut(key.index()).filter(|e| e.gen_ == key.gen_).and_then(|e| e.value.as_mut())
    }

    pub fn remove(&mut self, key: Key) -> Option<T> {
        let e = self.entries.get_mut(key.index()).filter(|e| e.gen_ == key.gen_)?;
        let v = e.value.take()?;
        self.free.push(key.idx);
        self.len -= 1;
        Some(v)
    }

    /// The key of the value in slot `index`, if one is there.
    pub fn key_at(&self, index: usize) -> Option<Key> {
        let e = self.entries.get(index)?;
        e.value.as_ref().map(|_| Key { idx: index as u32, gen_: e.gen_ })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.value.as_ref().map(|v| (Key { idx: i as u32, gen_: e.gen_ }, v)))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().filter_map(|e| e.value.as_mut())
    }
}

/// The index of a new slot after `len` slots, if there is room (see [`MAX_SLOTS`]).
fn next_index(len: usize) -> Option<u32> {
    u32::try_from(len).ok().filter(|&i| (i as usize) < MAX_SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_do_not_reach_the_new_tenant() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(a.index(), b.index());
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.len(), 1);
    }

    /// The poller carries only the index; the key comes back from the driver's table (here a
    /// `Vec` indexed like `Driver::socks`). Keys of generation > 0 survive the round trip whole
    /// on every target (the old packing of `gen << 32 | idx` into a `usize` lost the generation
    /// on 32-bit targets, and every event of a reused slot was dropped as stale), and a key
    /// whose slot was reused is recognised as stale.
    #[test]
    fn keys_of_reused_slots_survive_the_token_round_trip() {
        let mut s = Slab::default();
        let mut table: Vec<Option<Key>> = Vec::new();
        let file = |table: &mut Vec<Option<Key>>, k: Key| {
            if table.len() <= k.index() {
                table.resize(k.index() + 1, None);
            }
            table[k.index()] = Some(k);
        };
        let first: Vec<Key> = (0..4).map(|i| s.insert(i)).collect();
        // Slot 2 reused three times: generation 3.
        let mut old = first[2];
        for i in 10..13 {
            s.remove(old).unwrap();
            let new = s.insert(i);
            assert_eq!(new.index(), old.index());
            assert_ne!(new, old);
            old = new;
        }
        let reused = old;
        assert_eq!(reused.gen_, 3);
        for &k in first.iter().chain([&reused]) {
            if s.get(k).is_some() {
                file(&mut table, k);
            }
        }
        for &k in &[first[0], first[1], reused, first[3]] {
            let token = k.index(); // what `mio::Token` carries
            assert!(token < MAX_SLOTS && token != usize::MAX, "a token is never the waker's");
            let back = table[token].expect("filed");
            assert_eq!(back, k);
            assert_eq!(s.get(back), s.get(k));
        }
        // The old tenant's key, recovered through its token, is now the new tenant's: the
        // driver's `sock(old)` compares keys and finds the old one stale.
        assert_ne!(table[first[2].index()], Some(first[2]));
        assert_eq!(s.get(first[2]), None);
    }

    /// A slab never issues the index `u32::MAX` (on 32-bit targets that is `usize::MAX`, the
    /// waker's token), nor one that does not fit in a `u32`.
    #[test]
    fn indices_stop_below_u32_max() {
        assert_eq!(next_index(0), Some(0));
        assert_eq!(next_index(MAX_SLOTS - 1), Some(u32::MAX - 1));
        assert_eq!(next_index(MAX_SLOTS), None);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(next_index(u32::MAX as usize + 1), None);
    }
}
