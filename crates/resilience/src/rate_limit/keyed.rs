//! One GCRA limit per key (tenant, host, API key) in bounded memory.

use crate::Name;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::gcra::Gcra;
use super::{RateLimitConfig, RateLimited, duration_to_nanos, nanos_since};
use crate::{Error, Event, Events, PolicyKind};

/// Shards of the key map: enough that threads rarely meet on one lock, few enough that a sweep
/// stays cheap.
const SHARDS: usize = 16;

/// A key with its hash, computed once per decision with the limiter's randomly keyed
/// [`RandomState`] (SipHash, so attacker-chosen keys cannot flood one bucket). The shard is picked
/// from this hash and the shard's map reuses it through [`PassThrough`] instead of hashing again.
struct Hashed<K> {
    hash: u64,
    key: K,
}

/// A key to look up: a stored [`Hashed`] or a borrowed [`Query`], so that a lookup needs no owned
/// key (the `Borrow<dyn ...>` pattern: std's `HashMap` finds entries by `&dyn HashedKey<K>`).
trait HashedKey<K> {
    fn hash(&self) -> u64;
    fn key(&self) -> &K;
}

/// A borrowed key and its hash, to look up without cloning the key.
struct Query<'a, K> {
    hash: u64,
    key: &'a K,
}

impl<K> HashedKey<K> for Hashed<K> {
    #[inline]
    fn hash(&self) -> u64 {
        self.hash
    }
    #[inline]
    fn key(&self) -> &K {
        &self.key
    }
}

impl<K> HashedKey<K> for Query<'_, K> {
    #[inline]
    fn hash(&self) -> u64 {
        self.hash
    }
    #[inline]
    fn key(&self) -> &K {
        self.key
    }
}

impl<'a, K: 'a> Borrow<dyn HashedKey<K> + 'a> for Hashed<K> {
    #[inline]
    fn borrow(&self) -> &(dyn HashedKey<K> + 'a) {
        self
    }
}

// `Hash` and `Eq` of `Hashed<K>` and of `dyn HashedKey<K>` agree, as `Borrow` requires: both hash
// the stored hash alone and compare hash and key.
impl<K> Hash for Hashed<K> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K: Eq> PartialEq for Hashed<K> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Hashed<K> {}

impl<K> Hash for dyn HashedKey<K> + '_ {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(HashedKey::hash(self));
    }
}

impl<K: Eq> PartialEq for dyn HashedKey<K> + '_ {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        HashedKey::hash(self) == HashedKey::hash(other) && self.key() == other.key()
    }
}

impl<K: Eq> Eq for dyn HashedKey<K> + '_ {}

/// A hasher for keys already hashed: it hands on the one `u64` written to it.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached (only `write_u64` is used); mix anyway rather than lose the bytes.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type KeyMap<K> = HashMap<Hashed<K>, u64, BuildHasherDefault<PassThrough>>;

/// One shard: its keys' TATs, and the counts of the decisions made under its lock (so that the
/// common admission or rejection updates plain integers the lock already guards, no atomics).
struct Shard<K> {
    map: KeyMap<K>,
    permitted: u64,
    rejected: u64,
}

/// A shard's lock on a cache line of its own, so threads on different shards do not contend.
#[repr(align(128))]
struct Padded<T>(T);

/// The shard of `hash`. Its bits 32 to 35: the map uses the low bits (bucket) and the top seven
/// (tag) of the same hash, which must stay independent of the shard.
#[inline]
fn shard_index(hash: u64) -> usize {
    ((hash >> 32) as usize) % SHARDS
}

/// A snapshot of a keyed rate limiter's counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KeyedRateLimitStats {
    /// The limiter's name.
    pub name: String,
    /// Requests admitted (after waiting, for those that waited).
    pub permitted: u64,
    /// Requests rejected (including new keys turned away because every slot was active).
    pub rejected: u64,
    /// Admitted requests that had to wait for their turn.
    pub waited: u64,
    /// Keys held now, idle ones not yet evicted included.
    pub keys: usize,
    /// The most keys held at once.
    pub max_keys: usize,
}

