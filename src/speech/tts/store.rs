//! Audio of fixed texts (knowledge-base answers, prompts) kept on disk, so an
//! engine that restarts (an upgrade, a reboot, a second node with the same
//! cache) answers its first callers without synthesising them again.
//!
//! Only texts that are the same for every caller are stored: the ahead-of-
//! time sentences of [`super::TtsWorkerPool::presynthesize`] and the fixed
//! prompts of [`super::PromptCache::warm`]. Anything said live (a read-back
//! of an address, a reference number) is never written here, so the store
//! holds no caller's data and is outside the retention rules.
//!
//! One directory per voice identity (model file, its size and time, the
//! options that change the sound, the output rate and [`SYNTHESIS_VERSION`]),
//! one file per text named by a hash of it. A file holds the text it was made
//! from, which is checked on reading, so a hash collision or a truncated file
//! reads as "not stored". Writes go to a temporary file and are renamed into
//! place, so several engine processes may share a store. Files no run has
//! used for [`STALE_AFTER`] are removed when a run has finished its
//! ahead-of-time work: the store follows the knowledge base as it changes.
//!
//! Hand-written: the format is a few lines, and a cache crate would bring an
//! index file that several processes would have to lock.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Bump when synthesis changes what it produces for the same text and voice
/// (trimming, normalisation, resampling), so old audio is not reused.
pub const SYNTHESIS_VERSION: u32 = 1;

/// Files not used by any run for this long are removed.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

const MAGIC: &[u8; 4] = b"FDTS";
/// Longer texts are not stored (a prompt or answer is far shorter).
const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Ten minutes of 8 kHz audio: anything larger is not a sentence.
const MAX_SAMPLES: usize = 10 * 60 * 8_000;

/// Sentence audio on disk for one voice at one rate.
#[derive(Debug)]
pub struct SentenceStore {
    dir: PathBuf,
    /// File names loaded or written by this run (kept by pruning).
    used: Mutex<HashSet<String>>,
    loads: AtomicU64,
    saves: AtomicU64,
}

/// Counters for the log and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub loads: u64,
    pub saves: u64,
}

