//! Orphans: entries in a process's own processing list that no task of that
//! process is working on.
//!
//! They appear when Redis moved an entry but the reply never arrived (the
//! connection dropped mid-command, or a response timed out), or when the
//! step that would have removed or returned an entry failed. Recovery by
//! other processes only looks at the lists of dead processes, so without a
//! sweep such an entry would wait for its live owner to stop.
//!
//! Each process keeps a [`Held`] registry of the entries its tasks hold, and
//! an [`OrphanSweep`] compares its processing list with it every pass. An
//! entry is returned to its source list only when two passes in a row find
//! it unheld, so an entry taken a moment before a pass (moved by Redis, not
//! yet registered) is never mistaken for an orphan.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::store::connection::RedisConn;

use crate::store::scripts::RETURN_ONE;

fn fingerprint(entry: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    entry.hash(&mut h);
    h.finish()
}

/// The entries this process's tasks hold, as a multiset of fingerprints
/// (the same bytes may be held twice).
#[derive(Debug, Default)]
pub struct Held {
    counts: Mutex<HashMap<u64, u32>>,
}

impl Held {
    /// A new, empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers `entry` as held until the returned guard drops.
    pub fn hold(self: &Arc<Self>, entry: &[u8]) -> HeldEntry {
        let fp = fingerprint(entry);
        self.add(fp);
        HeldEntry {
            held: self.clone(),
            fp,
        }
    }

    fn add(&self, fp: u64) {
        *self.lock().entry(fp).or_insert(0) += 1;
    }

    fn remove(&self, fp: u64) {
        let mut map = self.lock();
        if let Some(n) = map.get_mut(&fp) {
            *n -= 1;
            if *n == 0 {
                map.remove(&fp);
            }
        }
    }

    fn count(&self, fp: u64) -> u32 {
        self.lock().get(&fp).copied().unwrap_or(0)
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.lock().values().map(|&n| n as usize).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u32>> {
        // A panic while holding this lock leaves counts that are still valid.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One held entry; released on drop.
#[derive(Debug)]
pub struct HeldEntry {
    held: Arc<Held>,
    fp: u64,
}

impl HeldEntry {
    /// The task now holds `entry` instead (the processing list's copy was
    /// replaced, e.g. a JSON entry by its id).
    pub fn replace(&mut self, entry: &[u8]) {
        let fp = fingerprint(entry);
        self.held.add(fp);
        self.held.remove(self.fp);
        self.fp = fp;
    }
}

impl Drop for HeldEntry {
    fn drop(&mut self) {
        self.held.remove(self.fp);
    }
}

/// The state of the sweep between passes: entries found unheld last time.
#[derive(Debug, Default)]
pub struct OrphanSweep {
    suspects: HashMap<u64, u32>,
}

impl OrphanSweep {
    /// Compares `listed` (the processing list now) with `held` and returns
    /// the entries that were unheld in this pass and the one before.
    pub fn pass(&mut self, listed: Vec<Vec<u8>>, held: &Held) -> Vec<Vec<u8>> {
        let mut seen: HashMap<u64, (u32, Vec<u8>)> = HashMap::new();
        for entry in listed {
            let fp = fingerprint(&entry);
            seen.entry(fp).or_insert((0, entry)).0 += 1;
        }
        let mut suspects = HashMap::new();
        let mut orphans = Vec::new();
        for (fp, (n, entry)) in seen {
            let unheld = n.saturating_sub(held.count(fp));
            if unheld == 0 {
                continue;
            }
            let confirmed = unheld.min(self.suspects.get(&fp).copied().unwrap_or(0));
            for _ in 0..confirmed {
                orphans.push(entry.clone());
            }
            if unheld > confirmed {
                suspects.insert(fp, unheld - confirmed);
            }
        }
        self.suspects = suspects;
        orphans
    }

    /// One pass over `processing`: confirmed orphans go back to the tail of
    /// `source` (taken next). Returns the entries returned.
    pub async fn sweep(
        &mut self,
        conn: &mut RedisConn,
        processing: &str,
        source: &str,
        held: &Held,
    ) -> redis::RedisResult<Vec<Vec<u8>>> {
        let listed: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(processing)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await?;
        let mut returned = Vec::new();
        for entry in self.pass(listed, held) {
            let moved: i64 = RETURN_ONE
                .key(processing)
                .key(source)
                .arg(&entry)
                .invoke_async(conn)
                .await?;
            if moved == 1 {
                returned.push(entry);
            }
        }
        Ok(returned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn an_entry_is_an_orphan_only_after_two_unheld_passes() {
        let held = Held::new();
        let mut sweep = OrphanSweep::default();
        let _a = held.hold(b"a");
        assert!(sweep.pass(vec![e("a"), e("b")], &held).is_empty());
        assert_eq!(sweep.pass(vec![e("a"), e("b")], &held), vec![e("b")]);
        // Returned: no longer listed, no longer suspected.
        assert!(sweep.pass(vec![e("a")], &held).is_empty());
        assert!(sweep.pass(vec![e("a")], &held).is_empty());
    }

    #[test]
    fn an_entry_held_in_between_is_not_an_orphan() {
        let held = Held::new();
        let mut sweep = OrphanSweep::default();
        assert!(sweep.pass(vec![e("x")], &held).is_empty());
        let _x = held.hold(b"x");
        assert!(sweep.pass(vec![e("x")], &held).is_empty());
        drop(_x);
        // Unheld again: suspected anew, not confirmed by the old suspicion.
        assert!(sweep.pass(vec![e("x")], &held).is_empty());
        assert_eq!(sweep.pass(vec![e("x")], &held), vec![e("x")]);
    }

    #[test]
    fn duplicates_count_separately_and_replace_moves_the_hold() {
        let held = Held::new();
        let mut sweep = OrphanSweep::default();
        let mut h = held.hold(b"{\"query_text\":\"q\"}");
        h.replace(b"id1");
        assert_eq!(held.len(), 1);
        let listed = || vec![e("id1"), e("id1"), e("id1")];
        assert!(sweep.pass(listed(), &held).is_empty());
        assert_eq!(sweep.pass(listed(), &held), vec![e("id1"), e("id1")]);
        drop(h);
        assert!(held.is_empty());
    }
}
