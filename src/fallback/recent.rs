//! The entries kept lately, in front of the cache: what lets a call learn
//! that its key's answer is fresh, or take it, without moka.
//!
//! A moka read costs about 900 instructions on one core (its hash, table
//! probe, clock read and read log), and does not scale: two cores reading
//! one key write its entry's reference count and moka's read log, and
//! served together more slowly than one alone. This table holds the
//! cache's own entries (no copies) in slots picked by the key's hash: one
//! load (arc-swap's, which writes only the reading thread's own lines, and
//! takes no reference count) and one comparison of keys, so keys whose
//! hashes collide are told apart as the cache tells them.
//!
//! A slot holds one entry at a time, so keys sharing a slot take turns, and
//! a slot holding another key says nothing: the call asks the cache. The
//! cache [forgets](Recent::forget) an entry as it drops it (evicted,
//! expired, replaced or invalidated: moka's eviction listener), so the
//! table keeps no answer alive, and serves none, that the cache no longer
//! has.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use arc_swap::{ArcSwapOption, Guard};

use super::cache::Entry;

/// Slots at most: 8 KiB a cache. More distinct keys than slots only send
/// more calls to the cache.
const MAX_SLOTS: usize = 1024;

/// A slot's entry as one load saw it.
type Loaded<K, Res> = Guard<Option<Arc<Entry<K, Res>>>>;

pub(super) struct Recent<K, Res> {
    slots: Box<[ArcSwapOption<Entry<K, Res>>]>,
    hasher: foldhash::fast::RandomState,
    refresh_after: u64,
}

