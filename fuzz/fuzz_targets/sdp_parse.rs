//! Any SDP offer must negotiate or fail with a typed error (which maps to a
//! SIP status), never panic; a successful negotiation must yield an answer.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use frontdoor::media::sdp::{MediaCapabilities, build_answer, negotiate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = std::str::from_utf8(data) else {
        return;
    };
    match negotiate(offer, &MediaCapabilities::default()) {
        Ok(negotiated) => {
            let answer = build_answer(&negotiated, IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000, 1, 1);
            assert!(answer.starts_with("v=0"), "answer is not SDP: {answer:?}");
        }
        Err(error) => {
            let status = error.sip_status();
            assert!((400..700).contains(&status), "SDP error mapped to {status}");
        }
    }
});
