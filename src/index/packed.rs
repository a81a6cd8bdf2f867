//! A sorted map of many small entries kept in few sled keys: runs of neighbouring entries
//! ("chunks") packed into one value under the key of the run's first entry.
//!
//! sled splits a leaf page at 16 keys and keeps metadata for every page in memory whatever
//! its cache size, so an index with one sled key per file costs resident memory in
//! proportion to the files (about 40 MiB to open a million). A chunk holds 32 to 64 entries,
//! so the pages, and what sled holds for them, are 30-50 times fewer.
//!
//! The entry for key `k` lives in the chunk with the greatest key `<= k` (the first chunk
//! when every chunk key is greater). Writers go through an [`Edit`], which reads the chunks
//! its keys fall in, changes them in memory and gives back the sled writes (chunks removed,
//! rewritten, split or re-keyed) for the caller to apply in one batch or transaction. Edits
//! must not overlap: the caller holds one lock over all of them.

use super::{e, IndexError};
use std::collections::BTreeMap;
use std::ops::Bound;

/// First byte of a chunk.
const CHUNK_V1: u8 = 0xC1;

/// An entry: its key and value.
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

/// Chunk sizes: a chunk is split when it holds more than `max_n` entries or `max_bytes`,
/// into chunks of about `target_n` entries and `target_bytes`; one edited down to fewer than
/// `min_n` entries is merged with the chunk after it (so removals do not leave the tree
/// with a key per entry). sled writes a leaf page of up
/// to 16 chunks as one log message, and a message over 128 KiB (a quarter of its 512 KiB
/// segment) becomes a file of its own: 16 chunks of at most 4 KiB stay well under that.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub min_n: usize,
    pub target_n: usize,
    pub max_n: usize,
    pub target_bytes: usize,
    pub max_bytes: usize,
}

impl Limits {
    /// The sizes the index uses.
    pub const INDEX: Limits = Limits {
        min_n: 8,
        target_n: 32,
        max_n: 64,
        target_bytes: 2048,
        max_bytes: 4096,
    };

    /// Whether a run of `n` entries and `size` bytes ends before `next`: it has the target
    /// number of entries, or `next` would take it past the target bytes.
    fn full(&self, n: usize, size: usize, next: &Entry) -> bool {
        n > 0 && (n == self.target_n || size + cost(next) > self.target_bytes)
    }
}

/// The sorted map over one sled tree.
pub(crate) struct Packed {
    tree: sled::Tree,
    limits: Limits,
    /// What was read through this handle ([`Packed::reads`]).
    reads: std::sync::atomic::AtomicU64,
}

/// A chunk's value: [`CHUNK_V1`], then per entry the length of the prefix it shares with
/// the key before it, the rest of its key and its value (varint lengths).
fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + entries.iter().map(cost).sum::<usize>());
    v.push(CHUNK_V1);
    let mut prev: &[u8] = &[];
    for (k, val) in entries {
        let shared = k.iter().zip(prev).take_while(|(a, b)| a == b).count();
        crate::varint::put(&mut v, shared as u64);
        crate::varint::put_bytes(&mut v, &k[shared..]);
        crate::varint::put_bytes(&mut v, val);
        prev = k;
    }
    v
}

/// About what an entry adds to its chunk (without the shared prefix).
fn cost((k, v): &Entry) -> usize {
    k.len() + v.len() + 3
}

fn damaged() -> IndexError {
    IndexError("a damaged index chunk".into())
}

/// Calls `f` with each entry of chunk `v` in order until it returns `false`.
fn each<'a>(v: &'a [u8], mut f: impl FnMut(&[u8], &'a [u8]) -> bool) -> Result<(), IndexError> {
    let Some((&CHUNK_V1, mut c)) = v.split_first() else {
        return Err(damaged());
    };
    let mut key = Vec::new();
    while !c.is_empty() {
        let shared = crate::varint::get(&mut c).ok_or_else(damaged)? as usize;
        let rest = crate::varint::get_bytes(&mut c).ok_or_else(damaged)?;
        let val = crate::varint::get_bytes(&mut c).ok_or_else(damaged)?;
        if shared > key.len() {
            return Err(damaged());
        }
        key.truncate(shared);
        key.extend_from_slice(rest);
        if !f(&key, val) {
            break;
        }
    }
    Ok(())
}

