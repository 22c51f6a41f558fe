//! Voice-to-voice latency and barge-in, measured from outside the engine.
//!
//! A caller process of its own: each simulated caller places a SIP call over
//! loopback UDP, waits for the greeting to end, asks a recorded question and
//! timestamps (a) when it sent the last voiced frame of its question and (b)
//! when the first non-silent RTP packet of the answer arrived. It then talks
//! over that answer with its next question, timestamping its speech onset
//! and when Frontdoor's audio fell silent (barge-in), and measures that next
//! answer's latency the same way.
//!
//! ```text
//! cargo run --release --example voice_latency -- --target 127.0.0.1:5090 \
//!     --calls 24 --question q1.ul --question q2.ul --question q3.ul
//! ```
//!
//! With `--holding`, audio that starts like the engine's holding phrase
//! ("One moment, please.", said while every recogniser is busy) is not the
//! answer: the clock runs on through it to the answer that follows, and the
//! phrases heard are counted. Piper's phrasing varies from one synthesis to
//! the next, so the first 800 ms of each reply are compared with a synthesis
//! of the phrase by the shape of their loudness (correlation of log peaks per
//! packet: 0.95–0.99 between syntheses of the phrase, at most 0.53 between it
//! and 12 of the knowledge base's answers; over 500 ms the two overlapped on
//! a live run, so 800 ms it is).
//!
//! `scripts/voice-latency.sh` starts a release engine with the assistant and
//! runs this for 1 call and for 24 concurrent callers. Bounded: at most 64
//! calls, 8 questions, 120 s per call; loopback only.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use frontdoor::media::g711;
use frontdoor::media::rtp::{RtpHeader, RtpPacket, write_packet};

const MAX_CALLS: usize = 64;
const MAX_QUESTIONS: usize = 8;
const CALL_LIMIT: Duration = Duration::from_secs(120);
const FRAME: Duration = Duration::from_millis(20);
const FRAME_SAMPLES: usize = 160;
/// A packet whose loudest sample is above this is audio, not silence (-36 dBFS).
const VOICED_PEAK: u16 = 500;
/// Frontdoor counts as silent once this much of its audio in a row is silence.
const SILENT_RUN: Duration = Duration::from_millis(200);
/// The greeting has ended after this much silence following speech.
const GREETING_GAP: Duration = Duration::from_millis(900);
/// How far into an answer the caller talks over it.
const BARGE_IN_AFTER: Duration = Duration::from_millis(1_500);
/// Packets of a reply compared with the holding phrase before it counts as
/// the answer (the phrase itself is ~66 packets).
const HOLDING_COMPARED: usize = 40;
/// Correlation above which a reply's start is the holding phrase.
const HOLDING_LIKENESS: f32 = 0.8;
/// Packets a reply's start may be shifted against the phrase's.
const HOLDING_MAX_SHIFT: usize = 3;