/// A rate limiter with one independent GCRA limit per key. Cheap to clone; clones share state.
///
/// Each key's state is one theoretical arrival time (TAT) in a sharded `Mutex<HashMap>`; a decision
/// locks one shard for a lookup and a few arithmetic operations. At most `keyed.max_keys` keys are
/// held. A key whose TAT has passed (*idle*) behaves exactly like a key never seen, so idle keys
/// are evicted whenever a new key needs room, and by [`retain_recent`](Self::retain_recent).
///
/// **When every slot holds an active key**, a new key is rejected with
/// [`RateLimited::TooManyKeys`], whose `retry_after` says when the first slot frees (at most
/// `burst * per / rate` away). Evicting an active key instead would hand it a fresh burst, so a flood
/// of distinct keys could lift every limit; rejecting keeps existing keys limited exactly and
/// bounds the cost of the flood to the new keys themselves. Once a sweep finds no idle key, later
/// new keys are rejected without sweeping again until the earliest key can have become idle.
pub struct KeyedRateLimiter<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for KeyedRateLimiter<K> {
    fn clone(&self) -> Self {
        KeyedRateLimiter {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<K> {
    gcra: Gcra,
    base: Instant,
    max_wait: u64,
    max_keys: usize,
    hasher: RandomState,
    shards: Box<[Padded<Mutex<Shard<K>>>]>,
    /// Keys held across all shards; changed only under the lock of the shard that gains or loses one.
    len: AtomicUsize,
    /// When the map was last found full of active keys: the earliest TAT among them. No key can
    /// become idle before it, so new keys are turned away without a sweep until then.
    next_idle_at: AtomicU64,
    /// Admissions after a wait (those admitted at once are counted in their shard).
    permitted: AtomicU64,
    /// Rejections outside a shard's lock: cost above burst, no slot for a new key.
    rejected: AtomicU64,
    waited: AtomicU64,
    name: Name,
    config: RateLimitConfig,
    events: Events,
}

impl<K> std::fmt::Debug for KeyedRateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("name", &self.inner.name)
            .field("keys", &self.inner.len.load(Ordering::Relaxed))
            .field("max_keys", &self.inner.max_keys)
            .finish()
    }
}

/// What a reservation decided.
enum Decision {
    Now,
    /// Admitted at `wake` (nanoseconds since the base).
    Later {
        wake: u64,
    },
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    pub(crate) fn from_valid_config(
        name: &str,
        config: RateLimitConfig,
        gcra: Gcra,
        events: Events,
    ) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    map: HashMap::default(),
                    permitted: 0,
                    rejected: 0,
                }))
            })
            .collect();
        KeyedRateLimiter {
            inner: Arc::new(Inner {
                gcra,
                base: Instant::now(),
                max_wait: duration_to_nanos(config.max_wait),
                max_keys: config.keyed.max_keys.max(1),
                hasher: RandomState::new(),
                shards,
                len: AtomicUsize::new(0),
                next_idle_at: AtomicU64::new(0),
                permitted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                waited: AtomicU64::new(0),
                name: name.into(),
                config,
                events,
            }),
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &RateLimitConfig {
        &self.inner.config
    }

    /// Keys held now (idle keys not yet evicted included); never more than `max_keys`.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicts every idle key (one whose limit is fully replenished). Changes no decision; frees
    /// memory and slots. Call it now and then if keys come and go and the map is rarely full.
    pub fn retain_recent(&self) {
        let now = self.inner.now();
        self.inner.sweep(now);
    }

    /// Admits `cost` units for `key` now or refuses at once.
    #[inline]
    pub fn try_acquire(&self, key: &K, cost: u32) -> Result<(), RateLimited> {
        // With no wait allowed, an admission is always for now.
        self.inner.reserve(key, cost, 0).map(|_| ())
    }

    /// Admits `cost` units for `key`, waiting up to `max_wait` for their turn.
    ///
    /// Cancellation-safe: dropped while waiting, it gives its reserved slot back.
    pub async fn acquire(&self, key: &K, cost: u32) -> Result<(), RateLimited> {
        let inner = &*self.inner;
        let Decision::Later { wake } = inner.reserve(key, cost, inner.max_wait)? else {
            return Ok(());
        };
        let mut guard = Refund {
            inner,
            key,
            increment: inner.gcra.increment(cost),
            wake,
            done: false,
        };
        tokio::time::sleep_until(inner.base + Duration::from_nanos(wake)).await;
        guard.done = true;
        inner.permitted.fetch_add(1, Ordering::Relaxed);
        inner.waited.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Runs `f` once one unit is admitted for `key` (waiting up to `max_wait`).
    pub async fn call<T, E, F, Fut>(&self, key: &K, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_weighted(key, 1, f).await
    }

    /// Runs `f` once `cost` units are admitted for `key` (waiting up to `max_wait`).
    pub async fn call_weighted<T, E, F, Fut>(&self, key: &K, cost: u32, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.acquire(key, cost)
            .await
            .map_err(|e| e.into_error(self.inner.name.clone()))?;
        f().await.map_err(Error::Inner)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> KeyedRateLimitStats {
        let inner = &*self.inner;
        let mut permitted = inner.permitted.load(Ordering::Relaxed);
        let mut rejected = inner.rejected.load(Ordering::Relaxed);
        for shard in inner.shards.iter() {
            let shard = lock(shard);
            permitted += shard.permitted;
            rejected += shard.rejected;
        }
        KeyedRateLimitStats {
            name: inner.name.to_string(),
            permitted,
            rejected,
            waited: inner.waited.load(Ordering::Relaxed),
            keys: inner.len.load(Ordering::Relaxed),
            max_keys: inner.max_keys,
        }
    }
}

impl<K: Hash + Eq + Clone> Inner<K> {
    fn now(&self) -> u64 {
        nanos_since(self.base, Instant::now())
    }

    /// The locked shard of a key hashed to `hash`.
    #[inline]
    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard<K>> {
        // `shard_index` keeps the index in range whatever the hash.
        lock(&self.shards[shard_index(hash)])
    }

    /// Decides for `key`: one hash, one clock read, one shard lock, one lookup for a held key.
    #[inline]
    fn reserve(&self, key: &K, cost: u32, max_wait: u64) -> Result<Decision, RateLimited> {
        if cost > self.gcra.burst {
            return Err(self.reject_cost(cost));
        }
        let hash = self.hasher.hash_one(key);
        let now = self.now();
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let query = Query { hash, key };
        let Some(tat) = shard.map.get_mut(&query as &dyn HashedKey<K>) else {
            drop(guard);
            return self.reserve_new(key, hash, cost, max_wait, now);
        };
        match self.gcra.check(*tat, now, cost, max_wait) {
            Ok(admit) if admit.wait == 0 => {
                *tat = admit.new_tat;
                shard.permitted += 1;
                Ok(Decision::Now)
            }
            Ok(admit) => {
                *tat = admit.new_tat;
                Ok(Decision::Later {
                    wake: now.saturating_add(admit.wait),
                })
            }
            Err(wait) => {
                shard.rejected += 1;
                drop(guard);
                Err(self.rejected_exhausted(wait))
            }
        }
    }

    /// Decides for a key not held a moment ago: inserts it if a slot is free, else evicts idle
    /// keys to make room, unless none can be idle yet.
    #[cold]
    fn reserve_new(
        &self,
        key: &K,
        hash: u64,
        cost: u32,
        max_wait: u64,
        now: u64,
    ) -> Result<Decision, RateLimited> {
        if let Some(decision) = self.try_reserve(key, hash, cost, max_wait, now)? {
            return Ok(decision);
        }
        // Full: make room by evicting idle keys, unless none can be idle yet.
        let next_idle_at = self.next_idle_at.load(Ordering::Relaxed);
        if now >= next_idle_at {
            self.sweep(now);
            if let Some(decision) = self.try_reserve(key, hash, cost, max_wait, now)? {
                return Ok(decision);
            }
        }
        let retry_after = self
            .next_idle_at
            .load(Ordering::Relaxed)
            .saturating_sub(now);
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Err(self.rejected_event(RateLimited::TooManyKeys {
            max_keys: self.max_keys,
            retry_after: Duration::from_nanos(retry_after),
        }))
    }

    /// Decides for a held key, or inserts a new one if a slot is free; `Ok(None)` if the map is full.
    fn try_reserve(
        &self,
        key: &K,
        hash: u64,
        cost: u32,
        max_wait: u64,
        now: u64,
    ) -> Result<Option<Decision>, RateLimited> {
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let query = Query { hash, key };
        let tat = match shard.map.get_mut(&query as &dyn HashedKey<K>) {
            Some(tat) => tat,
            None => {
                let reserved = self
                    .len
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < self.max_keys).then_some(n + 1)
                    })
                    .is_ok();
                if !reserved {
                    return Ok(None);
                }
                // A new key starts idle: TAT zero means a full burst.
                shard
                    .map
                    .entry(Hashed {
                        hash,
                        key: key.clone(),
                    })
                    .or_insert(0)
            }
        };
        match self.gcra.check(*tat, now, cost, max_wait) {
            Ok(admit) => {
                *tat = admit.new_tat;
                if admit.wait == 0 {
                    shard.permitted += 1;
                    Ok(Some(Decision::Now))
                } else {
                    Ok(Some(Decision::Later {
                        wake: now.saturating_add(admit.wait),
                    }))
                }
            }
            Err(wait) => {
                shard.rejected += 1;
                drop(guard);
                Err(self.rejected_exhausted(wait))
            }
        }
    }

    /// Evicts every idle key, one shard at a time. If none was idle and the map is full, records
    /// when the earliest held key becomes idle: until then no slot can free, so new keys are turned
    /// away without another sweep. (A sweep racing with another that frees slots may leave that
    /// time set while slots are free; new keys then wait at most until it, never longer than the
    /// tolerance.)
    fn sweep(&self, now: u64) {
        let mut earliest = u64::MAX;
        let mut removed_any = false;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let map = &mut shard.map;
            let before = map.len();
            map.retain(|_, tat| {
                let active = *tat > now;
                if active {
                    earliest = earliest.min(*tat);
                }
                active
            });
            let removed = before - map.len();
            if removed > 0 {
                removed_any = true;
                self.len.fetch_sub(removed, Ordering::Relaxed);
            }
        }
        let full = self.len.load(Ordering::Relaxed) >= self.max_keys;
        let next = if removed_any || !full { 0 } else { earliest };
        self.next_idle_at.store(next, Ordering::Relaxed);
    }

    /// Counts and reports the rejection of a request costing more than the burst (rare).
    #[cold]
    fn reject_cost(&self, cost: u32) -> RateLimited {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejected_event(RateLimited::CostExceedsBurst {
            cost,
            burst: self.gcra.burst,
        })
    }

    /// Reports a rejection for want of capacity, already counted in its shard.
    #[inline]
    fn rejected_exhausted(&self, wait: u64) -> RateLimited {
        self.rejected_event(RateLimited::Exhausted {
            retry_after: Duration::from_nanos(wait),
        })
    }

    /// Emits the rejection event (out of line, and only if someone listens); returns `why`.
    #[inline]
    fn rejected_event(&self, why: RateLimited) -> RateLimited {
        if self.events.is_active() {
            self.emit_rejected();
        }
        why
    }

    #[cold]
    #[inline(never)]
    fn emit_rejected(&self) {
        self.events.emit_with(|| Event::Rejected {
            name: self.name.clone(),
            policy: PolicyKind::RateLimit,
        });
    }
}

