//! Feature codes: an agent changes their own state from their phone by
//! dialling a short number to Frontdoor (`*1` available, `*2` break, `*3`
//! offline by default; `[handoff.feature_codes]`).
//!
//! Only a phone registered as that agent (digest-authenticated REGISTER)
//! may use them, and only from the address it registered from
//! ([`Handoff::registered_agent_at`]); anyone else is refused with 403
//! before the dialplan sees the call. Frontdoor answers, plays a short
//! tone and hangs up, so the agent never waits on a prompt:
//!
//! - rising two-tone (523 Hz then 784 Hz): available, calls will ring;
//! - falling two-tone (784 Hz then 523 Hz): break, offline or wrap-up;
//! - three low pips (350 Hz): refused (the agent is on or ringing for a
//!   call); the state is unchanged.
//!
//! Every use is audited with the agent as actor.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use super::directory::AgentState;
use super::transfer::Handoff;
use crate::media::{self, MediaEvent, MediaStream};
use crate::sip::{CallKey, IncomingInvite};
use crate::store::{AuditEntry, StoreHandle};

/// Longest a confirmation may take before Frontdoor hangs up anyway.
const TONE_GUARD: Duration = Duration::from_secs(3);

impl Handoff {
    /// Carries out a feature code dialled by `agent`'s phone on `call`:
    /// sets the state, audits it, and answers with the confirmation tone.
    /// A call without a usable SDP offer is refused with 488 after the
    /// state is set (there is nothing to play the tone on).
    pub async fn answer_feature_code(
        &self,
        call: CallKey,
        invite: IncomingInvite,
        agent: String,
        wanted: AgentState,
        store: StoreHandle,
    ) {
        let dialled = invite
            .request_uri_user
            .clone()
            .or_else(|| invite.to_user.clone())
            .unwrap_or_default();
        let result = self.set_agent_state(&agent, wanted).await;
        let detail = match &result {
            Ok(now) => format!(
                "agent {agent} via feature code {dialled}: {} (asked {})",
                now.as_str(),
                wanted.as_str()
            ),
            Err(e) => format!(
                "agent {agent} via feature code {dialled}: {} refused: {e}",
                wanted.as_str()
            ),
        };
        info!(%agent, %dialled, ok = result.is_ok(), "feature code");
        store
            .audit(AuditEntry {
                at: Utc::now(),
                actor: agent.clone(),
                action: "agent_state".to_owned(),
                call_id: None,
                detail,
            })
            .await;
        let tone = match result {
            Ok(AgentState::Available) => confirmation(&[523.0, 784.0]),
            Ok(_) => confirmation(&[784.0, 523.0]),
            Err(_) => refusal(),
        };
        if let Err(why) = self.play_and_hang_up(call, &invite, tone).await {
            warn!(%agent, why, "feature code confirmation not played");
        }
    }

    async fn play_and_hang_up(
        &self,
        call: CallKey,
        invite: &IncomingInvite,
        tone: Arc<[i16]>,
    ) -> Result<(), &'static str> {
        let deps = self.deps();
        let Some(negotiated) = invite
            .sdp
            .as_deref()
            .and_then(|offer| media::sdp::negotiate(offer, &deps.caps).ok())
        else {
            deps.sip.reject(call, 488, None, Vec::new());
            return Err("no usable SDP offer");
        };
        let Some(lease) = deps.ports.allocate() else {
            deps.sip.reject(call, 503, None, Vec::new());
            return Err("no free RTP ports");
        };
        let Ok(stream) = MediaStream::bind(deps.local_ip, lease, deps.media.clone()).await else {
            deps.sip.reject(call, 503, None, Vec::new());
            return Err("cannot bind RTP");
        };
        let answer = media::sdp::build_answer(
            &negotiated,
            deps.local_ip,
            stream.local_rtp_port(),
            rand::random::<u32>() as u64,
            1,
        );
        deps.sip.answer(call, answer);
        let (handle, mut events) = stream.start(negotiated, None);
        let length = Duration::from_millis(tone.len() as u64 / 8);
        handle.play(tone);
        let guard = tokio::time::sleep(length + TONE_GUARD);
        tokio::pin!(guard);
        loop {
            tokio::select! {
                _ = &mut guard => break,
                event = events.recv() => match event {
                    Some(MediaEvent::PlaybackFinished) | Some(MediaEvent::Inactive { .. }) | None => break,
                    Some(_) => {}
                },
            }
        }
        deps.sip.hangup(call);
        let _ = handle.stop().await;
        Ok(())
    }
}

/// A short tone per frequency (150 ms, then 250 ms for the last), 50 ms
/// apart, after 200 ms of silence so the phone's audio path is open.
fn confirmation(frequencies: &[f32]) -> Arc<[i16]> {
    let mut samples = silence(200);
    for (i, frequency) in frequencies.iter().enumerate() {
        let ms = if i + 1 == frequencies.len() { 250 } else { 150 };
        samples.extend(sine(*frequency, ms));
        samples.extend(silence(50));
    }
    Arc::from(samples)
}

/// Three low pips: "that did not work".
fn refusal() -> Arc<[i16]> {
    let mut samples = silence(200);
    for _ in 0..3 {
        samples.extend(sine(350.0, 120));
        samples.extend(silence(80));
    }
    Arc::from(samples)
}

fn silence(ms: usize) -> Vec<i16> {
    vec![0; media::SAMPLE_RATE as usize * ms / 1000]
}

fn sine(frequency: f32, ms: usize) -> impl Iterator<Item = i16> {
    let rate = media::SAMPLE_RATE as f32;
    (0..media::SAMPLE_RATE as usize * ms / 1000).map(move |i| {
        ((2.0 * std::f32::consts::PI * frequency * i as f32 / rate).sin() * 6000.0) as i16
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn energy_at(samples: &[i16], frequency: f32) -> f64 {
        // Goertzel-style correlation: enough to tell the tones apart.
        let rate = media::SAMPLE_RATE as f32;
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for (i, s) in samples.iter().enumerate() {
            let phase = 2.0 * std::f32::consts::PI * frequency * i as f32 / rate;
            re += f64::from(*s) * f64::from(phase.cos());
            im += f64::from(*s) * f64::from(phase.sin());
        }
        (re * re + im * im).sqrt()
    }

    #[test]
    fn tones_tell_available_from_not_available_and_refused() {
        let up = confirmation(&[523.0, 784.0]);
        let down = confirmation(&[784.0, 523.0]);
        assert_eq!(up.len(), down.len());
        assert!(up.len() < media::SAMPLE_RATE as usize, "under a second");
        // The tone that ends the confirmation is the one it rises or falls to.
        let tail = |t: &[i16]| t[t.len() - 8 * 260..].to_vec();
        assert!(energy_at(&tail(&up), 784.0) > 10.0 * energy_at(&tail(&up), 523.0));
        assert!(energy_at(&tail(&down), 523.0) > 10.0 * energy_at(&tail(&down), 784.0));
        let refused = refusal();
        assert!(energy_at(&refused, 350.0) > 10.0 * energy_at(&refused, 784.0));
    }
}
