//! Datagrams arriving on an RTP/RTCP port come from anyone: the RTP and RTCP
//! parsers must reject garbage with an error, never panic, and a parsed
//! packet's payload must lie inside the datagram.
#![no_main]

use frontdoor::media::rtcp::parse_rtcp;
use frontdoor::media::rtp::RtpPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = RtpPacket::parse(data) {
        assert!(packet.payload.len() <= data.len().saturating_sub(12));
        assert!(packet.payload_type < 128);
    }
    let _ = parse_rtcp(data, 0x1234_5678);
});
