//! Which keys had a good answer kept lately: what lets a successful call
//! skip the cache.
//!
//! A cache read costs a successful call about 900 instructions (moka's
//! hash, table probe, clock read and read log), to learn only that the kept
//! answer is young enough to stay. This table answers that from a slot
//! picked by the key's hash, holding the key last kept there and when: one
//! load (arc-swap's, which writes only the reading thread's own lines) and
//! one comparison of keys, so keys whose hashes collide are told apart as
//! the cache tells them.
//!
//! A slot holds one key at a time, so keys sharing a slot take turns, and
//! a slot holding another key says nothing: the call asks the cache. The
//! table can only send a call to the cache, never skip keeping an answer
//! the cache does not have, once a lookup that missed has
//! [forgotten](Recent::forget) the key.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// Slots at most: 8 KiB a cache, and the keys of up to 1,024 stamps. More
/// distinct keys than slots only send more calls to the cache.
const MAX_SLOTS: usize = 1024;

pub(super) struct Recent<K> {
    slots: Box<[ArcSwapOption<Stamp<K>>]>,
    hasher: foldhash::fast::RandomState,
    refresh_after: u64,
}

/// A key, and when its kept answer was fresh (by the cache's clock).
struct Stamp<K> {
    key: Arc<K>,
    kept: u64,
}

impl<K: Hash + Eq> Recent<K> {
    /// A table for about `keys` keys (at most [`MAX_SLOTS`] slots), telling
    /// answers younger than `refresh_after` nanoseconds.
    pub(super) fn new(keys: u64, refresh_after: u64) -> Recent<K> {
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

    fn slot(&self, key: &K) -> &ArcSwapOption<Stamp<K>> {
        // Truncation is the point: the low bits pick the slot.
        let index = self.hasher.hash_one(key) as usize & (self.slots.len() - 1);
        &self.slots[index]
    }

    /// Whether `key`'s answer is [young](young), as far as the table
    /// knows.
    pub(super) fn fresh(&self, key: &K, now: u64) -> bool {
        let stamp = self.slot(key).load();
        stamp
            .as_ref()
            .is_some_and(|s| young(s.kept, now, self.refresh_after) && *s.key == *key)
    }

    /// Notes that `key`'s kept answer dates from `kept`.
    pub(super) fn mark(&self, key: Arc<K>, kept: u64) {
        let slot = self.slot(&key);
        slot.store(Some(Arc::new(Stamp { key, kept })));
    }

    /// Forgets `key` (the cache has no answer for it), if its slot holds it.
    pub(super) fn forget(&self, key: &K) {
        let slot = self.slot(key);
        let stamp = slot.load();
        if stamp.as_ref().is_some_and(|s| *s.key == *key) {
            // Fails only if the slot changed since: a racing mark is for
            // an answer kept just now, and is right to stay.
            let _ = slot.compare_and_swap(&stamp, None);
        }
    }

    /// Forgets every key.
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

    #[test]
    fn a_marked_key_is_fresh_until_refresh_after() {
        let recent = Recent::new(100, SECOND);
        let start = 5 * SECOND;
        assert!(!recent.fresh(&7u32, start), "nothing marked yet");
        recent.mark(Arc::new(7), start);
        assert!(recent.fresh(&7, start));
        assert!(recent.fresh(&7, start + SECOND - 1));
        assert!(!recent.fresh(&7, start + SECOND));
        assert!(recent.fresh(&7, start - 1), "a stamp from later");
        recent.forget(&7);
        assert!(!recent.fresh(&7, start), "forgotten");
        recent.mark(Arc::new(7), start);
        recent.clear();
        assert!(!recent.fresh(&7, start), "cleared");
    }

    /// Keys whose hashes are all equal, as a key type's `Hash` may make
    /// them.
    #[derive(PartialEq, Eq)]
    struct Colliding(u32);

    impl Hash for Colliding {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            0u8.hash(state);
        }
    }

    #[test]
    fn keys_whose_hashes_collide_are_told_apart() {
        let recent = Recent::new(100, SECOND);
        recent.mark(Arc::new(Colliding(1)), 0);
        assert!(recent.fresh(&Colliding(1), 0));
        assert!(!recent.fresh(&Colliding(2), 0), "another key");
        recent.forget(&Colliding(2));
        assert!(recent.fresh(&Colliding(1), 0), "forgetting another key");
        recent.mark(Arc::new(Colliding(2)), 0);
        assert!(!recent.fresh(&Colliding(1), 0), "the slot is the other's");
        assert!(recent.fresh(&Colliding(2), 0));
    }

    /// Threads sharing one slot, each marking its own key at its own time,
    /// ten seconds apart: no key of an earlier thread is ever fresh at a
    /// thread's time, which a stamp with that key and this thread's time
    /// would make.
    #[test]
    fn keys_sharing_a_slot_never_take_each_others_stamps() {
        const THREADS: u32 = 4;
        let recent = Recent::new(1, SECOND);
        let time = |thread: u32| u64::from(thread) * 10 * SECOND;
        for _round in 0..50 {
            let barrier = std::sync::Barrier::new(THREADS as usize);
            std::thread::scope(|scope| {
                for me in 0..THREADS {
                    let (recent, barrier) = (&recent, &barrier);
                    scope.spawn(move || {
                        let key = Arc::new(Colliding(me));
                        barrier.wait();
                        for _ in 0..2_000 {
                            recent.mark(Arc::clone(&key), time(me));
                            for earlier in 0..me {
                                assert!(!recent.fresh(&Colliding(earlier), time(me)));
                            }
                        }
                    });
                }
            });
        }
    }
}