fn decode(v: &[u8]) -> Result<Vec<Entry>, IndexError> {
    let mut out = Vec::new();
    each(v, |k, val| {
        out.push((k.to_vec(), val.to_vec()));
        true
    })?;
    Ok(out)
}

/// `entries` cut into chunks: whole if within the maximum sizes, else in runs of about the
/// target sizes.
fn pieces(entries: &[Entry], l: Limits) -> Vec<&[Entry]> {
    let bytes: usize = entries.iter().map(cost).sum();
    if entries.len() <= l.max_n && bytes <= l.max_bytes {
        return vec![entries];
    }
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, en) in entries.iter().enumerate() {
        if l.full(i - start, size, en) {
            out.push(&entries[start..i]);
            (start, size) = (i, 0);
        }
        size += cost(en);
    }
    out.push(&entries[start..]);
    out
}

impl Packed {
    pub fn new(tree: sled::Tree, limits: Limits) -> Packed {
        Packed {
            tree,
            limits,
            reads: Default::default(),
        }
    }

    /// How much was read through this handle: one per lookup of a key, and one per entry
    /// a range went past (a walk decodes every page it crosses, as lookups of each of its
    /// entries would). Each read may leave a decoded page in sled's memory, which the index
    /// gives back past a limit.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_reads(&self, n: u64) {
        self.reads
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The chunk holding `k`: the last one whose key is `<= k`.
    fn chunk_at(&self, k: &[u8]) -> Result<Option<(sled::IVec, sled::IVec)>, IndexError> {
        self.count_reads(1);
        self.tree.range(..=k).next_back().transpose().map_err(e)
    }

    pub fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        let Some((_, v)) = self.chunk_at(k)? else {
            return Ok(None);
        };
        let mut found = None;
        each(&v, |key, val| {
            if key == k {
                found = Some(val.to_vec());
            }
            key < k
        })?;
        Ok(found)
    }

    /// Every entry with a key `>= from`, in order. Each step past a chunk is one sled
    /// lookup; an entry seen once is not given again should a writer split its chunk
    /// meanwhile.
    pub fn range(&self, from: &[u8]) -> Range<'_> {
        Range {
            packed: self,
            from: from.to_vec(),
            started: false,
            after: None,
            buf: Vec::new().into_iter(),
            last: None,
            done: false,
        }
    }

    /// Every entry whose key starts with `prefix`, in order.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = Result<Entry, IndexError>> + 'a {
        self.range(prefix)
            .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
    }

    pub fn edit(&self) -> Edit<'_> {
        Edit {
            packed: self,
            chunks: BTreeMap::new(),
        }
    }

    /// Writes a sorted run of entries into an empty tree, in chunks of the target sizes
    /// (copying an index into this layout).
    pub fn load(
        &self,
        entries: impl Iterator<Item = Result<Entry, IndexError>>,
    ) -> Result<usize, IndexError> {
        let mut run: Vec<Entry> = Vec::new();
        let mut batch = sled::Batch::default();
        let (mut size, mut n, mut pending) = (0, 0, 0);
        let l = self.limits;
        let put = |run: &mut Vec<Entry>, batch: &mut sled::Batch| {
            if let Some((k, _)) = run.first() {
                batch.insert(k.clone(), encode(run));
                run.clear();
            }
        };
        for en in entries {
            let en = en?;
            if l.full(run.len(), size, &en) {
                put(&mut run, &mut batch);
                size = 0;
                pending += 1;
                if pending == 1024 {
                    self.tree
                        .apply_batch(std::mem::take(&mut batch))
                        .map_err(e)?;
                    pending = 0;
                }
            }
            size += cost(&en);
            run.push(en);
            n += 1;
        }
        put(&mut run, &mut batch);
        self.tree.apply_batch(batch).map_err(e)?;
        Ok(n)
    }

    /// Applies the writes of an [`Edit`] as one sled batch.
    pub fn apply(&self, writes: Writes) -> Result<(), IndexError> {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree.apply_batch(batch).map_err(e)
    }
}