impl<K: Hash + Eq, Res> Recent<K, Res> {
    /// A table for about `keys` keys (at most [`MAX_SLOTS`] slots), telling
    /// answers younger than `refresh_after` nanoseconds.
    pub(super) fn new(keys: u64, refresh_after: u64) -> Self {
        let slots = usize::try_from(keys)
            .unwrap_or(MAX_SLOTS)
            .clamp(1, MAX_SLOTS)
            .next_power_of_two();
        Recent {
            slots: (0..slots).map(|_| ArcSwapOption::empty()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            refresh_after,
        }
    }

    fn slot(&self, key: &K) -> &ArcSwapOption<Entry<K, Res>> {
        // Truncation is the point: the low bits pick the slot.
        let index = self.hasher.hash_one(key) as usize & (self.slots.len() - 1);
        &self.slots[index]
    }

    /// Whether `key`'s answer is [young], as far as the table
    /// knows.
    #[inline]
    pub(super) fn fresh(&self, key: &K, now: u64) -> bool {
        let kept = self.slot(key).load();
        kept.as_ref()
            .is_some_and(|e| young(e.at, now, self.refresh_after) && *e.key == *key)
    }

    /// `key`'s answer and when it was fresh, if the table holds it.
    #[inline]
    pub(super) fn answer(&self, key: &K) -> Option<(Res, u64)>
    where
        Res: Clone,
    {
        let kept = self.slot(key).load();
        kept.as_ref()
            .filter(|e| *e.key == *key)
            .map(|e| (e.response.clone(), e.at))
    }

    /// Whether `entry`'s slot holds it.
    #[inline]
    pub(super) fn holds(&self, entry: &Arc<Entry<K, Res>>) -> bool {
        self.held(entry).is_some()
    }

    /// `entry`'s slot as loaded, if it holds `entry`.
    fn held(&self, entry: &Arc<Entry<K, Res>>) -> Option<Loaded<K, Res>> {
        let kept = self.slot(&entry.key).load();
        kept.as_ref()
            .is_some_and(|e| Arc::ptr_eq(e, entry))
            .then_some(kept)
    }

    /// Holds `entry`, which the cache holds too, in its key's slot.
    pub(super) fn mark(&self, entry: Arc<Entry<K, Res>>) {
        self.slot(&entry.key).store(Some(entry));
    }

    /// Forgets `entry` (the cache dropped it), if its slot holds it.
    pub(super) fn forget(&self, entry: &Arc<Entry<K, Res>>) {
        if let Some(kept) = self.held(entry) {
            // Fails only if the slot changed since: to an entry the cache
            // holds, marked just now, which is right to stay.
            let _ = self.slot(&entry.key).compare_and_swap(&kept, None);
        }
    }

    /// Forgets every entry.
    pub(super) fn clear(&self) {
        for slot in &self.slots {
            slot.store(None);
        }
    }
}

/// Whether an answer kept at `kept` is too young at `now` to be replaced:
/// kept less than `refresh_after` before (or after: another thread's, which
/// read the clock after this one).
pub(super) fn young(kept: u64, now: u64, refresh_after: u64) -> bool {
    now.saturating_sub(kept) < refresh_after
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn entry<K>(key: K, response: &'static str, at: u64) -> Arc<Entry<K, &'static str>> {
        Arc::new(Entry {
            key: Arc::new(key),
            response,
            at,
        })
    }

    #[test]
    fn a_marked_entry_is_fresh_until_refresh_after_and_answers_until_forgotten() {
        let recent = Recent::new(100, SECOND);
        let start = 5 * SECOND;
        assert!(!recent.fresh(&7u32, start), "nothing marked yet");
        assert_eq!(recent.answer(&7), None);
        let kept = entry(7, "seven", start);
        recent.mark(Arc::clone(&kept));
        assert!(recent.fresh(&7, start));
        assert!(recent.fresh(&7, start + SECOND - 1));
        assert!(!recent.fresh(&7, start + SECOND));
        assert!(
            recent.fresh(&7, start - 1),
            "kept after this call read the clock"
        );
        assert_eq!(recent.answer(&7), Some(("seven", start)), "however old");
        recent.forget(&entry(7, "seven, kept again", start));
        assert_eq!(recent.answer(&7), Some(("seven", start)), "another entry");
        recent.forget(&kept);
        assert!(!recent.fresh(&7, start), "dropped by the cache");
        assert_eq!(recent.answer(&7), None);
        recent.mark(kept);
        recent.clear();
        assert_eq!(recent.answer(&7), None, "cleared");
    }

    /// Keys whose hashes are all equal, as a key type's `Hash` may make
    /// them.
    #[derive(Debug, PartialEq, Eq)]
    struct Colliding(u32);

    impl Hash for Colliding {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            0u8.hash(state);
        }
    }

    #[test]
    fn keys_whose_hashes_collide_are_told_apart() {
        let recent = Recent::new(100, SECOND);
        recent.mark(entry(Colliding(1), "one", 0));
        assert!(recent.fresh(&Colliding(1), 0));
        assert!(!recent.fresh(&Colliding(2), 0), "another key");
        assert_eq!(recent.answer(&Colliding(2)), None);
        recent.mark(entry(Colliding(2), "two", 0));
        assert!(!recent.fresh(&Colliding(1), 0), "the slot is the other's");
        assert_eq!(recent.answer(&Colliding(2)), Some(("two", 0)));
    }

    /// Threads sharing one slot, each marking its own key's entry and
    /// reading the slot at once: every answer found is the entry of the key
    /// asked for, never another's.
    #[test]
    fn keys_sharing_a_slot_never_answer_with_each_others_entries() {
        const THREADS: u32 = 4;
        const ANSWERS: [&str; THREADS as usize] = ["zero", "one", "two", "three"];
        let recent = Recent::new(1, SECOND);
        for _round in 0..50 {
            let barrier = std::sync::Barrier::new(THREADS as usize);
            std::thread::scope(|scope| {
                for me in 0..THREADS {
                    let (recent, barrier) = (&recent, &barrier);
                    scope.spawn(move || {
                        let mine = entry(Colliding(me), ANSWERS[me as usize], u64::from(me));
                        barrier.wait();
                        for i in 0..2_000 {
                            recent.mark(Arc::clone(&mine));
                            let asked = (me + i) % THREADS;
                            if let Some(found) = recent.answer(&Colliding(asked)) {
                                assert_eq!(found, (ANSWERS[asked as usize], u64::from(asked)));
                            }
                        }
                    });
                }
            });
        }
    }
}
