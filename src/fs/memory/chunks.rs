//! A file's chunks by index. Most files fit in one chunk (2 MiB), which is kept inline: a
//! small file then costs no map allocation besides its pages.
use std::collections::BTreeMap;

use super::chunk::Chunk;

#[derive(Default)]
pub enum Chunks {
    #[default]
    Empty,
    One(u64, Chunk),
    Many(BTreeMap<u64, Chunk>),
}

impl Chunks {
    pub fn get(&self, k: u64) -> Option<&Chunk> {
        match self {
            Chunks::One(at, chunk) if *at == k => Some(chunk),
            Chunks::Many(map) => map.get(&k),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, k: u64) -> Option<&mut Chunk> {
        match self {
            Chunks::One(at, chunk) if *at == k => Some(chunk),
            Chunks::Many(map) => map.get_mut(&k),
            _ => None,
        }
    }

    /// The chunk at `k`, made by `make` if there is none.
    pub fn get_or_insert_with(&mut self, k: u64, make: impl FnOnce() -> Chunk) -> &mut Chunk {
        if let Chunks::One(at, _) = self
            && *at != k
        {
            let Chunks::One(at, chunk) = std::mem::take(self) else {
                unreachable!("matched One above")
            };
            *self = Chunks::Many(BTreeMap::from([(at, chunk)]));
        }
        match self {
            Chunks::Empty => {
                *self = Chunks::One(k, make());
                let Chunks::One(_, chunk) = self else {
                    unreachable!("just set")
                };
                chunk
            }
            Chunks::One(_, chunk) => chunk,
            Chunks::Many(map) => map.entry(k).or_insert_with(make),
        }
    }

    pub fn remove(&mut self, k: u64) {
        match self {
            Chunks::One(at, _) if *at == k => *self = Chunks::Empty,
            Chunks::Many(map) => {
                map.remove(&k);
                self.shrink();
            }
            _ => {}
        }
    }

    /// Removes and returns the chunks at `k` and after.
    pub fn split_off(&mut self, k: u64) -> Chunks {
        match self {
            Chunks::One(at, _) if *at >= k => std::mem::take(self),
            Chunks::Many(map) => {
                let mut gone = Chunks::Many(map.split_off(&k));
                self.shrink();
                gone.shrink();
                gone
            }
            _ => Chunks::Empty,
        }
    }

    /// The chunks from index `first` on, in order.
    pub fn range_from(&self, first: u64) -> impl Iterator<Item = (u64, &Chunk)> {
        let (one, many) = match self {
            Chunks::Empty => (None, None),
            Chunks::One(at, chunk) => ((*at >= first).then_some((*at, chunk)), None),
            Chunks::Many(map) => (None, Some(map.range(first..))),
        };
        one.into_iter()
            .chain(many.into_iter().flatten().map(|(k, c)| (*k, c)))
    }

    pub fn values(&self) -> impl Iterator<Item = &Chunk> {
        self.range_from(0).map(|(_, c)| c)
    }

    /// A map of one chunk or none goes back inline, freeing the map.
    fn shrink(&mut self) {
        if let Chunks::Many(map) = self
            && map.len() <= 1
        {
            *self = match map.pop_first() {
                Some((k, chunk)) => Chunks::One(k, chunk),
                None => Chunks::Empty,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: &Chunks) -> Vec<u64> {
        c.range_from(0).map(|(k, _)| k).collect()
    }

    #[test]
    fn one_inline_then_a_map_then_inline_again() {
        let mut c = Chunks::default();
        c.get_or_insert_with(3, || Chunk::for_pages(0..1));
        assert!(matches!(c, Chunks::One(3, _)));
        c.get_or_insert_with(3, || unreachable!("exists"));
        c.get_or_insert_with(1, || Chunk::for_pages(0..1));
        c.get_or_insert_with(7, || Chunk::for_pages(0..1));
        assert_eq!(keys(&c), [1, 3, 7]);
        assert_eq!(c.range_from(2).map(|(k, _)| k).collect::<Vec<_>>(), [3, 7]);
        assert!(c.get(3).is_some() && c.get(2).is_none());
        let gone = c.split_off(3);
        assert_eq!(keys(&gone), [3, 7]);
        assert!(matches!(c, Chunks::One(1, _)));
        assert!(c.get_mut(1).is_some());
        c.remove(1);
        assert!(matches!(c, Chunks::Empty));
        assert_eq!(c.split_off(0).values().count(), 0);
    }
}