/// The sled writes of an edit: each chunk key with its new value or `None` (removed).
pub(crate) type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// An iterator over the entries from a key on; see [`Packed::range`].
pub(crate) struct Range<'a> {
    packed: &'a Packed,
    from: Vec<u8>,
    started: bool,
    /// The key of the chunk read last: the next one is the first after it.
    after: Option<sled::IVec>,
    buf: std::vec::IntoIter<Entry>,
    last: Option<Vec<u8>>,
    done: bool,
}

impl Range<'_> {
    /// Reads the next chunk into `buf`; `false` when there is none.
    fn next_chunk(&mut self) -> Result<bool, IndexError> {
        let kv = if !self.started {
            self.started = true;
            match self.packed.chunk_at(&self.from)? {
                Some(kv) => Some(kv),
                None => self
                    .packed
                    .tree
                    .range(&self.from[..]..)
                    .next()
                    .transpose()
                    .map_err(e)?,
            }
        } else {
            let Some(after) = &self.after else {
                return Ok(false);
            };
            self.packed
                .tree
                .range::<&[u8], _>((Bound::Excluded(&after[..]), Bound::Unbounded))
                .next()
                .transpose()
                .map_err(e)?
        };
        let Some((k, v)) = kv else {
            return Ok(false);
        };
        self.after = Some(k);
        let entries = decode(&v)?;
        self.packed.count_reads(entries.len() as u64);
        self.buf = entries.into_iter();
        Ok(true)
    }
}

impl Iterator for Range<'_> {
    type Item = Result<Entry, IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            for (k, v) in self.buf.by_ref() {
                let seen = match &self.last {
                    Some(last) => k <= *last,
                    None => k < self.from,
                };
                if !seen {
                    self.last = Some(k.clone());
                    return Some(Ok((k, v)));
                }
            }
            match self.next_chunk() {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
        None
    }
}

/// A chunk read for an edit.
struct Loaded {
    entries: Vec<Entry>,
    /// Whether the chunk is in the tree under the key it is filed under in [`Edit`] (not
    /// the first chunk of an empty tree).
    stored: bool,
    /// Whether it also takes keys below its own (it is the first chunk).
    first: bool,
    /// The next chunk's key: this one takes keys below it.
    until: Option<Vec<u8>>,
    dirty: bool,
}

/// Changes to a [`Packed`] map, gathered in memory; see the module's notes.
pub(crate) struct Edit<'a> {
    packed: &'a Packed,
    chunks: BTreeMap<Vec<u8>, Loaded>,
}

