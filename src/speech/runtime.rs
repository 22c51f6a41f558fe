//! ONNX Runtime, loaded at run time from the PyPI wheel's `.so` (ort's
//! `load-dynamic`): one initialisation per process, after checking the file.
//!
//! Why the checks: with `load-dynamic`, ort 2.0.0-rc.12 hung forever on a
//! missing or too-old library, and panics if any ort API is touched before a
//! library is set. So every session in this crate is created after
//! [`ensure_initialised`], and the library is opened and its version read here
//! first, failing with an error that names the file.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::{SpeechError, SpeechModelPaths};

/// What was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxRuntimeInfo {
    pub path: PathBuf,
    pub version: String,
}

/// `None` until a library has been checked and handed to ort. Guarded by a
/// mutex rather than a `OnceLock` so that a failed attempt (wrong path) can be
/// retried with another path.
static RUNTIME: Mutex<Option<OnnxRuntimeInfo>> = Mutex::new(None);

/// Checks the library at `path` and makes it ONNX Runtime for this process.
///
/// Idempotent: a second call returns the runtime already loaded (ONNX
/// Runtime cannot be swapped within a process), whatever its path.
pub fn init_onnxruntime(path: &Path) -> Result<OnnxRuntimeInfo, SpeechError> {
    let mut runtime = RUNTIME.lock();
    if let Some(info) = runtime.as_ref() {
        if info.path != path {
            tracing::warn!(
                loaded = %info.path.display(),
                requested = %path.display(),
                "ONNX Runtime is already loaded; keeping the first library"
            );
        }
        return Ok(info.clone());
    }
    let version = check_library(path)?;
    pin_malloc_mmap_threshold();
    let library_error = |reason: String| SpeechError::OnnxRuntimeLibrary {
        path: path.to_path_buf(),
        reason,
    };
    let builder = ort::init_from(path).map_err(|error| library_error(error.to_string()))?;
    // A council's calls must not leave the building, telemetry included.
    builder
        .with_name("frontdoor")
        .with_telemetry(false)
        .commit();
    let info = OnnxRuntimeInfo {
        path: path.to_path_buf(),
        version,
    };
    tracing::info!(path = %info.path.display(), version = %info.version, "ONNX Runtime loaded");
    *runtime = Some(info.clone());
    Ok(info)
}

/// Piper's sentences need 100–200 MB of buffers for a moment, which its
/// sessions hand back after each run ([`RunMemory`]). glibc returns a freed
/// block to the system only if it was mmap'ed, and after the first such
/// block it raises its mmap threshold to that block's size (up to 32 MB), so
/// every later buffer came from the heap and stayed resident: the engine sat
/// at 650 MB after one call instead of 480. A fixed threshold keeps large
/// buffers mmap'ed; 1 MB leaves ONNX Runtime's arena chunks and whisper.cpp's
/// one-off buffers above it and ordinary allocations below.
fn pin_malloc_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD_BYTES: libc::c_int = 1024 * 1024;
        // SAFETY: mallopt only adjusts the allocator's tunables.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD_BYTES) } != 1 {
            tracing::warn!("could not set malloc's mmap threshold; memory may stay resident");
        }
    }
}

/// The loaded runtime, loading it from `FRONTDOOR_ONNXRUNTIME_LIB` or the
/// model cache on first use.
pub fn ensure_initialised() -> Result<OnnxRuntimeInfo, SpeechError> {
    if let Some(info) = RUNTIME.lock().as_ref() {
        return Ok(info.clone());
    }
    let path = SpeechModelPaths::from_env_or_cache().onnxruntime_lib;
    if !path.is_file() {
        return Err(SpeechError::OnnxRuntimeNotFound {
            tried: path.display().to_string(),
        });
    }
    init_onnxruntime(&path)
}

/// The runtime loaded so far, if any.
pub fn loaded() -> Option<OnnxRuntimeInfo> {
    RUNTIME.lock().clone()
}

