//! The whisper.cpp "ggml" model file: writing its header and tensor records,
//! and reading one back (to check a converted model without loading it).
//!
//! The layout mirrors `whisper_model_load()` in the whisper.cpp sources that
//! `whisper-rs-sys` vendors: magic, eleven `i32` hparams, the mel filterbank,
//! the vocabulary, then tensor records until end of file. Everything is little
//! endian.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::ct2ggml::ConvertError;

/// `GGML_FILE_MAGIC` ("ggml" read as a little-endian `u32`).
pub const GGML_MAGIC: u32 = 0x6767_6d6c;

/// `ftype` 1: the large matrices are stored as f16.
pub const FTYPE_MOSTLY_F16: i32 = 1;

/// `ftype` of a model whose large matrices are 8-bit blocks (`GGML_FTYPE_MOSTLY_Q8_0`
/// = 7), plus `GGML_QNT_VERSION` (2) × `GGML_QNT_VERSION_FACTOR` (1000), as
/// whisper.cpp's own quantizer writes it.
pub const FTYPE_MOSTLY_Q8_0: i32 = 7 + 2 * 1000;

/// Elements per `Q8_0` block: one f16 scale and 32 signed bytes.
pub const Q8_0_BLOCK: u64 = 32;
const Q8_0_BLOCK_BYTES: u64 = 2 + Q8_0_BLOCK;

// Limits for reading untrusted files: far above any Whisper model, far below
// anything that could exhaust memory.
const MAX_FILTER_VALUES: u64 = 1 << 20;
const MAX_VOCAB: u64 = 1 << 20;
const MAX_TOKEN_BYTES: u64 = 1 << 16;
const MAX_TENSOR_NAME: u64 = 1 << 10;
const MAX_TENSORS: usize = 1 << 16;

/// Model dimensions, in the order whisper.cpp reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlHparams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    pub ftype: i32,
}

impl GgmlHparams {
    fn as_array(&self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }

    fn from_array(v: [i32; 11]) -> Self {
        Self {
            n_vocab: v[0],
            n_audio_ctx: v[1],
            n_audio_state: v[2],
            n_audio_head: v[3],
            n_audio_layer: v[4],
            n_text_ctx: v[5],
            n_text_state: v[6],
            n_text_head: v[7],
            n_text_layer: v[8],
            n_mels: v[9],
            ftype: v[10],
        }
    }

    /// How many tensors whisper.cpp creates for these dimensions (and so
    /// how many a complete file must hold): the fixed encoder and decoder
    /// tensors plus 15 per encoder block and 24 per decoder block.
    pub fn expected_tensor_count(&self) -> usize {
        let audio_layers = usize::try_from(self.n_audio_layer).unwrap_or(0);
        let text_layers = usize::try_from(self.n_text_layer).unwrap_or(0);
        7 + 15 * audio_layers + 4 + 24 * text_layers
    }
}

/// Element type of a tensor record: what whisper.cpp creates for an f16 or
/// a `Q8_0` model (matrices in the model's type, convolutions f16, the rest
/// f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    /// ggml's `block_q8_0`: blocks of 32 values along a row, each an f16
    /// scale followed by 32 `i8` (value ≈ scale × byte).
    Q8_0,
}

impl GgmlType {
    pub fn code(self) -> i32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            0 => Some(GgmlType::F32),
            1 => Some(GgmlType::F16),
            8 => Some(GgmlType::Q8_0),
            _ => None,
        }
    }

    /// Bytes of data for `elements` values; `None` when a block type gets a
    /// count that is not whole blocks (or the size overflows).
    pub fn data_bytes(self, elements: u64) -> Option<u64> {
        match self {
            GgmlType::F32 => elements.checked_mul(4),
            GgmlType::F16 => elements.checked_mul(2),
            GgmlType::Q8_0 => elements
                .is_multiple_of(Q8_0_BLOCK)
                .then(|| (elements / Q8_0_BLOCK).checked_mul(Q8_0_BLOCK_BYTES))
                .flatten(),
        }
    }
}