impl Edit<'_> {
    /// The key under which the chunk holding `k` is filed here, reading it if need be.
    fn slot(&mut self, k: &[u8]) -> Result<Vec<u8>, IndexError> {
        let below = self
            .chunks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(k)))
            .next_back()
            .filter(|(_, c)| c.until.as_deref().is_none_or(|u| k < u))
            .map(|(ck, _)| ck.clone());
        if let Some(ck) = below {
            return Ok(ck);
        }
        if let Some((ck, c)) = self.chunks.iter().next() {
            if c.first && k < &ck[..] {
                return Ok(ck.clone());
            }
        }
        let tree = &self.packed.tree;
        let (ck, v, first) = match self.packed.chunk_at(k)? {
            Some((ck, v)) => (ck.to_vec(), Some(v), false),
            None => match tree.iter().next().transpose().map_err(e)? {
                Some((ck, v)) => (ck.to_vec(), Some(v), true),
                None => (k.to_vec(), None, true),
            },
        };
        if let Some(c) = self.chunks.get_mut(&ck) {
            // Read before for a key above it; now it is known to be the first chunk too.
            c.first |= first;
            return Ok(ck);
        }
        let until = match &v {
            Some(_) => tree
                .range::<&[u8], _>((Bound::Excluded(&ck[..]), Bound::Unbounded))
                .next()
                .transpose()
                .map_err(e)?
                .map(|(k, _)| k.to_vec()),
            None => None,
        };
        let loaded = Loaded {
            entries: v.as_deref().map(decode).transpose()?.unwrap_or_default(),
            stored: v.is_some(),
            first,
            until,
            dirty: false,
        };
        self.chunks.insert(ck.clone(), loaded);
        Ok(ck)
    }

    pub fn get(&mut self, k: &[u8]) -> Result<Option<&[u8]>, IndexError> {
        let ck = self.slot(k)?;
        let c = &self.chunks[&ck];
        Ok(c.entries
            .binary_search_by(|(x, _)| x[..].cmp(k))
            .ok()
            .map(|i| &c.entries[i].1[..]))
    }

    /// Sets (or with `None` removes) the entry of `k`.
    pub fn set(&mut self, k: &[u8], v: Option<Vec<u8>>) -> Result<(), IndexError> {
        let ck = self.slot(k)?;
        let c = self.chunks.get_mut(&ck).expect("just read");
        match (c.entries.binary_search_by(|(x, _)| x[..].cmp(k)), v) {
            (Ok(i), Some(v)) => c.entries[i].1 = v,
            (Ok(i), None) => {
                c.entries.remove(i);
            }
            (Err(i), Some(v)) => c.entries.insert(i, (k.to_vec(), v)),
            (Err(_), None) => return Ok(()),
        }
        c.dirty = true;
        Ok(())
    }

    /// Moves the entries of each edited chunk left with fewer than `min_n` into the chunk
    /// after it (read now if need be); the emptied chunk is removed and the two are
    /// written as one (or split again, if too large) by [`Edit::finish`]. The last chunk
    /// stays as it is.
    fn merge_small(&mut self) -> Result<(), IndexError> {
        let min = self.packed.limits.min_n;
        let small = |c: &Loaded| c.dirty && !c.entries.is_empty() && c.entries.len() < min;
        let keys: Vec<Vec<u8>> = self
            .chunks
            .iter()
            .filter(|(_, c)| small(c) && c.until.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        // In key order; a chunk merged into that is still small (it was emptied by this
        // edit, say) is merged on in turn.
        for mut ck in keys {
            loop {
                let c = &self.chunks[&ck];
                let Some(next) = c.until.clone().filter(|_| small(c)) else {
                    break;
                };
                let nk = self.slot(&next)?;
                let moved = std::mem::take(&mut self.chunks.get_mut(&ck).expect("read").entries);
                let n = self.chunks.get_mut(&nk).expect("just read");
                n.entries.splice(0..0, moved);
                n.dirty = true;
                ck = nk;
            }
        }
        Ok(())
    }

    /// The sled writes that make the tree hold the edited chunks.
    pub fn finish(mut self) -> Result<Writes, IndexError> {
        self.merge_small()?;
        let mut w = Writes::new();
        let l = self.packed.limits;
        for (ck, c) in self.chunks.into_iter().filter(|(_, c)| c.dirty) {
            if c.stored {
                w.entry(ck).or_insert(None);
            }
            if c.entries.is_empty() {
                continue;
            }
            for p in pieces(&c.entries, l) {
                w.insert(p[0].0.clone(), Some(encode(p)));
            }
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        min_n: 2,
        target_n: 2,
        max_n: 4,
        target_bytes: 40,
        max_bytes: 80,
    };

    fn open() -> (tempfile::TempDir, Packed) {
        let t = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(t.path().join("db"))
            .open()
            .unwrap();
        let p = Packed::new(db.open_tree("t").unwrap(), SMALL);
        (t, p)
    }

    #[test]
    fn chunks_round_trip_and_damage_is_an_error() {
        let en: Vec<Entry> = vec![
            (b"r\0a".to_vec(), b"1".to_vec()),
            (b"r\0a/b".to_vec(), vec![]),
            (b"r\0b".to_vec(), vec![0xff; 300]),
        ];
        let v = encode(&en);
        assert_eq!(decode(&v).unwrap(), en);
        // A cut between entries reads as the entries before it; anywhere else is an error.
        for cut in 1..v.len() {
            if let Ok(got) = decode(&v[..cut]) {
                assert!(got.len() < en.len() && en.starts_with(&got), "cut at {cut}");
            }
        }
        assert!(decode(&v[..v.len() - 1]).is_err());
        assert!(decode(&[0]).is_err());
        assert!(
            decode(&[CHUNK_V1, 5, 0, 0]).is_err(),
            "a shared prefix longer than the key before"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any sequence of edits leaves the packed map equal to a `BTreeMap` given the same
        /// sets and removes: point reads, ranges from any key, and prefix scans.
        #[test]
        fn a_packed_map_behaves_as_a_sorted_map(batches in proptest::collection::vec(
            proptest::collection::vec((0u8..40, 0usize..30, proptest::bool::ANY), 1..30), 1..8)) {
            let (_t, p) = open();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let key = |i: u8| format!("{}/{}", i % 3, i).into_bytes();
            for batch in batches {
                let mut ed = p.edit();
                for (i, len, put) in batch {
                    let k = key(i);
                    let v = vec![i; len];
                    let before = ed.get(&k).unwrap().map(<[u8]>::to_vec);
                    proptest::prop_assert_eq!(before.as_ref(), model.get(&k));
                    if put {
                        ed.set(&k, Some(v.clone())).unwrap();
                        model.insert(k, v);
                    } else {
                        ed.set(&k, None).unwrap();
                        model.remove(&k);
                    }
                }
                p.apply(ed.finish().unwrap()).unwrap();
                for i in 0..40 {
                    let got = p.get(&key(i)).unwrap();
                    proptest::prop_assert_eq!(got.as_ref(), model.get(&key(i)));
                }
                for from in [&b""[..], b"0", b"1/1", b"1/15", b"2/", b"3"] {
                    let got: Vec<Entry> = p.range(from).map(Result::unwrap).collect();
                    let want: Vec<Entry> = model.range(from.to_vec()..).map(|(k, v)| (k.clone(), v.clone())).collect();
                    proptest::prop_assert_eq!(got, want);
                }
                let got: Vec<Entry> = p.scan_prefix(b"1/").map(Result::unwrap).collect();
                let want: Vec<Entry> = model.iter().filter(|(k, _)| k.starts_with(b"1/")).map(|(k, v)| (k.clone(), v.clone())).collect();
                proptest::prop_assert_eq!(got, want);
                proptest::prop_assert_eq!(p.is_empty(), model.is_empty());
                for kv in p.tree().iter() {
                    let (_, v) = kv.unwrap();
                    let n = decode(&v).unwrap().len();
                    proptest::prop_assert!((1..=SMALL.max_n).contains(&n), "{} entries", n);
                }
            }
        }
    }

    /// Removing most entries leaves chunks of at least `min_n` (but for the last), not a
    /// sled key per entry left.
    #[test]
    fn removals_merge_small_chunks() {
        let (_t, p) = open();
        let en: Vec<Entry> = (0..2000u32)
            .map(|i| (format!("k{i:05}").into_bytes(), vec![1]))
            .collect();
        p.load(en.clone().into_iter().map(Ok)).unwrap();
        assert_eq!(p.tree().len(), 1000);
        // Every entry but each tenth removed, in edits of 97.
        let gone: Vec<&Entry> = en
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 10 != 0)
            .map(|x| x.1)
            .collect();
        for batch in gone.chunks(97) {
            let mut ed = p.edit();
            for (k, _) in batch {
                ed.set(k, None).unwrap();
            }
            p.apply(ed.finish().unwrap()).unwrap();
        }
        let left: Vec<Entry> = p.range(b"").map(Result::unwrap).collect();
        let want: Vec<Entry> = en.iter().step_by(10).cloned().collect();
        assert_eq!(left, want);
        let sizes: Vec<usize> = p
            .tree()
            .iter()
            .map(|kv| decode(&kv.unwrap().1).unwrap().len())
            .collect();
        let (last, rest) = sizes.split_last().unwrap();
        assert!(*last >= 1);
        assert!(
            rest.iter()
                .all(|&n| (SMALL.min_n..=SMALL.max_n).contains(&n)),
            "{sizes:?}"
        );
        for (k, v) in &left {
            assert_eq!(p.get(k).unwrap().as_ref(), Some(v));
        }
    }

    #[test]
    fn a_sorted_run_loads_in_target_chunks() {
        let (_t, p) = open();
        let en: Vec<Entry> = (0..25u8).map(|i| (vec![b'k', i], vec![i])).collect();
        assert_eq!(p.load(en.clone().into_iter().map(Ok)).unwrap(), 25);
        assert_eq!(p.tree().len(), 13);
        let got: Vec<Entry> = p.range(b"").map(Result::unwrap).collect();
        assert_eq!(got, en);
    }
}
