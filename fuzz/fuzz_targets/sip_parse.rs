//! Every byte string must parse to a message or a typed error, never panic,
//! both as a UDP datagram and when split at an arbitrary point on a TCP stream.
#![no_main]

use frontdoor::sip::parse::{Frame, StreamFramer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = frontdoor::sip::parse_message(data) {
        // The error paths build responses from half-parsed input: exercise them too.
        let _ = error.reason_phrase();
        let _ = error.call_id();
        let _ = error.bad_request("fuzz");
    }

    // Stream framing: feed the input in two chunks, split where its first byte says.
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut framer = StreamFramer::new();
    for chunk in [&data[..split], &data[split..]] {
        if framer.push(chunk).is_err() {
            return;
        }
        // Bounded: each frame consumes at least one byte, so this ends.
        for _ in 0..=data.len() {
            match framer.next_frame() {
                Ok(Some(Frame::Message(message))) => {
                    let _ = frontdoor::sip::parse_message(&message);
                }
                Ok(Some(Frame::KeepAlivePing)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
});