/// Opens the library and reads its version, without involving ort.
fn check_library(path: &Path) -> Result<String, SpeechError> {
    let error = |reason: String| SpeechError::OnnxRuntimeLibrary {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(error("file not found".into()));
    }
    // SAFETY: loading ONNX Runtime runs its static initialisers, which are
    // benign; the same file is what ort itself will load.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|e| error(format!("cannot be loaded: {e}")))?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime since 1.0.
    let get_api_base = unsafe {
        library.get::<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase>(b"OrtGetApiBase\0")
    }
    .map_err(|_| error("is not ONNX Runtime (no OrtGetApiBase symbol)".into()))?;
    // SAFETY: the function takes no arguments and returns a static table.
    let base = unsafe { get_api_base() };
    if base.is_null() {
        return Err(error("OrtGetApiBase returned null".into()));
    }
    // SAFETY: `base` is non-null and points at the library's static table;
    // the version string is static and NUL-terminated.
    let version = unsafe {
        let version_ptr = ((*base).GetVersionString)();
        if version_ptr.is_null() {
            return Err(error("GetVersionString returned null".into()));
        }
        CStr::from_ptr(version_ptr).to_string_lossy().into_owned()
    };
    check_version(&version).map_err(error)?;
    Ok(version)
}

/// ort's `api-NN` feature needs ONNX Runtime 1.NN or later.
fn check_version(version: &str) -> Result<(), String> {
    let mut parts = version.split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(1), Some(minor)) if minor >= ort::MINOR_VERSION => Ok(()),
        (Some(major), Some(_)) if major > 1 => Ok(()),
        (Some(_), Some(_)) => Err(format!(
            "version {version} is too old; Frontdoor needs ONNX Runtime 1.{} or later",
            ort::MINOR_VERSION
        )),
        _ => Err(format!("unrecognised version string `{version}`")),
    }
}

/// How a session's working memory is managed between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMemory {
    /// Inputs of one fixed shape (Silero's window): ONNX Runtime's arena and
    /// its memory patterns settle at what one run needs.
    FixedShapes,
    /// Inputs that vary in length (the embedder's tokens): the arena, but no
    /// memory patterns, which are cached per input shape and rarely reused.
    VariableShapes,
    /// As [`RunMemory::VariableShapes`], for models whose working buffers
    /// grow with the input (Piper: 170 MB for a long sentence): every run
    /// must use [`release_arena_after_run`] run options, or the arena keeps
    /// the longest run's buffers for good.
    VariableShapesReleasedAfterRun,
}

/// Makes runs with these options hand the arena's free memory back to the
/// system when they end. Page for page, this is the cost of one run's
/// buffers being faulted in again; ONNX Runtime without an arena allocated
/// and freed every operator's output and ran Piper at half speed.
pub fn release_arena_after_run<O: ort::session::SelectedOutputMarker>(
    options: &mut ort::session::RunOptions<O>,
) -> Result<(), ort::Error> {
    options.add_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
}

/// Opens an ONNX session the way every model here runs: full graph
/// optimisation, `intra_threads` threads (1 for per-call models), no
/// inter-op parallelism, no spinning — spinning threads would burn the
/// cores the other calls need. The error is the runtime's message.
pub fn open_session(
    path: &Path,
    intra_threads: usize,
    memory: RunMemory,
) -> Result<ort::session::Session, String> {
    let mut sessions = open_sessions(path, 1, intra_threads, memory)?;
    sessions
        .pop()
        .ok_or_else(|| "no session was opened".to_string())
}

