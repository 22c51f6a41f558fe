//! RTP fixed header (RFC 3550 §5.1): a zero-copy parser and an in-place writer.
//!
//! Hand-written rather than the `rtp` crate because the crate's `Packet::unmarshal` copies the
//! payload into `Bytes` and collects CSRCs and extensions into `Vec`s: at 50 packets/s per
//! direction per call and thousands of calls per core, that is several heap allocations per
//! packet for fields G.711 telephony never reads. Here a packet is a view over the receive
//! buffer and building one writes 12 bytes into a buffer the caller reuses.

use thiserror::Error;

/// Size of the fixed RTP header without CSRCs or extension.
pub const RTP_HEADER_LEN: usize = 12;

/// Why a datagram is not an RTP packet we can use. Garbage is counted, never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    #[error("datagram of {0} bytes is shorter than an RTP header")]
    TooShort(usize),
    #[error("RTP version {0} (expected 2)")]
    BadVersion(u8),
    #[error("CSRC list of {count} entries runs past the {len}-byte datagram")]
    CsrcOverrun { count: u8, len: usize },
    #[error("header extension runs past the end of the datagram")]
    ExtensionOverrun,
    #[error("padding length {padding} is invalid for a {available}-byte payload")]
    BadPadding { padding: u8, available: usize },
    #[error("payload type {0} is an RTCP packet type (72-76): RTCP on the RTP port")]
    RtcpOnRtpPort(u8),
}

/// A parsed view of one RTP packet; `payload` borrows from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Validates and splits a datagram. Never panics on any input.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, RtpError> {
        let len = datagram.len();
        if len < RTP_HEADER_LEN {
            return Err(RtpError::TooShort(len));
        }
        let first = datagram[0];
        let version = first >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = first & 0x20 != 0;
        let has_extension = first & 0x10 != 0;
        let csrc_count = first & 0x0F;
        let second = datagram[1];
        let payload_type = second & 0x7F;
        // With rtcp-mux, RTCP SR/RR/SDES/BYE/APP arrive here; their second byte is 200-204, which
        // masks to 72-76 (RFC 5761 §4). They must go to the RTCP parser, not the jitter buffer.
        if (72..=76).contains(&payload_type) {
            return Err(RtpError::RtcpOnRtpPort(payload_type));
        }
        let mut offset = RTP_HEADER_LEN + 4 * csrc_count as usize;
        if offset > len {
            return Err(RtpError::CsrcOverrun {
                count: csrc_count,
                len,
            });
        }
        if has_extension {
            if offset + 4 > len {
                return Err(RtpError::ExtensionOverrun);
            }
            let words = u16::from_be_bytes([datagram[offset + 2], datagram[offset + 3]]) as usize;
            offset += 4 + words * 4;
            if offset > len {
                return Err(RtpError::ExtensionOverrun);
            }
        }
        let mut end = len;
        if has_padding {
            let padding = datagram[len - 1];
            let available = len - offset;
            if padding == 0 || padding as usize > available {
                return Err(RtpError::BadPadding { padding, available });
            }
            end -= padding as usize;
        }
        Ok(RtpPacket {
            marker: second & 0x80 != 0,
            payload_type,
            sequence: u16::from_be_bytes([datagram[2], datagram[3]]),
            timestamp: u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]),
            ssrc: u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]),
            payload: &datagram[offset..end],
        })
    }
}

/// The fields of an outgoing header. Frontdoor never sends CSRCs, extensions or padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl RtpHeader {
    /// Writes the 12-byte header into `out[..12]`; returns `None` if `out` is too short.
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        let header = out.get_mut(..RTP_HEADER_LEN)?;
        header[0] = 0x80;
        header[1] = (self.payload_type & 0x7F) | if self.marker { 0x80 } else { 0 };
        header[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        header[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Some(RTP_HEADER_LEN)
    }
}