#[derive(Parser, Debug)]
#[command(about = "Voice-to-voice latency and barge-in from outside the engine")]
struct Arguments {
    /// The engine's SIP address (UDP).
    #[arg(long)]
    target: SocketAddr,
    /// Concurrent callers.
    #[arg(long, default_value_t = 1)]
    calls: usize,
    /// Raw 8 kHz µ-law questions, asked in order (the second and later talk
    /// over the previous answer).
    #[arg(long = "question", required = true)]
    questions: Vec<PathBuf>,
    /// Delay between callers' starts, so their turns do not all line up.
    #[arg(long, default_value_t = 300)]
    stagger_ms: u64,
    /// Rounds of calls, one after another (more samples for a single call).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Dialled number.
    #[arg(long, default_value = "1000")]
    number: String,
    /// Also print each call's latencies, in the order asked (the first
    /// round's first answers are the engine's cold figures).
    #[arg(long)]
    each: bool,
    /// Raw 8 kHz µ-law synthesis of the engine's holding phrase: a reply
    /// that starts like it is not the answer.
    #[arg(long)]
    holding: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct CallResult {
    index: usize,
    /// End of the caller's speech → first voiced packet of the answer.
    latencies: Vec<Duration>,
    /// Caller's speech onset over an answer → Frontdoor silent.
    barge_ins: Vec<Duration>,
    /// Holding phrases heard before an answer.
    holding_phrases: u32,
    error: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Arguments::parse();
    if args.calls == 0 || args.calls > MAX_CALLS {
        eprintln!("--calls must be 1..={MAX_CALLS}");
        return std::process::ExitCode::from(2);
    }
    if args.questions.len() > MAX_QUESTIONS || !args.target.ip().is_loopback() {
        eprintln!("at most {MAX_QUESTIONS} questions, and a loopback target only");
        return std::process::ExitCode::from(2);
    }
    let mut questions = Vec::new();
    for path in &args.questions {
        match read_ulaw(path, 20) {
            Ok(bytes) => questions.push(bytes),
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let holding: Option<Vec<f32>> = match &args.holding {
        None => None,
        Some(path) => match read_ulaw(path, 10) {
            Ok(bytes) => {
                let envelope = loudness_envelope(&bytes);
                if envelope.len() < HOLDING_COMPARED + HOLDING_MAX_SHIFT {
                    eprintln!("{}: too short for a holding phrase", path.display());
                    return std::process::ExitCode::from(2);
                }
                Some(envelope)
            }
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    let (results_tx, results_rx) = mpsc::channel();
    for round in 0..args.repeat.clamp(1, 20) {
        let mut threads = Vec::new();
        for index in 0..args.calls {
            let index = round * args.calls + index;
            let questions = questions.clone();
            let holding = holding.clone();
            let target = args.target;
            let number = args.number.clone();
            let results = results_tx.clone();
            std::thread::sleep(Duration::from_millis(args.stagger_ms));
            threads.push(std::thread::spawn(move || {
                let result = match run_call(index, target, &number, &questions, holding.as_deref())
                {
                    Ok(result) => CallResult { index, ..result },
                    Err(error) => CallResult {
                        index,
                        error: Some(error),
                        ..CallResult::default()
                    },
                };
                let _ = results.send(result);
            }));
        }
        for thread in threads {
            let _ = thread.join();
        }
    }
    drop(results_tx);
    let mut latencies = Vec::new();
    let mut barge_ins = Vec::new();
    let mut failed = 0;
    let mut holding_phrases = 0;
    let mut results: Vec<CallResult> = results_rx.into_iter().collect();
    results.sort_by_key(|r| r.index);
    for result in results {
        if args.each {
            let each: Vec<String> = result
                .latencies
                .iter()
                .map(|l| l.as_millis().to_string())
                .collect();
            println!(
                "call {}: voice-to-voice ms {} (holding phrases {})",
                result.index,
                each.join(" "),
                result.holding_phrases
            );
        }
        if let Some(error) = &result.error {
            eprintln!("call failed: {error}");
            failed += 1;
        }
        holding_phrases += result.holding_phrases;
        latencies.extend(result.latencies);
        barge_ins.extend(result.barge_ins);
    }
    println!(
        "calls {}x{} failed {failed} | voice-to-voice n={} p50 {} p95 {} max {} | barge-in n={} p50 {} p95 {} max {} | holding phrases {}",
        args.repeat,
        args.calls,
        latencies.len(),
        ms(percentile(&mut latencies, 0.50)),
        ms(percentile(&mut latencies, 0.95)),
        ms(percentile(&mut latencies, 1.0)),
        barge_ins.len(),
        ms(percentile(&mut barge_ins, 0.50)),
        ms(percentile(&mut barge_ins, 0.95)),
        ms(percentile(&mut barge_ins, 1.0)),
        if holding.is_some() {
            holding_phrases.to_string()
        } else {
            "not checked".into()
        },
    );
    if failed > 0 || latencies.is_empty() {
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{} ms", d.as_millis()))
}

/// Nearest-rank percentile.
fn percentile(values: &mut [Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// What the caller is doing this tick.
enum Phase {
    /// Silent until the greeting has played and stopped.
    AwaitGreeting,
    /// Sending question `index` from frame `frame`.
    Asking { index: usize, frame: usize },
    /// Question sent; waiting for the answer's first audio.
    AwaitAnswer { index: usize },
    /// The answer is playing; the next question starts over it at `at`.
    Listening { next: usize, at: Instant },
    /// Everything asked: hang up at `at`.
    Closing { at: Instant },
}

fn run_call(
    index: usize,
    target: SocketAddr,
    number: &str,
    questions: &[Vec<u8>],
    holding: Option<&[f32]>,
) -> Result<CallResult, String> {
    let sip = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let rtp = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let sip_addr = sip.local_addr().map_err(|e| e.to_string())?;
    let rtp_port = rtp.local_addr().map_err(|e| e.to_string())?.port();
    let call_id = format!("latency-{index}-{}@127.0.0.1", std::process::id());
    let dialog = Dialog {
        target,
        local: sip_addr,
        call_id,
        number: number.to_string(),
        to_tag: String::new(),
    };
    sip.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let (dialog, remote_rtp) = dialog.invite(&sip, rtp_port)?;

    // Received packets are timestamped on their own thread, as they arrive.
    let (arrivals_tx, arrivals) = mpsc::channel::<(Instant, u16)>();
    let receiver = rtp.try_clone().map_err(|e| e.to_string())?;
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + CALL_LIMIT;
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1500];
        while Instant::now() < deadline {
            let Ok((length, _)) = receiver.recv_from(&mut buffer) else {
                continue;
            };
            let now = Instant::now();
            let Ok(packet) = RtpPacket::parse(&buffer[..length]) else {
                continue;
            };
            if packet.payload_type != 0 {
                continue;
            }
            let peak = packet
                .payload
                .iter()
                .map(|&b| g711::ulaw_to_linear(b).unsigned_abs())
                .max()
                .unwrap_or(0);
            if arrivals_tx.send((now, peak)).is_err() {
                return;
            }
        }
    });

    let last_voiced: Vec<usize> = questions
        .iter()
        .map(|q| {
            q.chunks(FRAME_SAMPLES)
                .rposition(|frame| frame_peak(frame) > VOICED_PEAK)
                .unwrap_or(0)
        })
        .collect();
    let first_voiced: Vec<usize> = questions
        .iter()
        .map(|q| {
            q.chunks(FRAME_SAMPLES)
                .position(|frame| frame_peak(frame) > VOICED_PEAK)
                .unwrap_or(0)
        })
        .collect();

    let mut result = CallResult::default();
    let mut onset = AnswerOnset::new(holding);
    let mut phase = Phase::AwaitGreeting;
    let mut heard_speech = false;
    let mut last_voiced_arrival: Option<Instant> = None;
    let mut speech_end: Option<Instant> = None;
    // Barge-in measurement: the onset, and the start of the bot's current silent run.
    let mut barge_onset: Option<Instant> = None;
    let mut silent_since: Option<Instant> = None;
    let mut sequence = 0u16;
    let mut timestamp = 0u32;
    let mut packet = [0u8; 12 + FRAME_SAMPLES];
    let silence = [0xFFu8; FRAME_SAMPLES];
    let start = Instant::now();
    let mut tick = 0u32;
    loop {
        let now = Instant::now();
        if now > deadline {
            return Err("call ran past its time limit".into());
        }
        while let Ok((at, peak)) = arrivals.try_recv() {
            let voiced = peak > VOICED_PEAK;
            if voiced {
                heard_speech = true;
                last_voiced_arrival = Some(at);
                silent_since = None;
            } else if silent_since.is_none() {
                silent_since = Some(at);
            }
            if let (Some(onset), Some(silent)) = (barge_onset, silent_since)
                && silent >= onset
                && at.duration_since(silent) >= SILENT_RUN
            {
                result.barge_ins.push(silent.duration_since(onset));
                barge_onset = None;
            }
            if let (Phase::AwaitAnswer { index }, Some(end)) = (&phase, speech_end)
                && at > end
                && let Some(first) = onset.hear(at, peak)
            {
                result.latencies.push(first.duration_since(end));
                result.holding_phrases += onset.holding_heard;
                onset = AnswerOnset::new(holding);
                speech_end = None;
                phase = if index + 1 < questions.len() {
                    Phase::Listening {
                        next: index + 1,
                        // From the answer's start, as without `--holding`.
                        at: first + BARGE_IN_AFTER,
                    }
                } else {
                    Phase::Closing {
                        at: first + Duration::from_secs(1),
                    }
                };
            }
        }
        let mut payload: &[u8] = &silence;
        match &mut phase {
            Phase::AwaitGreeting => {
                if heard_speech
                    && last_voiced_arrival.is_some_and(|t| now.duration_since(t) >= GREETING_GAP)
                {
                    phase = Phase::Asking { index: 0, frame: 0 };
                }
            }
            Phase::Listening { next, at } => {
                if now >= *at {
                    phase = Phase::Asking {
                        index: *next,
                        frame: 0,
                    };
                }
            }
            Phase::Closing { at } => {
                if now >= *at {
                    break;
                }
            }
            Phase::AwaitAnswer { .. } => {}
            Phase::Asking { .. } => {}
        }
        if let Phase::Asking { index, frame } = &mut phase {
            let question = &questions[*index];
            let from = *frame * FRAME_SAMPLES;
            if from < question.len() {
                payload = &question[from..(from + FRAME_SAMPLES).min(question.len())];
            }
            if *frame == first_voiced[*index] && *index > 0 {
                // Talking over the previous answer from this frame on.
                barge_onset = Some(Instant::now());
                silent_since = None;
            }
            if *frame == last_voiced[*index] {
                speech_end = Some(Instant::now() + FRAME);
            }
            *frame += 1;
            if *frame * FRAME_SAMPLES >= question.len() {
                phase = Phase::AwaitAnswer { index: *index };
            }
        }
        let header = RtpHeader {
            marker: tick == 0,
            payload_type: 0,
            sequence,
            timestamp,
            ssrc: 0x1A7E_0000 + index as u32,
        };
        let mut frame = [0xFFu8; FRAME_SAMPLES];
        frame[..payload.len()].copy_from_slice(payload);
        if let Some(length) = write_packet(&header, &frame, &mut packet) {
            let _ = rtp.send_to(&packet[..length], remote_rtp);
        }
        sequence = sequence.wrapping_add(1);
        timestamp = timestamp.wrapping_add(FRAME_SAMPLES as u32);
        tick += 1;
        let next = start + FRAME * tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    dialog.bye(&sip)?;
    Ok(result)
}

/// Where the answer starts in the replies after a question: the first voiced
/// packet, unless the reply it starts is the holding phrase.
struct AnswerOnset<'h> {
    holding: Option<&'h [f32]>,
    /// The first voiced packet of the reply being judged, and its loudness.
    start: Option<Instant>,
    envelope: Vec<f32>,
    /// Packets left of a holding phrase being skipped, and silent packets in
    /// a row since.
    skipping: Option<(usize, usize)>,
    holding_heard: u32,
}

impl<'h> AnswerOnset<'h> {
    fn new(holding: Option<&'h [f32]>) -> Self {
        AnswerOnset {
            holding,
            start: None,
            envelope: Vec::with_capacity(HOLDING_COMPARED),
            skipping: None,
            holding_heard: 0,
        }
    }

    /// One received packet; the answer's first packet time once known.
    fn hear(&mut self, at: Instant, peak: u16) -> Option<Instant> {
        let voiced = peak > VOICED_PEAK;
        if let Some((left, silent)) = self.skipping.as_mut() {
            *left = left.saturating_sub(1);
            *silent = if voiced { 0 } else { *silent + 1 };
            // The phrase is over once most of its length has gone by and
            // its closing silence has begun.
            if *left == 0 && *silent >= 3 {
                self.skipping = None;
            }
            return None;
        }
        let Some(start) = self.start else {
            if !voiced {
                return None;
            }
            if self.holding.is_none() {
                return Some(at);
            }
            self.start = Some(at);
            self.envelope.clear();
            self.envelope.push(log_peak(peak));
            return None;
        };
        self.envelope.push(log_peak(peak));
        if self.envelope.len() < HOLDING_COMPARED {
            return None;
        }
        let holding = self.holding?;
        if likeness(holding, &self.envelope) >= HOLDING_LIKENESS {
            self.holding_heard += 1;
            let rest = holding.len().saturating_sub(HOLDING_COMPARED) * 3 / 4;
            self.skipping = Some((rest, 0));
            self.start = None;
            return None;
        }
        Some(start)
    }
}

fn log_peak(peak: u16) -> f32 {
    f32::from(peak).ln_1p()
}

/// A raw 8 kHz µ-law file of at most `max_seconds`.
fn read_ulaw(path: &std::path::Path, max_seconds: usize) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() <= 8_000 * max_seconds => Ok(bytes),
        Ok(_) => Err(format!("{}: longer than {max_seconds} s", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Per-packet loudness from the first voiced packet on.
fn loudness_envelope(ulaw: &[u8]) -> Vec<f32> {
    ulaw.chunks_exact(FRAME_SAMPLES)
        .map(frame_peak)
        .skip_while(|&peak| peak <= VOICED_PEAK)
        .map(log_peak)
        .collect()
}

/// Best correlation of `reply`'s loudness with the phrase's, either shifted
/// by up to [`HOLDING_MAX_SHIFT`] packets.
fn likeness(phrase: &[f32], reply: &[f32]) -> f32 {
    let n = HOLDING_COMPARED;
    let mut best = f32::MIN;
    for shift in 0..=HOLDING_MAX_SHIFT {
        if let (Some(p), Some(r)) = (phrase.get(shift..shift + n), reply.get(..n)) {
            best = best.max(correlation(p, r));
        }
        if let (Some(p), Some(r)) = (phrase.get(..n), reply.get(shift..shift + n)) {
            best = best.max(correlation(p, r));
        }
    }
    best
}

fn correlation(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len()) as f32;
    if n == 0.0 {
        return 0.0;
    }
    let mean_a = a.iter().sum::<f32>() / n;
    let mean_b = b.iter().sum::<f32>() / n;
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - mean_a) * (y - mean_b);
        var_a += (x - mean_a) * (x - mean_a);
        var_b += (y - mean_b) * (y - mean_b);
    }
    cov / ((var_a * var_b).sqrt() + 1e-9)
}

fn frame_peak(frame: &[u8]) -> u16 {
    frame
        .iter()
        .map(|&b| g711::ulaw_to_linear(b).unsigned_abs())
        .max()
        .unwrap_or(0)
}

/// Just enough of a SIP user agent client for one call.
struct Dialog {
    target: SocketAddr,
    local: SocketAddr,
    call_id: String,
    number: String,
    to_tag: String,
}

impl Dialog {
    fn headers(&self, method: &str, cseq: u32, branch: &str) -> String {
        let to_tag = if self.to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.to_tag)
        };
        format!(
            "{method} sip:{number}@{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch}\r\n\
             From: <sip:latency@{local}>;tag=lat{cid_hash}\r\n\
             To: <sip:{number}@{target}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:latency@{local}>\r\n\
             Max-Forwards: 70\r\n",
            number = self.number,
            target = self.target,
            local = self.local,
            cid_hash = self.call_id.len(),
            call_id = self.call_id,
        )
    }

    /// INVITE → 200 → ACK; returns the dialog and the engine's RTP address.
    fn invite(mut self, sip: &UdpSocket, rtp_port: u16) -> Result<(Dialog, SocketAddr), String> {
        let sdp = format!(
            "v=0\r\no=latency 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        let branch = format!("inv{}", self.call_id.len() + rtp_port as usize);
        let request = format!(
            "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            self.headers("INVITE", 1, &branch),
            sdp.len()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buffer = [0u8; 4096];
        let mut last_send = None::<Instant>;
        let response = loop {
            if Instant::now() > deadline {
                return Err("no 200 to the INVITE".into());
            }
            if last_send.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                sip.send_to(request.as_bytes(), self.target)
                    .map_err(|e| e.to_string())?;
                last_send = Some(Instant::now());
            }
            let Ok((length, _)) = sip.recv_from(&mut buffer) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
            let code = text.split(' ').nth(1).unwrap_or("");
            if code == "200" {
                break text;
            }
            if code.starts_with(['4', '5', '6']) {
                return Err(format!(
                    "INVITE refused: {}",
                    text.lines().next().unwrap_or("")
                ));
            }
        };
        self.to_tag = header(&response, &["To", "t"])
            .and_then(|to| to.split(";tag=").nth(1))
            .map(|tag| tag.split(';').next().unwrap_or(tag).trim().to_string())
            .ok_or("200 without a To tag")?;
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        let ip = body
            .lines()
            .find_map(|l| l.strip_prefix("c=IN IP4 "))
            .ok_or("SDP answer without c=")?
            .trim();
        let port = body
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|rest| rest.split(' ').next())
            .ok_or("SDP answer without m=audio")?;
        let remote: SocketAddr = format!("{ip}:{port}")
            .parse()
            .map_err(|e| format!("SDP address: {e}"))?;
        let ack = format!(
            "{}Content-Length: 0\r\n\r\n",
            self.headers("ACK", 1, &format!("ack{}", rtp_port))
        );
        sip.send_to(ack.as_bytes(), self.target)
            .map_err(|e| e.to_string())?;
        Ok((self, remote))
    }

    fn bye(&self, sip: &UdpSocket) -> Result<(), String> {
        let bye = format!(
            "{}Content-Length: 0\r\n\r\n",
            self.headers("BYE", 2, &format!("bye{}", self.call_id.len()))
        );
        let mut buffer = [0u8; 4096];
        for _ in 0..4 {
            sip.send_to(bye.as_bytes(), self.target)
                .map_err(|e| e.to_string())?;
            if let Ok((length, _)) = sip.recv_from(&mut buffer)
                && String::from_utf8_lossy(&buffer[..length]).contains("CSeq: 2 BYE")
            {
                return Ok(());
            }
        }
        Err("no answer to the BYE".into())
    }
}

/// A header's value (by full or compact name) in a SIP message.
fn header<'m>(message: &'m str, names: &[&str]) -> Option<&'m str> {
    message.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        names
            .iter()
            .any(|n| name.trim().eq_ignore_ascii_case(n))
            .then(|| value.trim())
    })
}