/// Opens `count` sessions of one model (at least one) for a
/// [`SessionPool`]. They share one copy of the weights ONNX Runtime
/// pre-packs for its matrix kernels, so a second session costs its own
/// initialisers but not a second packed copy.
pub fn open_sessions(
    path: &Path,
    count: usize,
    intra_threads: usize,
    memory: RunMemory,
) -> Result<Vec<ort::session::Session>, String> {
    use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let prepacked = PrepackedWeights::new();
    let memory_patterns = memory == RunMemory::FixedShapes;
    (0..count.max(1))
        .map(|_| {
            ort::session::Session::builder()
                .map_err(|e| text(&e))?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(|e| text(&e))?
                .with_intra_threads(intra_threads.max(1))
                .map_err(|e| text(&e))?
                .with_inter_threads(1)
                .map_err(|e| text(&e))?
                .with_intra_op_spinning(false)
                .map_err(|e| text(&e))?
                .with_memory_pattern(memory_patterns)
                .map_err(|e| text(&e))?
                .with_prepacked_weights(&prepacked)
                .map_err(|e| text(&e))?
                .commit_from_file(path)
                .map_err(|e| text(&e))
        })
        .collect()
}

/// Sessions of one model shared by many calls: `Session::run` needs
/// exclusive access, so each run takes a free session, or waits on the
/// next one in turn when all are busy.
pub struct SessionPool {
    sessions: Vec<Mutex<ort::session::Session>>,
    next: std::sync::atomic::AtomicUsize,
}

impl SessionPool {
    /// `sessions` must not be empty.
    pub fn new(sessions: Vec<ort::session::Session>) -> SessionPool {
        assert!(!sessions.is_empty(), "a session pool needs a session");
        SessionPool {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn lock(&self) -> parking_lot::MutexGuard<'_, ort::session::Session> {
        for session in &self.sessions {
            if let Some(guard) = session.try_lock() {
                return guard;
            }
        }
        let index =
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.sessions.len();
        self.sessions[index].lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_older_than_the_api_level_are_refused() {
        assert!(check_version("1.32.0").is_ok());
        assert!(check_version(&format!("1.{}.0", ort::MINOR_VERSION)).is_ok());
        assert!(check_version("1.17.3").unwrap_err().contains("too old"));
        assert!(check_version("garbage").is_err());
    }

    #[test]
    fn a_pool_opens_every_session_and_runs_that_release_the_arena_succeed() {
        let paths = SpeechModelPaths::from_env_or_cache();
        if !paths.silero_vad.is_file() || ensure_initialised().is_err() {
            eprintln!("skipped: Silero or ONNX Runtime not fetched");
            return;
        }
        let sessions = open_sessions(
            &paths.silero_vad,
            2,
            1,
            RunMemory::VariableShapesReleasedAfterRun,
        )
        .expect("sessions open");
        assert_eq!(sessions.len(), 2);
        let mut options = ort::session::RunOptions::new().expect("run options");
        release_arena_after_run(&mut options).expect("ONNX Runtime knows the shrinkage key");
        let input = [0f32; 288];
        let state = [0f32; 256];
        let rate = [8000i64];
        for mut session in sessions {
            let outputs = session
                .run_with_options(
                    ort::inputs![
                        "input" => ort::value::TensorRef::from_array_view(([1usize, 288], &input[..])).expect("input"),
                        "state" => ort::value::TensorRef::from_array_view(([2usize, 1, 128], &state[..])).expect("state"),
                        "sr" => ort::value::TensorRef::from_array_view(((), &rate[..])).expect("rate"),
                    ],
                    &options,
                )
                .expect("a run with arena release succeeds");
            let (_, probability) = outputs["output"]
                .try_extract_tensor::<f32>()
                .expect("probability");
            assert!(probability[0] < 0.5, "silence is not speech");
        }
    }

    #[test]
    fn a_missing_library_is_an_error_not_a_hang() {
        let error = check_library(Path::new("/nonexistent/libonnxruntime.so.1.32.0"));
        assert!(matches!(error, Err(SpeechError::OnnxRuntimeLibrary { .. })));
        // A file that exists but is not a shared library.
        let file = std::env::current_dir().unwrap().join("Cargo.toml");
        let error = check_library(&file).unwrap_err().to_string();
        assert!(error.contains("cannot be loaded"), "{error}");
    }
}