impl SentenceStore {
    /// The store under `root` for the voice described by `identity` (any
    /// text that changes when the audio would: see [`voice_identity`]).
    pub fn open(root: &Path, identity: &str) -> io::Result<SentenceStore> {
        let dir = root.join(&hex(&Sha256::digest(identity.as_bytes()))[..16]);
        fs::create_dir_all(&dir)?;
        Ok(SentenceStore {
            dir,
            used: Mutex::new(HashSet::new()),
            loads: AtomicU64::new(0),
            saves: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file_name(kind: &str, text: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(kind.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        format!("{}.pcm", &hex(&hasher.finalize())[..32])
    }

    /// The stored audio of `text` (`kind` keeps sentences and whole prompts
    /// apart), or `None` when it is not stored or the file is unreadable.
    pub fn load(&self, kind: &str, text: &str) -> Option<Vec<i16>> {
        let name = Self::file_name(kind, text);
        let path = self.dir.join(&name);
        let bytes = fs::read(&path).ok()?;
        let audio = decode(&bytes, text)?;
        self.mark_used(name, &path);
        self.loads.fetch_add(1, Ordering::Relaxed);
        Some(audio)
    }

    /// Keeps `audio` for `text`. Errors are logged, never raised: the store
    /// only saves time.
    pub fn save(&self, kind: &str, text: &str, audio: &[i16]) {
        if text.len() > MAX_TEXT_BYTES || audio.is_empty() || audio.len() > MAX_SAMPLES {
            return;
        }
        let name = Self::file_name(kind, text);
        let path = self.dir.join(&name);
        match self.write_atomically(&path, &encode(text, audio)) {
            Ok(()) => {
                self.used.lock().insert(name);
                self.saves.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::debug!(%error, path = %path.display(), "synthesised audio not stored")
            }
        }
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let temporary = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let result = fs::File::create(&temporary)
            .and_then(|mut file| file.write_all(bytes))
            .and_then(|()| fs::rename(&temporary, path));
        if result.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        result
    }

    /// Records that this run used `name`, and refreshes its time so other
    /// runs' pruning keeps it.
    fn mark_used(&self, name: String, path: &Path) {
        if self.used.lock().insert(name)
            && let Ok(file) = fs::File::options().append(true).open(path)
        {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Keeps `text`'s file (if stored) through [`Self::prune`] although this
    /// run did not need to read it (the audio was already in memory).
    /// Asking again costs no I/O.
    pub fn keep(&self, kind: &str, text: &str) {
        let name = Self::file_name(kind, text);
        if self.used.lock().contains(&name) {
            return;
        }
        let path = self.dir.join(&name);
        if path.exists() {
            self.mark_used(name, &path);
        }
    }

    /// Removes files this run did not use and no run has used for
    /// `stale_after`, and temporary files left by a crash. Returns how many.
    pub fn prune(&self, stale_after: Duration) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let used = self.used.lock().clone();
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if used.contains(&name) {
                continue;
            }
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .unwrap_or_default();
            let leftover = name.starts_with(".tmp-") && age > Duration::from_secs(3600);
            if (leftover || (name.ends_with(".pcm") && age > stale_after))
                && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed + self.prune_other_voices(stale_after)
    }

    /// Removes the directories of other voice identities (an older model, a
    /// changed option) in which no file was used for `stale_after`.
    fn prune_other_voices(&self, stale_after: Duration) -> usize {
        let Some(Ok(siblings)) = self.dir.parent().map(fs::read_dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let recent = |path: &Path| {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() <= stale_after)
        };
        let mut removed = 0;
        for sibling in siblings.flatten() {
            let path = sibling.path();
            if path == self.dir || !path.is_dir() {
                continue;
            }
            let Ok(files) = fs::read_dir(&path) else {
                continue;
            };
            let files: Vec<PathBuf> = files.flatten().map(|f| f.path()).collect();
            if !files.iter().any(|f| recent(f)) && fs::remove_dir_all(&path).is_ok() {
                removed += files.len();
            }
        }
        removed
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            loads: self.loads.load(Ordering::Relaxed),
            saves: self.saves.load(Ordering::Relaxed),
        }
    }
}

/// What makes a voice's audio what it is: the model file (path, size and
/// modification time), `settings` (the options that change the sound) and
/// the output rate.
pub fn voice_identity(model: &Path, settings: &str, rate: u32) -> String {
    let (size, modified) = fs::metadata(model)
        .map(|m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            (m.len(), modified)
        })
        .unwrap_or_default();
    format!(
        "frontdoor {} synthesis {SYNTHESIS_VERSION}; model {} {size} {modified}; {settings}; rate {rate}",
        env!("CARGO_PKG_VERSION"),
        model.display()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `FDTS`, text length (u32 LE), text, sample count (u32 LE), samples (i16 LE).
fn encode(text: &str, audio: &[i16]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(12 + text.len() + audio.len() * 2);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(&(audio.len() as u32).to_le_bytes());
    for sample in audio {
        bytes.extend_from_slice(&sample.to_le_bytes());
    }
    bytes
}

fn decode(bytes: &[u8], text: &str) -> Option<Vec<i16>> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (length, rest) = rest.split_first_chunk::<4>()?;
    let length = u32::from_le_bytes(*length) as usize;
    if length != text.len() || rest.get(..length)? != text.as_bytes() {
        return None;
    }
    let (count, samples) = rest[length..].split_first_chunk::<4>()?;
    let count = u32::from_le_bytes(*count) as usize;
    if count == 0 || count > MAX_SAMPLES || samples.len() != count * 2 {
        return None;
    }
    Some(
        samples
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_audio_comes_back_for_the_same_text_only() {
        let root = tempfile::tempdir().unwrap();
        let store = SentenceStore::open(root.path(), "voice a").unwrap();
        let audio: Vec<i16> = (0..800).map(|i| (i * 37 % 2000 - 1000) as i16).collect();
        assert_eq!(store.load("sentence", "Bins go out on Monday."), None);
        store.save("sentence", "Bins go out on Monday.", &audio);
        assert_eq!(
            store.load("sentence", "Bins go out on Monday.").as_deref(),
            Some(&audio[..])
        );
        assert_eq!(
            store.load("prompt", "Bins go out on Monday."),
            None,
            "kinds apart"
        );
        assert_eq!(store.load("sentence", "Bins go out on Tuesday."), None);
        // Another process (a second store on the same directory) reads it.
        let again = SentenceStore::open(root.path(), "voice a").unwrap();
        assert!(again.load("sentence", "Bins go out on Monday.").is_some());
        assert_eq!(again.stats(), StoreStats { loads: 1, saves: 0 });
        // Another voice does not.
        let other = SentenceStore::open(root.path(), "voice b").unwrap();
        assert_eq!(other.load("sentence", "Bins go out on Monday."), None);
    }

    #[test]
    fn a_damaged_or_foreign_file_reads_as_not_stored() {
        let root = tempfile::tempdir().unwrap();
        let store = SentenceStore::open(root.path(), "voice").unwrap();
        let text = "Parking permits cost forty pounds.";
        store.save("sentence", text, &[1, 2, 3, 4]);
        let path = store.dir().join(SentenceStore::file_name("sentence", text));
        let good = fs::read(&path).unwrap();
        for damaged in [
            good[..good.len() - 1].to_vec(),
            good[..6].to_vec(),
            Vec::new(),
            b"RIFF....WAVEfmt ".to_vec(),
            encode("Another text entirely.", &[1, 2, 3, 4]),
            encode(text, &[]),
        ] {
            fs::write(&path, &damaged).unwrap();
            assert_eq!(store.load("sentence", text), None, "{damaged:?}");
        }
        // Empty or absurd audio is not written at all.
        store.save("sentence", "Nothing.", &[]);
        assert_eq!(store.load("sentence", "Nothing."), None);
    }

    #[test]
    fn pruning_removes_only_files_unused_for_long() {
        let root = tempfile::tempdir().unwrap();
        let writer = SentenceStore::open(root.path(), "voice").unwrap();
        writer.save("sentence", "Kept by use.", &[1; 10]);
        writer.save("sentence", "Old and unused.", &[2; 10]);
        writer.save("sentence", "Recent but unused.", &[3; 10]);
        let month_ago = SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
        for text in ["Kept by use.", "Old and unused."] {
            let path = writer
                .dir()
                .join(SentenceStore::file_name("sentence", text));
            let file = fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(month_ago).unwrap();
        }
        // A later run uses one old file; pruning keeps it and the recent one.
        let run = SentenceStore::open(root.path(), "voice").unwrap();
        run.keep("sentence", "Kept by use.");
        assert_eq!(run.prune(STALE_AFTER), 1);
        assert!(run.load("sentence", "Kept by use.").is_some());
        assert!(run.load("sentence", "Recent but unused.").is_some());
        assert_eq!(run.load("sentence", "Old and unused."), None);
        // Using a file refreshed its time: a third run does not prune it.
        let third = SentenceStore::open(root.path(), "voice").unwrap();
        assert_eq!(third.prune(STALE_AFTER), 0);
    }

    #[test]
    fn another_voices_directory_goes_once_none_of_it_was_used_for_long() {
        let root = tempfile::tempdir().unwrap();
        let old_voice = SentenceStore::open(root.path(), "old model").unwrap();
        old_voice.save("sentence", "Hello.", &[1; 10]);
        let active = SentenceStore::open(root.path(), "other model in use").unwrap();
        active.save("sentence", "Hello.", &[1; 10]);
        let current = SentenceStore::open(root.path(), "current model").unwrap();
        assert_eq!(current.prune(STALE_AFTER), 0, "both recently used");
        let path = old_voice
            .dir()
            .join(SentenceStore::file_name("sentence", "Hello."));
        let file = fs::File::options().append(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - STALE_AFTER - Duration::from_secs(60))
            .unwrap();
        assert_eq!(current.prune(STALE_AFTER), 1);
        assert!(!old_voice.dir().exists());
        assert!(active.dir().exists());
        assert!(current.dir().exists());
    }
}