/// Appends `values` (a whole number of 32-value blocks) to `out` as ggml
/// `Q8_0` blocks, the way ggml's reference `quantize_row_q8_0` does: scale =
/// largest magnitude / 127, each value rounded half away from zero.
/// Hand-written because no crate writes ggml's legacy block format; it is
/// a dozen lines and checked against hand-computed blocks in the tests.
pub fn push_q8_0(values: &[f32], out: &mut Vec<u8>) {
    debug_assert!(values.len().is_multiple_of(Q8_0_BLOCK as usize));
    for block in values.chunks_exact(Q8_0_BLOCK as usize) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(scale).to_le_bytes());
        // |v × inverse| ≤ 127 by construction, so the cast cannot saturate.
        out.extend(block.iter().map(|v| (v * inverse).round() as i8 as u8));
    }
}

fn write_i32<W: Write>(w: &mut W, v: i32) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

/// Writes everything before the tensor records.
///
/// `filters` is `n_mel × n_fft` row-major; `vocab` holds the raw bytes of the
/// ordinary tokens (ids below `<|endoftext|>`).
pub fn write_header<W: Write>(
    w: &mut W,
    hparams: &GgmlHparams,
    n_mel: usize,
    n_fft: usize,
    filters: &[f32],
    vocab: &[Vec<u8>],
) -> Result<(), ConvertError> {
    if filters.len() != n_mel * n_fft {
        return Err(ConvertError::Format(format!(
            "mel filterbank has {} values, expected {n_mel}×{n_fft}",
            filters.len()
        )));
    }
    w.write_all(&GGML_MAGIC.to_le_bytes())?;
    for v in hparams.as_array() {
        write_i32(w, v)?;
    }
    write_i32(w, to_i32(n_mel, "n_mel")?)?;
    write_i32(w, to_i32(n_fft, "n_fft")?)?;
    let mut bytes = Vec::with_capacity(filters.len() * 4);
    for f in filters {
        bytes.extend_from_slice(&f.to_le_bytes());
    }
    w.write_all(&bytes)?;
    write_i32(w, to_i32(vocab.len(), "vocabulary size")?)?;
    for token in vocab {
        write_i32(w, to_i32(token.len(), "token length")?)?;
        w.write_all(token)?;
    }
    Ok(())
}

/// Writes a tensor record's header; the caller then writes exactly
/// `product(ne) × element size` bytes of data.
///
/// `ne` is in ggml order (fastest-varying first), i.e. the reverse of the
/// row-major shape.
pub fn write_tensor_header<W: Write>(
    w: &mut W,
    name: &str,
    ne: &[i32],
    ttype: GgmlType,
) -> Result<(), ConvertError> {
    write_i32(w, to_i32(ne.len(), "tensor rank")?)?;
    write_i32(w, to_i32(name.len(), "tensor name length")?)?;
    write_i32(w, ttype.code())?;
    for &d in ne {
        write_i32(w, d)?;
    }
    w.write_all(name.as_bytes())?;
    Ok(())
}

fn to_i32(v: usize, what: &str) -> Result<i32, ConvertError> {
    i32::try_from(v).map_err(|_| ConvertError::Format(format!("{what} {v} does not fit in i32")))
}

/// One tensor record as found in a ggml file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgmlTensorInfo {
    pub name: String,
    /// ggml order (fastest-varying dimension first).
    pub ne: Vec<i32>,
    pub ttype: GgmlType,
    /// Offset of the tensor's data from the start of the file.
    pub data_offset: u64,
}