/// Builds a whole packet (header + payload) into `out`; returns its length, or `None` if it
/// does not fit.
pub fn write_packet(header: &RtpHeader, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let total = RTP_HEADER_LEN + payload.len();
    let buffer = out.get_mut(..total)?;
    header.write(buffer)?;
    buffer[RTP_HEADER_LEN..].copy_from_slice(payload);
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 8,
            sequence: 0xFFFF,
            timestamp: 0xDEAD_BEEF,
            ssrc: 0x1234_5678,
        }
    }

    #[test]
    fn write_then_parse_round_trips() {
        let mut buffer = [0u8; 64];
        let len = write_packet(&header(), &[1, 2, 3], &mut buffer).expect("fits");
        assert_eq!(len, 15);
        let packet = RtpPacket::parse(&buffer[..len]).expect("valid");
        assert!(packet.marker);
        assert_eq!(packet.payload_type, 8);
        assert_eq!(packet.sequence, 0xFFFF);
        assert_eq!(packet.timestamp, 0xDEAD_BEEF);
        assert_eq!(packet.ssrc, 0x1234_5678);
        assert_eq!(packet.payload, &[1, 2, 3]);
    }

    #[test]
    fn write_refuses_short_buffer() {
        let mut buffer = [0u8; 13];
        assert_eq!(write_packet(&header(), &[1, 2], &mut buffer), None);
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        let mut packet = vec![
            0x80 | 0x20 | 0x10 | 0x02,
            0x00,
            0,
            1,
            0,
            0,
            0,
            160,
            0,
            0,
            0,
            9,
        ];
        packet.extend_from_slice(&[0; 8]); // two CSRCs
        packet.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 1, 2, 3, 4]); // one-word extension
        packet.extend_from_slice(&[0xAA, 0xBB]); // payload
        packet.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let parsed = RtpPacket::parse(&packet).expect("valid");
        assert_eq!(parsed.payload, &[0xAA, 0xBB]);
        assert_eq!(parsed.sequence, 1);
        assert_eq!(parsed.timestamp, 160);
        assert_eq!(parsed.ssrc, 9);
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(RtpPacket::parse(&[]), Err(RtpError::TooShort(0)));
        assert_eq!(RtpPacket::parse(&[0x80; 11]), Err(RtpError::TooShort(11)));
        let mut v1 = [0u8; 12];
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::BadVersion(1)));
        let mut csrc = [0u8; 16];
        csrc[0] = 0x8F;
        assert!(matches!(
            RtpPacket::parse(&csrc),
            Err(RtpError::CsrcOverrun { count: 15, .. })
        ));
        let mut extension = [0u8; 16];
        extension[0] = 0x90;
        extension[14] = 0xFF; // claims 0xFF00+ words
        assert_eq!(
            RtpPacket::parse(&extension),
            Err(RtpError::ExtensionOverrun)
        );
        let mut short_extension = [0u8; 14];
        short_extension[0] = 0x90;
        assert_eq!(
            RtpPacket::parse(&short_extension),
            Err(RtpError::ExtensionOverrun)
        );
        let mut zero_padding = [0u8; 14];
        zero_padding[0] = 0xA0;
        assert!(matches!(
            RtpPacket::parse(&zero_padding),
            Err(RtpError::BadPadding { padding: 0, .. })
        ));
        let mut long_padding = [0u8; 14];
        long_padding[0] = 0xA0;
        long_padding[13] = 3;
        assert!(matches!(
            RtpPacket::parse(&long_padding),
            Err(RtpError::BadPadding { padding: 3, .. })
        ));
        let mut rtcp = [0u8; 12];
        rtcp[0] = 0x80;
        rtcp[1] = 200;
        assert_eq!(RtpPacket::parse(&rtcp), Err(RtpError::RtcpOnRtpPort(72)));
    }

    #[test]
    fn random_datagrams_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut buffer = [0u8; 64];
        for round in 0..20_000 {
            for byte in buffer.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            buffer[0] = (buffer[0] & 0x3F) | 0x80; // mostly version 2 to reach the deep checks
            let len = round % 64;
            let _ = RtpPacket::parse(&buffer[..len]);
        }
    }
}
