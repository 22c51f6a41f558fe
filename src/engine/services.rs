//! Start-up of the assistant's shared services: the answer engine, the
//! speech models and their worker pools. Loaded once, before the first call,
//! and only when a dialplan route uses the assistant.

use std::sync::Arc;

use anyhow::{Context, bail};
use tracing::{info, warn};

use crate::answer::AnswerEngine;
use crate::asr::{AsrConfig, AsrModel, AsrPool, AsrPoolConfig};
use crate::call::assistant::{
    AssistantServices, GOODBYE_SILENT, HOLDING_PHRASE, NOT_HEARD, REPROMPT,
};
use crate::config::Config;
use crate::speech::{
    PiperVoice, PromptCache, SentenceStore, SileroVadModel, TtsPoolConfig, TtsWorkerPool,
};

/// Blocking: loads models (seconds). Call from `spawn_blocking`.
pub fn load_assistant(config: &Config) -> anyhow::Result<AssistantServices> {
    let answer = AnswerEngine::load(
        &config.assistant.knowledge_dir,
        &config.assistant.governance_file,
    )
    .context("loading the answer engine")?;
    let models = config.model_set();
    let missing = models.missing_files();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "speech models missing: {}. Run `frontdoor models fetch` (or set paths in [models] of config.toml)",
            list.join(", ")
        );
    }
    crate::speech::init_onnxruntime(&models.onnxruntime_lib).context("loading ONNX Runtime")?;

    let started = std::time::Instant::now();
    let tts_workers = config.assistant.tts_workers;
    let voice = Arc::new(
        PiperVoice::load_with(
            &models.piper_onnx,
            &models.piper_config,
            crate::speech::PiperVoiceOptions {
                sessions: tts_workers,
                ..Default::default()
            },
        )
        .context("loading the Piper voice")?,
    );
    // Audio of fixed texts is kept on disk beside the models, so a restart
    // needs no synthesis before its first calls (see `SentenceStore`).
    let root = config.models_cache_dir().join("tts");
    let store = if config.assistant.tts_store {
        let identity = voice.store_identity(crate::speech::TELEPHONY_RATE);
        match SentenceStore::open(&root, &identity) {
            Ok(store) => Some(Arc::new(store)),
            Err(error) => {
                warn!(%error, dir = %root.display(), "synthesised audio will not be kept on disk");
                None
            }
        }
    } else {
        None
    };
    let prompts = PromptCache::new(voice.clone(), 64).with_store(store.clone());
    // Fixed phrases are synthesised now, so the greeting starts at once.
    let governance = answer.governance();
    let mut fixed: Vec<String> = vec![
        answer.greeting(),
        HOLDING_PHRASE.into(),
        REPROMPT.into(),
        GOODBYE_SILENT.into(),
        NOT_HEARD.into(),
        crate::call::TAKEOVER_LINE.into(),
        crate::call::UNAVAILABLE_LINE.into(),
        governance.safety.no_agent_available.clone(),
        governance.safety.no_agent_available_routine.clone(),
    ];
    // Transfer replies too: a caller at risk must not wait for synthesis
    // before the agent's phone starts ringing.
    for category in crate::answer::Escalation::ALL_ESCALATING {
        if let Some(policy) = governance.policy(category) {
            fixed.push(policy.message.clone());
        }
    }
    prompts
        .warm(fixed.iter().map(String::as_str))
        .context("synthesising the fixed prompts")?;
    let tts = TtsWorkerPool::start(
        voice,
        TtsPoolConfig {
            workers: tts_workers,
            sentence_cache_bytes: config.assistant.tts_cache_mb.saturating_mul(1024 * 1024),
            sentence_store: store,
            ..Default::default()
        },
    )
    .context("starting speech synthesis workers")?;
    // Every answer the knowledge base can give is synthesised into the
    // sentence cache in the background, only while no caller's words are
    // being recognised, so known answers start without synthesis delay.
    tts.presynthesize_once(
        || crate::call::assistant::static_answer_texts(&answer),
        Some(Arc::new(crate::call::assistant::recognition_idle)),
    );

    let vad = SileroVadModel::load(&models.silero_vad).context("loading Silero VAD")?;

    let asr_model =
        AsrModel::load(&models.whisper_ggml, AsrConfig::default()).context("loading Whisper")?;
    let mut pool_config = AsrPoolConfig::default();
    if let Some(n) = config.assistant.asr_workers {
        pool_config.workers = n;
    }
    pool_config.shed_prompt_when_busy = !config.assistant.asr_prompt_when_busy;
    let asr =
        AsrPool::start(&asr_model, pool_config).context("starting speech recognition workers")?;
    info!(
        whisper = %models.whisper_ggml.display(),
        voice = %models.piper_onnx.display(),
        asr_workers = asr.workers(),
        tts_workers,
        load_s = format!("{:.1}", started.elapsed().as_secs_f32()),
        "assistant ready"
    );
    Ok(AssistantServices {
        answer: Arc::new(answer),
        asr: Arc::new(asr),
        tts,
        prompts,
        vad,
    })
}