/// What a ggml whisper file contains, without the tensor data.
#[derive(Debug, Clone)]
pub struct GgmlSummary {
    pub magic: u32,
    pub hparams: GgmlHparams,
    pub n_mel: i32,
    pub n_fft: i32,
    pub filters: Vec<f32>,
    pub vocab: Vec<Vec<u8>>,
    pub tensors: Vec<GgmlTensorInfo>,
}

/// Reads a ggml whisper file's header, vocabulary and tensor directory,
/// seeking over the tensor data. Fails cleanly on truncated or foreign files.
pub fn inspect<R: Read + Seek>(r: &mut R) -> Result<GgmlSummary, ConvertError> {
    let file_len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let mut bounded = Bounded {
        r,
        pos: 0,
        len: file_len,
    };

    let magic = bounded.u32("magic")?;
    if magic != GGML_MAGIC {
        return Err(ConvertError::Format(format!(
            "not a ggml file (magic {magic:#010x}, expected {GGML_MAGIC:#010x})"
        )));
    }
    let mut hp = [0i32; 11];
    for v in &mut hp {
        *v = bounded.i32("hparams")?;
    }
    let hparams = GgmlHparams::from_array(hp);

    let n_mel = bounded.i32("mel filter rows")?;
    let n_fft = bounded.i32("mel filter columns")?;
    let n_values = u64::try_from(n_mel)
        .ok()
        .zip(u64::try_from(n_fft).ok())
        .map(|(a, b)| a * b)
        .filter(|&n| n <= MAX_FILTER_VALUES)
        .ok_or_else(|| {
            ConvertError::Format(format!("implausible mel filterbank {n_mel}×{n_fft}"))
        })?;
    let raw = bounded.bytes(n_values * 4, "mel filters")?;
    let filters = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();

    let n_vocab = bounded.i32("vocabulary size")?;
    let n_vocab = u64::try_from(n_vocab)
        .ok()
        .filter(|&n| n <= MAX_VOCAB)
        .ok_or_else(|| ConvertError::Format(format!("implausible vocabulary size {n_vocab}")))?;
    let mut vocab = Vec::new();
    for _ in 0..n_vocab {
        let len = u64::from(bounded.u32("token length")?);
        if len > MAX_TOKEN_BYTES {
            return Err(ConvertError::Format(format!(
                "implausible token length {len}"
            )));
        }
        vocab.push(bounded.bytes(len, "token")?);
    }

    let mut tensors = Vec::new();
    while bounded.pos < bounded.len {
        if tensors.len() >= MAX_TENSORS {
            return Err(ConvertError::Format("too many tensors".into()));
        }
        let n_dims = bounded.i32("tensor rank")?;
        let name_len = bounded.i32("tensor name length")?;
        let type_code = bounded.i32("tensor type")?;
        if !(1..=4).contains(&n_dims) {
            return Err(ConvertError::Format(format!(
                "tensor rank {n_dims} out of range"
            )));
        }
        let name_len = u64::try_from(name_len)
            .ok()
            .filter(|&n| n <= MAX_TENSOR_NAME)
            .ok_or_else(|| {
                ConvertError::Format(format!("implausible tensor name length {name_len}"))
            })?;
        let ttype = GgmlType::from_code(type_code)
            .ok_or_else(|| ConvertError::Format(format!("unsupported tensor type {type_code}")))?;
        let mut ne = Vec::with_capacity(4);
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            let d = bounded.i32("tensor dimension")?;
            let du = u64::try_from(d).ok().filter(|&d| d > 0).ok_or_else(|| {
                ConvertError::Format(format!("tensor dimension {d} out of range"))
            })?;
            elements = elements
                .checked_mul(du)
                .ok_or_else(|| ConvertError::Format("tensor size overflows".into()))?;
            ne.push(d);
        }
        let name = String::from_utf8(bounded.bytes(name_len, "tensor name")?)
            .map_err(|_| ConvertError::Format("tensor name is not UTF-8".into()))?;
        let data_len = ttype.data_bytes(elements).ok_or_else(|| {
            ConvertError::Format(format!(
                "tensor `{name}` of {elements} elements cannot be stored as {ttype:?}"
            ))
        })?;
        let data_offset = bounded.pos;
        bounded.skip(data_len, &name)?;
        tensors.push(GgmlTensorInfo {
            name,
            ne,
            ttype,
            data_offset,
        });
    }

    Ok(GgmlSummary {
        magic,
        hparams,
        n_mel,
        n_fft,
        filters,
        vocab,
        tensors,
    })
}

