//! Synthesised sentences kept for reuse, so an answer Frontdoor has spoken
//! before (or synthesised ahead of time) starts playing at once.
//!
//! Knowledge-base answers are fixed text, and Piper works sentence by
//! sentence, so the unit kept is one sentence's 8 kHz audio, keyed by its
//! normalised words: a reply built from several fixed pieces ("the answer",
//! then "Is there anything else I can help with?") hits on every piece, and a
//! slot-filled read-back simply misses and is synthesised live.
//!
//! Bounded by bytes of audio, least recently used out first. One cache
//! belongs to one voice at one output rate (its [`super::TtsWorkerPool`]), so
//! the voice is not part of the key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

/// Counters for the log and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentenceCacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
    pub evicted: u64,
}

struct Entry {
    audio: Arc<[i16]>,
    /// Position in `by_use`.
    used: u64,
}

struct Inner {
    entries: HashMap<Arc<str>, Entry>,
    /// Use counter → key, oldest first: the eviction order.
    by_use: BTreeMap<u64, Arc<str>>,
    clock: u64,
    bytes: usize,
    stats: SentenceCacheStats,
}

/// Sentence audio by normalised sentence text, LRU within a byte budget.
pub struct SentenceCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl std::fmt::Debug for SentenceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceCache")
            .field("max_bytes", &self.max_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

fn audio_bytes(audio: &[i16]) -> usize {
    std::mem::size_of_val(audio)
}

impl SentenceCache {
    /// A cache holding at most `max_bytes` of audio (0 disables it).
    pub fn new(max_bytes: usize) -> SentenceCache {
        SentenceCache {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                by_use: BTreeMap::new(),
                clock: 0,
                bytes: 0,
                stats: SentenceCacheStats::default(),
            }),
            max_bytes,
        }
    }

    /// The audio of `sentence` if it is kept; counts a hit or a miss.
    pub fn get(&self, sentence: &str) -> Option<Arc<[i16]>> {
        if self.max_bytes == 0 {
            return None;
        }
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        inner.clock += 1;
        let now = inner.clock;
        match inner.entries.get_mut(sentence) {
            Some(entry) => {
                if let Some(key) = inner.by_use.remove(&entry.used) {
                    inner.by_use.insert(now, key);
                }
                entry.used = now;
                inner.stats.hits += 1;
                Some(Arc::clone(&entry.audio))
            }
            None => {
                inner.stats.misses += 1;
                None
            }
        }
    }

    /// Whether `sentence` is kept, without counting or refreshing it.
    pub fn contains(&self, sentence: &str) -> bool {
        self.inner.lock().entries.contains_key(sentence)
    }

    /// Keeps `audio` for `sentence`, pushing out the least recently used
    /// sentences to stay within the budget. Audio larger than the whole
    /// budget is not kept.
    pub fn insert(&self, sentence: &str, audio: Arc<[i16]>) {
        let size = audio_bytes(&audio);
        if size == 0 || size > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        inner.clock += 1;
        let now = inner.clock;
        if let Some(old) = inner.entries.remove(sentence) {
            inner.by_use.remove(&old.used);
            inner.bytes -= audio_bytes(&old.audio);
        }
        while inner.bytes + size > self.max_bytes {
            let Some((_, key)) = inner.by_use.pop_first() else {
                break;
            };
            if let Some(evicted) = inner.entries.remove(&key) {
                inner.bytes -= audio_bytes(&evicted.audio);
                inner.stats.evicted += 1;
            }
        }
        let key: Arc<str> = Arc::from(sentence);
        inner.by_use.insert(now, Arc::clone(&key));
        inner.entries.insert(key, Entry { audio, used: now });
        inner.bytes += size;
    }

    pub fn stats(&self) -> SentenceCacheStats {
        let inner = self.inner.lock();
        SentenceCacheStats {
            entries: inner.entries.len(),
            bytes: inner.bytes,
            ..inner.stats
        }
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(samples: usize) -> Arc<[i16]> {
        Arc::from(vec![1i16; samples])
    }

    #[test]
    fn a_kept_sentence_is_returned_and_counted() {
        let cache = SentenceCache::new(1_000);
        assert!(cache.get("Bins are collected weekly.").is_none());
        cache.insert("Bins are collected weekly.", audio(100));
        let hit = cache.get("Bins are collected weekly.").expect("kept");
        assert_eq!(hit.len(), 100);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
        assert_eq!(stats.bytes, 200);
    }

    #[test]
    fn the_least_recently_used_sentence_goes_first_and_bytes_stay_bounded() {
        // Room for two sentences of 100 samples (200 bytes each).
        let cache = SentenceCache::new(400);
        cache.insert("one.", audio(100));
        cache.insert("two.", audio(100));
        // "one." is used again, so "two." is now the oldest.
        assert!(cache.get("one.").is_some());
        cache.insert("three.", audio(100));
        assert!(cache.contains("one."));
        assert!(!cache.contains("two."));
        assert!(cache.contains("three."));
        let stats = cache.stats();
        assert_eq!(stats.bytes, 400);
        assert_eq!(stats.evicted, 1);
        // A larger sentence pushes out as many as it needs.
        cache.insert("four.", audio(200));
        assert_eq!(cache.stats().entries, 1);
        assert!(cache.stats().bytes <= 400);
    }

    #[test]
    fn replacing_a_sentence_does_not_count_its_bytes_twice() {
        let cache = SentenceCache::new(1_000);
        cache.insert("same.", audio(100));
        cache.insert("same.", audio(50));
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (1, 100));
    }

    #[test]
    fn audio_over_the_budget_and_a_disabled_cache_keep_nothing() {
        let cache = SentenceCache::new(100);
        cache.insert("too long.", audio(51));
        assert!(!cache.contains("too long."));
        let disabled = SentenceCache::new(0);
        disabled.insert("x.", audio(1));
        assert!(disabled.get("x.").is_none());
        assert_eq!(disabled.stats().entries, 0);
    }
}
