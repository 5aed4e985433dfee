//! A small generational slab: stable keys for connections and requests.
//!
//! A key carries the slot's generation, so an action or readiness event that names a connection
//! which has since been closed (and whose slot was reused) is recognised as stale and ignored,
//! instead of being applied to an unrelated socket.

/// A slot index plus the generation it was issued in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    idx: u32,
    gen_: u32,
}

impl Key {
    /// Packs the key into a `usize` (tests only: a 32-bit `usize` cannot hold it).
    #[cfg(test)]
    pub fn to_usize(self) -> usize {
        ((self.gen_ as u64) << 32 | self.idx as u64) as usize
    }

    /// The inverse of [`Key::to_usize`].
    #[cfg(test)]
    pub fn from_usize(v: usize) -> Key {
        let v = v as u64;
        Key { idx: v as u32, gen_: (v >> 32) as u32 }
    }

    /// The slot index.
    pub fn index(self) -> usize {
        self.idx as usize
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
            let idx = self.entries.len() as u32;
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

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.value.as_ref().map(|v| (Key { idx: i as u32, gen_: e.gen_ }, v)))
    }
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
        assert_eq!(Key::from_usize(b.to_usize()), b);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.len(), 1);
    }
}