/// A reader that knows the file length, so that every read and skip is
/// checked against it before any allocation happens.
struct Bounded<'a, R> {
    r: &'a mut R,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Bounded<'_, R> {
    fn ensure(&self, n: u64, what: &str) -> Result<(), ConvertError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ConvertError::Truncated(what.to_string())),
        }
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, ConvertError> {
        self.ensure(n, what)?;
        let n_usize = usize::try_from(n).map_err(|_| ConvertError::Truncated(what.to_string()))?;
        let mut buf = vec![0u8; n_usize];
        self.r.read_exact(&mut buf)?;
        self.pos += n;
        Ok(buf)
    }

    fn array4(&mut self, what: &str) -> Result<[u8; 4], ConvertError> {
        self.ensure(4, what)?;
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b)?;
        self.pos += 4;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, ConvertError> {
        Ok(u32::from_le_bytes(self.array4(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, ConvertError> {
        Ok(i32::from_le_bytes(self.array4(what)?))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), ConvertError> {
        self.ensure(n, what)?;
        self.pos += n;
        self.r.seek(SeekFrom::Start(self.pos))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sample_hparams() -> GgmlHparams {
        GgmlHparams {
            n_vocab: 51864,
            n_audio_ctx: 1500,
            n_audio_state: 384,
            n_audio_head: 6,
            n_audio_layer: 4,
            n_text_ctx: 448,
            n_text_state: 384,
            n_text_head: 6,
            n_text_layer: 4,
            n_mels: 80,
            ftype: FTYPE_MOSTLY_F16,
        }
    }

    fn sample_file() -> Vec<u8> {
        let mut out = Vec::new();
        let filters: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let vocab = vec![b"!".to_vec(), b" the".to_vec(), vec![0xff]];
        write_header(&mut out, &sample_hparams(), 2, 3, &filters, &vocab).unwrap();
        write_tensor_header(&mut out, "encoder.conv1.bias", &[1, 3], GgmlType::F32).unwrap();
        for v in [1.0f32, 2.0, 3.0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        write_tensor_header(
            &mut out,
            "decoder.token_embedding.weight",
            &[2, 2],
            GgmlType::F16,
        )
        .unwrap();
        out.extend_from_slice(&[0u8; 8]);
        out
    }

    #[test]
    fn writer_output_parses_back() {
        let bytes = sample_file();
        let summary = inspect(&mut Cursor::new(&bytes)).unwrap();
        assert_eq!(summary.magic, GGML_MAGIC);
        assert_eq!(summary.hparams, sample_hparams());
        assert_eq!((summary.n_mel, summary.n_fft), (2, 3));
        assert_eq!(summary.filters, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!(
            summary.vocab,
            vec![b"!".to_vec(), b" the".to_vec(), vec![0xff]]
        );
        assert_eq!(summary.tensors.len(), 2);
        assert_eq!(summary.tensors[0].name, "encoder.conv1.bias");
        assert_eq!(summary.tensors[0].ne, vec![1, 3]);
        assert_eq!(summary.tensors[0].ttype, GgmlType::F32);
        let off = summary.tensors[0].data_offset as usize;
        assert_eq!(&bytes[off..off + 4], &1.0f32.to_le_bytes());
        assert_eq!(summary.tensors[1].name, "decoder.token_embedding.weight");
        assert_eq!(summary.tensors[1].ttype, GgmlType::F16);
        assert_eq!(summary.tensors[1].data_offset as usize + 8, bytes.len());
    }

    #[test]
    fn header_starts_with_magic_and_hparams_in_loader_order() {
        let bytes = sample_file();
        assert_eq!(&bytes[0..4], b"lmgg");
        let word = |i: usize| i32::from_le_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap());
        assert_eq!(word(0), 51864);
        assert_eq!(word(2), 384);
        assert_eq!(word(4), 4);
        assert_eq!(word(5), 448);
        assert_eq!(word(9), 80);
        assert_eq!(word(10), 1);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample_file();
        for cut in 0..bytes.len() {
            if let Ok(s) = inspect(&mut Cursor::new(&bytes[..cut])) {
                // A cut exactly between tensor records is a valid (shorter) file.
                assert!(s.tensors.len() < 2, "cut at {cut} parsed as complete");
            }
        }
    }

    #[test]
    fn q8_0_blocks_match_ggml_reference_quantisation() {
        // One block: largest magnitude 2.54 → scale 0.02, so each value is
        // value / 0.02 rounded half away from zero (ggml uses roundf).
        let mut block = [0.0f32; 32];
        block[0] = 2.54;
        block[1] = -2.54;
        block[2] = 0.01; // 0.5 → 1
        block[3] = -0.01; // -0.5 → -1
        block[4] = 0.029; // 1.45 → 1
        block[5] = 1.0; // 50
        let mut out = Vec::new();
        push_q8_0(&block, &mut out);
        assert_eq!(out.len(), 34);
        let scale = half::f16::from_le_bytes([out[0], out[1]]);
        assert_eq!(scale, half::f16::from_f32(0.02));
        let q: Vec<i8> = out[2..].iter().map(|&b| b as i8).collect();
        assert_eq!(&q[..7], &[127, -127, 1, -1, 1, 50, 0]);
        // Dequantised values stay within half a step of the originals.
        for (v, q) in block.iter().zip(&q) {
            assert!((f32::from(*q) * scale.to_f32() - v).abs() <= 0.0101, "{v}");
        }

        // An all-zero block has scale 0 and zero bytes, not NaN.
        out.clear();
        push_q8_0(&[0.0; 64], &mut out);
        assert_eq!(out, vec![0u8; 68]);
    }

    #[test]
    fn q8_0_sizes_are_whole_blocks_only() {
        assert_eq!(
            GgmlType::Q8_0.data_bytes(384 * 384),
            Some(384 * 384 / 32 * 34)
        );
        assert_eq!(GgmlType::Q8_0.data_bytes(33), None);
        assert_eq!(GgmlType::F16.data_bytes(3), Some(6));
        assert_eq!(GgmlType::F32.data_bytes(u64::MAX), None);
        assert_eq!(GgmlType::from_code(8), Some(GgmlType::Q8_0));
        assert_eq!(GgmlType::from_code(2), None, "Q4_0 is not written or read");
    }

    #[test]
    fn rejects_foreign_magic_and_absurd_sizes() {
        assert!(matches!(
            inspect(&mut Cursor::new(b"GGUF\0\0\0\0".to_vec())),
            Err(ConvertError::Format(_))
        ));
        let mut bytes = sample_file();
        // Claim a 2^30-entry filterbank: must be refused before allocating.
        bytes[48..52].copy_from_slice(&(1i32 << 15).to_le_bytes());
        bytes[52..56].copy_from_slice(&(1i32 << 15).to_le_bytes());
        assert!(inspect(&mut Cursor::new(&bytes)).is_err());
    }

    #[test]
    fn expected_tensor_count_matches_whisper_cpp_formula() {
        // 10 + 15 + 15·L_enc + 24·L_dec is whisper.cpp's context size; the
        // real count is 7 + 4 fixed tensors plus the per-block ones.
        assert_eq!(sample_hparams().expected_tensor_count(), 167);
    }
}