/// Locks a shard; a panic elsewhere while it was held leaves plain numbers, still usable.
#[inline]
fn lock<K>(shard: &Padded<Mutex<Shard<K>>>) -> MutexGuard<'_, Shard<K>> {
    shard
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Gives a waiting key's reserved slot back if dropped before its turn.
struct Refund<'a, K: Hash + Eq + Clone> {
    inner: &'a Inner<K>,
    key: &'a K,
    increment: u64,
    wake: u64,
    done: bool,
}

impl<K: Hash + Eq + Clone> Drop for Refund<'_, K> {
    fn drop(&mut self) {
        if self.done || self.inner.now() >= self.wake {
            return;
        }
        // Before its turn the key's TAT is past `now`, so the key is active and still held.
        let hash = self.inner.hasher.hash_one(self.key);
        let query = Query {
            hash,
            key: self.key,
        };
        if let Some(tat) = self
            .inner
            .shard(hash)
            .map
            .get_mut(&query as &dyn HashedKey<K>)
        {
            *tat = tat.saturating_sub(self.increment);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(max_keys: usize) -> KeyedRateLimiter<u64> {
        RateLimitConfig::new(1.0, Duration::from_secs(1))
            .burst(1)
            .max_keys(max_keys)
            .build_keyed("k", &Events::new())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn full_map_rejects_new_keys_without_sweeping_until_one_can_be_idle() {
        let l = keyed(2);
        l.try_acquire(&1, 1).unwrap();
        tokio::time::advance(Duration::from_millis(300)).await;
        l.try_acquire(&2, 1).unwrap();
        let err = l.try_acquire(&3, 1).unwrap_err();
        assert_eq!(
            err,
            RateLimited::TooManyKeys {
                max_keys: 2,
                retry_after: Duration::from_millis(700)
            }
        );
        assert_eq!(l.inner.next_idle_at.load(Ordering::Relaxed), 1_000_000_000);
        tokio::time::advance(Duration::from_millis(700)).await;
        l.try_acquire(&3, 1).unwrap();
        assert_eq!(l.len(), 2);
    }
}
