//! SDP offer/answer (RFC 3264 over RFC 4566) for one G.711 audio stream plus RFC 4733 DTMF.
//!
//! Hand-written rather than the `sdp` crate: that parser is strict about line order and
//! mandatory lines (it fails on a missing `s=` or `t=`, on unknown line types and on lines
//! in the "wrong" section), while trunks and softphones in the field send exactly such SDP:
//! bare LF endings, no `s=`, `c=` only at media level, attributes before `c=`. A telephony
//! answerer needs only a handful of fields, so a tolerant line scanner that ignores what it
//! does not understand, and rejects only what makes the offer unusable, copes best.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

/// Offers beyond this size are refused outright: real telephony SDP is well under 4 KB.
const MAX_SDP_BYTES: usize = 64 * 1024;
/// Bounds the per-offer bookkeeping; no legitimate call offers more streams than this.
const MAX_MEDIA_SECTIONS: usize = 16;
/// Payload type Frontdoor uses for telephone-event in its own offers.
const OFFER_DTMF_PAYLOAD_TYPE: u8 = 101;

/// The G.711 codecs Frontdoor speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    /// The RFC 3551 static payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    pub fn from_static_payload_type(payload_type: u8) -> Option<Codec> {
        match payload_type {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    fn from_encoding_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }
}

/// What this side can do, in preference order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaCapabilities {
    pub codecs: Vec<Codec>,
    pub telephone_event: bool,
    pub ptime_ms: u32,
}

impl Default for MediaCapabilities {
    fn default() -> Self {
        MediaCapabilities {
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
        }
    }
}

/// A stream direction (RFC 3264 §5.1 / §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The answerer's direction for an offer in this direction.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_parts(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn parse(attribute: &str) -> Option<Direction> {
        match attribute {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// One `m=` section of the offer, kept so the answer can mirror it line for line
/// (RFC 3264 §6: the answer has exactly as many `m=` lines as the offer, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedStream {
    pub media: String,
    pub proto: String,
    /// The offer's format list, echoed on a rejected (port 0) line.
    pub formats: String,
    /// Whether this is the audio stream the call uses.
    pub accepted: bool,
}

/// The outcome of negotiation: everything the media stream needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub remote_rtp: SocketAddr,
    pub remote_rtcp: SocketAddr,
    pub codec: Codec,
    pub payload_type: u8,
    pub dtmf_payload_type: Option<u8>,
    pub ptime_ms: u32,
    /// Our direction, already reversed from the offer's and with `c=0.0.0.0` hold applied.
    pub direction: Direction,
    pub rtcp_mux: bool,
    /// The offer's `m=` lines, for [`build_answer`]. Empty means "a single audio stream"
    /// (e.g. a hand-built `Negotiated` in tests or outgoing calls).
    pub offered_streams: Vec<OfferedStream>,
}

/// Why an offer cannot be answered; maps onto the SIP response.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// Not parseable as SDP: answer 400 Bad Request.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// Parseable, but no audio stream we can use: answer 488 Not Acceptable Here.
    #[error("no usable media: {0}")]
    NoUsableMedia(String),
}

impl SdpError {
    /// The SIP status code this error should produce.
    pub fn sip_status(&self) -> u16 {
        match self {
            SdpError::Malformed(_) => 400,
            SdpError::NoUsableMedia(_) => 488,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    Address(IpAddr),
    /// A hostname or other address type we cannot use without resolving.
    Unusable,
}

#[derive(Debug, Default)]
struct MediaSection<'a> {
    media: &'a str,
    port: u16,
    proto: &'a str,
    formats: &'a str,
    connection: Option<Connection>,
    direction: Option<Direction>,
    rtpmaps: Vec<(u8, &'a str, u32)>,
    rtcp: Option<(u16, Option<IpAddr>)>,
    rtcp_mux: bool,
}

#[derive(Debug, Default)]
struct SessionDescription<'a> {
    connection: Option<Connection>,
    direction: Option<Direction>,
    media: Vec<MediaSection<'a>>,
}

fn malformed(message: impl Into<String>) -> SdpError {
    SdpError::Malformed(message.into())
}

fn parse_connection(value: &str) -> Result<Connection, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let (Some(net), Some(addr_type), Some(address)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(format!("bad c= line {value:?}")));
    };
    if !net.eq_ignore_ascii_case("IN") {
        return Err(malformed(format!("c= network type {net:?}")));
    }
    // Multicast addresses carry "/ttl[/count]"; the address part is what matters.
    let address = address.split('/').next().unwrap_or(address);
    let parsed: Option<IpAddr> = address.parse().ok();
    match (addr_type.to_ascii_uppercase().as_str(), parsed) {
        ("IP4", Some(ip @ IpAddr::V4(_))) | ("IP6", Some(ip @ IpAddr::V6(_))) => {
            Ok(Connection::Address(ip))
        }
        ("IP4" | "IP6", _) => Ok(Connection::Unusable),
        _ => Err(malformed(format!("c= address type {addr_type:?}"))),
    }
}

fn parse_media_line(value: &str) -> Result<MediaSection<'_>, SdpError> {
    let mut parts = value.splitn(4, ' ').map(str::trim);
    let (Some(media), Some(port), Some(proto)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed(format!("bad m= line {value:?}")));
    };
    let formats = parts.next().unwrap_or("").trim();
    // "port/count" (RFC 4566 §5.14) is only meaningful for layered multicast; take the port.
    let port_text = port.split('/').next().unwrap_or(port);
    let port: u16 = port_text
        .parse()
        .map_err(|_| malformed(format!("bad m= port {port:?}")))?;
    Ok(MediaSection {
        media,
        port,
        proto,
        formats,
        ..MediaSection::default()
    })
}

fn parse_rtpmap(value: &str) -> Option<(u8, &str, u32)> {
    let (payload_type, encoding) = value.split_once(' ')?;
    let payload_type: u8 = payload_type.trim().parse().ok()?;
    let mut encoding_parts = encoding.trim().split('/');
    let name = encoding_parts.next()?;
    let rate: u32 = encoding_parts.next()?.trim().parse().ok()?;
    Some((payload_type, name, rate))
}

fn parse_rtcp_attribute(value: &str) -> Option<(u16, Option<IpAddr>)> {
    let mut parts = value.split_ascii_whitespace();
    let port: u16 = parts.next()?.parse().ok()?;
    let address = match (parts.next(), parts.next(), parts.next()) {
        (Some(_net), Some(_addr_type), Some(address)) => address.parse().ok(),
        _ => None,
    };
    Some((port, address))
}

fn parse(offer: &str) -> Result<SessionDescription<'_>, SdpError> {
    if offer.len() > MAX_SDP_BYTES {
        return Err(malformed(format!(
            "SDP of {} bytes is too large",
            offer.len()
        )));
    }
    let mut description = SessionDescription::default();
    let mut saw_any_line = false;
    for raw_line in offer.split('\n') {
        let line = raw_line.trim_end_matches('\r').trim();
        if line.is_empty() {
            continue;
        }
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_alphabetic() {
            return Err(malformed(format!("line {line:?} is not <type>=<value>")));
        }
        saw_any_line = true;
        let value = line[2..].trim();
        match bytes[0] {
            b'v' if value != "0" => {
                return Err(malformed(format!("unsupported SDP version {value:?}")));
            }
            b'm' => {
                if description.media.len() >= MAX_MEDIA_SECTIONS {
                    return Err(malformed("too many m= sections"));
                }
                description.media.push(parse_media_line(value)?);
            }
            b'c' => {
                let connection = parse_connection(value)?;
                match description.media.last_mut() {
                    Some(section) => section.connection = Some(connection),
                    None => description.connection = Some(connection),
                }
            }
            b'a' => {
                let (name, attribute_value) = value.split_once(':').unwrap_or((value, ""));
                let section = description.media.last_mut();
                if let Some(direction) = Direction::parse(name) {
                    match section {
                        Some(section) => section.direction = Some(direction),
                        None => description.direction = Some(direction),
                    }
                    continue;
                }
                let Some(section) = section else { continue };
                match name {
                    "rtpmap" => {
                        // An unparseable rtpmap only disables that format; it is not fatal.
                        if let Some(rtpmap) = parse_rtpmap(attribute_value)
                            && section.rtpmaps.len() < 64
                        {
                            section.rtpmaps.push(rtpmap);
                        }
                    }
                    "rtcp" => section.rtcp = parse_rtcp_attribute(attribute_value),
                    "rtcp-mux" => section.rtcp_mux = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !saw_any_line {
        return Err(malformed("empty SDP"));
    }
    Ok(description)
}

fn codec_for_format(section: &MediaSection<'_>, payload_type: u8) -> Option<Codec> {
    match section
        .rtpmaps
        .iter()
        .find(|(pt, _, _)| *pt == payload_type)
    {
        Some((_, name, rate)) if *rate == 8000 => Codec::from_encoding_name(name),
        Some(_) => None,
        None => Codec::from_static_payload_type(payload_type),
    }
}

fn section_payload_types<'a>(section: &'a MediaSection<'_>) -> impl Iterator<Item = u8> + 'a {
    section
        .formats
        .split_ascii_whitespace()
        .filter_map(|format| format.parse::<u8>().ok())
}

/// Picks the codec: ours in preference order, among what the section offers.
fn choose_codec(section: &MediaSection<'_>, caps: &MediaCapabilities) -> Option<(Codec, u8)> {
    caps.codecs.iter().find_map(|wanted| {
        section_payload_types(section)
            .find(|&pt| codec_for_format(section, pt) == Some(*wanted))
            .map(|pt| (*wanted, pt))
    })
}

fn choose_dtmf(section: &MediaSection<'_>) -> Option<u8> {
    section_payload_types(section).find(|&pt| {
        section.rtpmaps.iter().any(|(map_pt, name, rate)| {
            *map_pt == pt && *rate == 8000 && name.eq_ignore_ascii_case("telephone-event")
        })
    })
}

fn is_rtp_avp(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("RTP/AVP") || proto.eq_ignore_ascii_case("RTP/AVPF")
}

/// Negotiates an incoming offer (INVITE or re-INVITE) against our capabilities.
pub fn negotiate(offer: &str, caps: &MediaCapabilities) -> Result<Negotiated, SdpError> {
    let description = parse(offer)?;
    if description.media.is_empty() {
        return Err(SdpError::NoUsableMedia("offer has no m= line".into()));
    }
    let mut chosen: Option<(usize, Codec, u8, IpAddr)> = None;
    let mut reasons: Vec<String> = Vec::new();
    for (index, section) in description.media.iter().enumerate() {
        if chosen.is_some() {
            break;
        }
        if section.media != "audio" {
            continue;
        }
        if section.port == 0 {
            reasons.push("audio stream disabled (port 0)".into());
            continue;
        }
        if !is_rtp_avp(section.proto) {
            reasons.push(format!("unsupported transport {}", section.proto));
            continue;
        }
        let Some((codec, payload_type)) = choose_codec(section, caps) else {
            reasons.push(format!("no common codec in {:?}", section.formats));
            continue;
        };
        match section.connection.or(description.connection) {
            Some(Connection::Address(ip)) => chosen = Some((index, codec, payload_type, ip)),
            Some(Connection::Unusable) => {
                reasons.push("c= address is not an IP literal".into());
            }
            None => return Err(malformed("audio stream has no c= line")),
        }
    }
    let Some((chosen_index, codec, payload_type, remote_ip)) = chosen else {
        if reasons.is_empty() {
            reasons.push("no audio stream offered".into());
        }
        return Err(SdpError::NoUsableMedia(reasons.join("; ")));
    };
    let section = &description.media[chosen_index];

    let offered_direction = section
        .direction
        .or(description.direction)
        .unwrap_or(Direction::SendRecv);
    // RFC 2543-style hold: c=0.0.0.0 means "do not send to me", whatever the attribute says.
    let offered_direction = if remote_ip.is_unspecified() {
        Direction::from_parts(offered_direction.sends(), false)
    } else {
        offered_direction
    };

    let remote_rtp = SocketAddr::new(remote_ip, section.port);
    let rtcp_mux = section.rtcp_mux;
    let remote_rtcp = if rtcp_mux {
        remote_rtp
    } else {
        match section.rtcp {
            Some((port, address)) => SocketAddr::new(address.unwrap_or(remote_ip), port),
            None => SocketAddr::new(remote_ip, section.port.saturating_add(1)),
        }
    };
    let dtmf_payload_type = if caps.telephone_event {
        choose_dtmf(section)
    } else {
        None
    };

    let offered_streams = description
        .media
        .iter()
        .enumerate()
        .map(|(index, section)| OfferedStream {
            media: section.media.to_string(),
            proto: section.proto.to_string(),
            formats: section.formats.to_string(),
            accepted: index == chosen_index,
        })
        .collect();

    Ok(Negotiated {
        remote_rtp,
        remote_rtcp,
        codec,
        payload_type,
        dtmf_payload_type,
        // The shell paces 20 ms frames; the offer's a=ptime is the peer's receive preference
        // and every G.711 endpoint we have met accepts 20 ms, which we state in the answer.
        ptime_ms: caps.ptime_ms,
        direction: offered_direction.reversed(),
        rtcp_mux,
        offered_streams,
    })
}

fn write_origin_and_session(sdp: &mut String, local_ip: IpAddr, session_id: u64, version: u64) {
    let addr_type = if local_ip.is_ipv4() { "IP4" } else { "IP6" };
    let _ = write!(
        sdp,
        "v=0\r\no=Frontdoor {session_id} {version} IN {addr_type} {local_ip}\r\ns=Frontdoor\r\n\
         c=IN {addr_type} {local_ip}\r\nt=0 0\r\n"
    );
}

/// The answer's or offer's audio `m=` section.
struct AudioSection<'a> {
    port: u16,
    proto: &'a str,
    codecs: &'a [(Codec, u8)],
    dtmf_payload_type: Option<u8>,
    ptime_ms: u32,
    direction: Direction,
    rtcp_mux: bool,
}

impl AudioSection<'_> {
    fn write(&self, sdp: &mut String) {
        let _ = write!(sdp, "m=audio {} {}", self.port, self.proto);
        for (_, payload_type) in self.codecs {
            let _ = write!(sdp, " {payload_type}");
        }
        if let Some(dtmf) = self.dtmf_payload_type {
            let _ = write!(sdp, " {dtmf}");
        }
        sdp.push_str("\r\n");
        for (codec, payload_type) in self.codecs {
            let _ = write!(
                sdp,
                "a=rtpmap:{payload_type} {}/8000\r\n",
                codec.encoding_name()
            );
        }
        if let Some(dtmf) = self.dtmf_payload_type {
            let _ = write!(
                sdp,
                "a=rtpmap:{dtmf} telephone-event/8000\r\na=fmtp:{dtmf} 0-16\r\n"
            );
        }
        let _ = write!(sdp, "a=ptime:{}\r\n", self.ptime_ms);
        if self.rtcp_mux {
            sdp.push_str("a=rtcp-mux\r\n");
        }
        let _ = write!(sdp, "a={}\r\n", self.direction.attribute());
    }
}

/// Builds the answer for a negotiated offer: the agreed codec and DTMF type only, and every
/// other offered stream declined with port 0.
pub fn build_answer(
    n: &Negotiated,
    local_ip: IpAddr,
    local_rtp_port: u16,
    session_id: u64,
    version: u64,
) -> String {
    let mut sdp = String::with_capacity(512);
    write_origin_and_session(&mut sdp, local_ip, session_id, version);
    let codecs = [(n.codec, n.payload_type)];
    let mut audio = AudioSection {
        port: local_rtp_port,
        proto: "RTP/AVP",
        codecs: &codecs,
        dtmf_payload_type: n.dtmf_payload_type,
        ptime_ms: n.ptime_ms,
        direction: n.direction,
        rtcp_mux: n.rtcp_mux,
    };
    if n.offered_streams.is_empty() {
        audio.write(&mut sdp);
        return sdp;
    }
    for stream in &n.offered_streams {
        if stream.accepted {
            audio.proto = &stream.proto;
            audio.write(&mut sdp);
        } else {
            let formats = if stream.formats.is_empty() {
                "0"
            } else {
                &stream.formats
            };
            let _ = write!(sdp, "m={} 0 {} {}\r\n", stream.media, stream.proto, formats);
        }
    }
    sdp
}

/// Reads the answer to an offer made with [`build_offer`] from `caps`
/// (an outgoing call's 200 OK, or the ACK after a late offer or an
/// offerless re-INVITE). The answer keeps the offer's single audio stream
/// (RFC 3264 6) and names what the far end will receive, which is what we
/// send.
pub fn accept_answer(answer: &str, caps: &MediaCapabilities) -> Result<Negotiated, SdpError> {
    let negotiated = negotiate(answer, caps)?;
    if negotiated.offered_streams.len() > 1 {
        return Err(SdpError::NoUsableMedia(format!(
            "answer has {} m= lines for our one",
            negotiated.offered_streams.len()
        )));
    }
    Ok(negotiated)
}

/// Builds an offer for an outgoing call: all our codecs in preference order, plus
/// telephone-event on payload type 101 if enabled.
pub fn build_offer(
    caps: &MediaCapabilities,
    local_ip: IpAddr,
    local_rtp_port: u16,
    session_id: u64,
    version: u64,
) -> String {
    let mut sdp = String::with_capacity(512);
    write_origin_and_session(&mut sdp, local_ip, session_id, version);
    let codecs: Vec<(Codec, u8)> = caps
        .codecs
        .iter()
        .map(|codec| (*codec, codec.payload_type()))
        .collect();
    AudioSection {
        port: local_rtp_port,
        proto: "RTP/AVP",
        codecs: &codecs,
        dtmf_payload_type: caps.telephone_event.then_some(OFFER_DTMF_PAYLOAD_TYPE),
        ptime_ms: caps.ptime_ms,
        direction: Direction::SendRecv,
        rtcp_mux: false,
    }
    .write(&mut sdp);
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_offer_lists_every_codec_and_reads_the_answer() {
        let offer = build_offer(&caps(), local(), 20000, 7, 1);
        assert!(
            offer.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"),
            "{offer}"
        );
        assert!(
            offer.contains("a=rtpmap:101 telephone-event/8000"),
            "{offer}"
        );
        let answer = "v=0\r\no=trunk 1 1 IN IP4 198.51.100.7\r\ns=-\r\n\
            c=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 101\r\n\
            a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
        let agreed = accept_answer(answer, &caps()).expect("usable answer");
        assert_eq!(agreed.codec, Codec::Pcma);
        assert_eq!(agreed.dtmf_payload_type, Some(101));
        assert_eq!(
            agreed.remote_rtp,
            "198.51.100.7:4000".parse().expect("addr")
        );
        assert_eq!(agreed.direction, Direction::SendRecv);
    }

    #[test]
    fn answers_we_cannot_use_are_refused() {
        let g729 = "v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n\
            t=0 0\r\nm=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        assert!(matches!(
            accept_answer(g729, &caps()),
            Err(SdpError::NoUsableMedia(_))
        ));
        let rejected = "v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n\
            t=0 0\r\nm=audio 0 RTP/AVP 0\r\n";
        assert!(matches!(
            accept_answer(rejected, &caps()),
            Err(SdpError::NoUsableMedia(_))
        ));
        let two = "v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n\
            t=0 0\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\n";
        assert!(matches!(
            accept_answer(two, &caps()),
            Err(SdpError::NoUsableMedia(_))
        ));
        assert!(matches!(
            accept_answer("garbage", &caps()),
            Err(SdpError::Malformed(_))
        ));
    }

    fn caps() -> MediaCapabilities {
        MediaCapabilities::default()
    }

    fn local() -> IpAddr {
        "192.0.2.10".parse().expect("ip")
    }

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.1.1\r\n\
        s=-\r\nc=IN IP4 127.0.1.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n\
        a=rtpmap:0 PCMU/8000\r\n";

    const BARESIP_OFFER: &str = "v=0\r\no=- 1430476581 3046597207 IN IP4 10.0.0.5\r\n\
        s=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\na=tool:baresip 3.10.1\r\n\
        m=audio 10128 RTP/AVP 96 97 9 0 8 101\r\nb=AS:128\r\na=rtpmap:96 opus/48000/2\r\n\
        a=fmtp:96 stereo=1;sprop-stereo=1\r\na=rtpmap:97 L16/48000/2\r\na=rtpmap:9 G722/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\na=rtcp-rsize\r\na=sendrecv\r\na=label:1\r\na=ssrc:2398201 cname:x\r\n\
        a=ptime:20\r\n";

    const LINPHONE_OFFER: &str = "v=0\r\no=alice 2310 1157 IN IP4 192.168.1.20\r\n\
        s=Talk\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n\
        a=ice-pwd:abc\r\na=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
        m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100\r\na=rtpmap:96 opus/48000/2\r\n\
        a=fmtp:96 useinbandfec=1\r\na=rtpmap:97 speex/16000\r\na=rtpmap:98 speex/8000\r\n\
        a=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=yes\r\na=rtpmap:101 telephone-event/48000\r\n\
        a=rtpmap:99 telephone-event/16000\r\na=rtpmap:100 telephone-event/8000\r\n\
        a=rtcp:7079\r\na=rtcp-fb:* trr-int 1000\r\n\
        m=video 9078 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:* ccm fir\r\n";

    const ZOIPER_LIKE_OFFER: &str = "v=0\no=Z 0 0 IN IP4 172.16.0.9\ns=Z\nc=IN IP4 172.16.0.9\n\
        t=0 0\nm=audio 8000 RTP/AVP 8 0 3 110 101\na=rtpmap:110 speex/8000\n\
        a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16\na=sendrecv\n";

    #[test]
    fn sipp_offer_without_telephone_event() {
        let n = negotiate(SIPP_OFFER, &caps()).expect("usable");
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.payload_type, 0);
        assert_eq!(n.dtmf_payload_type, None);
        assert_eq!(n.remote_rtp, "127.0.1.1:6000".parse().expect("addr"));
        assert_eq!(n.remote_rtcp, "127.0.1.1:6001".parse().expect("addr"));
        assert_eq!(n.direction, Direction::SendRecv);
        assert!(!n.rtcp_mux);
    }

    #[test]
    fn baresip_offer_picks_our_preferred_g711_and_dtmf() {
        let n = negotiate(BARESIP_OFFER, &caps()).expect("usable");
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.dtmf_payload_type, Some(101));
        let pcma_first = MediaCapabilities {
            codecs: vec![Codec::Pcma, Codec::Pcmu],
            ..caps()
        };
        let n = negotiate(BARESIP_OFFER, &pcma_first).expect("usable");
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
    }

    #[test]
    fn linphone_offer_rejects_video_and_uses_8k_telephone_event_and_rtcp_port() {
        let n = negotiate(LINPHONE_OFFER, &caps()).expect("usable");
        assert_eq!(n.dtmf_payload_type, Some(100));
        assert_eq!(n.remote_rtcp, "192.168.1.20:7079".parse().expect("addr"));
        let answer = build_answer(&n, local(), 20000, 7, 8);
        let media_lines: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            media_lines,
            vec!["m=audio 20000 RTP/AVP 0 100", "m=video 0 RTP/AVP 96"]
        );
        assert!(answer.contains("a=rtpmap:100 telephone-event/8000\r\n"));
        assert!(answer.contains("a=fmtp:100 0-16\r\n"));
        assert!(!answer.contains("opus"));
    }

    #[test]
    fn zoiper_like_bare_lf_offer_without_rtpmap_for_static_types() {
        let n = negotiate(ZOIPER_LIKE_OFFER, &caps()).expect("usable");
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.dtmf_payload_type, Some(101));
        assert_eq!(n.remote_rtp, "172.16.0.9:8000".parse().expect("addr"));
    }

    #[test]
    fn missing_session_name_and_media_level_connection_are_fine() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n\
            c=IN IP4 10.9.9.9\r\na=ptime:30\r\na=maxptime:40\r\n";
        let n = negotiate(offer, &caps()).expect("usable");
        assert_eq!(n.remote_rtp, "10.9.9.9:4000".parse().expect("addr"));
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.ptime_ms, 20);
    }

    #[test]
    fn hold_offers_set_our_direction() {
        let base = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n";
        let media = "m=audio 4000 RTP/AVP 0\r\n";
        let cases = [
            ("a=sendonly\r\n", "", Direction::RecvOnly),
            ("", "a=sendonly\r\n", Direction::RecvOnly),
            ("", "a=recvonly\r\n", Direction::SendOnly),
            ("a=inactive\r\n", "", Direction::Inactive),
            ("a=sendonly\r\n", "a=sendrecv\r\n", Direction::SendRecv),
        ];
        for (session_attr, media_attr, expected) in cases {
            let offer = format!("{base}{session_attr}{media}{media_attr}");
            let n = negotiate(&offer, &caps()).expect("usable");
            assert_eq!(n.direction, expected, "{session_attr:?} {media_attr:?}");
            let answer = build_answer(&n, local(), 30000, 1, 1);
            assert!(answer.contains(&format!("a={}\r\n", expected.attribute())));
        }
        let old_hold = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
            m=audio 4000 RTP/AVP 0\r\n";
        let n = negotiate(old_hold, &caps()).expect("usable");
        assert_eq!(n.direction, Direction::RecvOnly);
        assert!(!n.direction.sends());
    }

    #[test]
    fn rtcp_mux_points_rtcp_at_the_rtp_address() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
            m=audio 5004 RTP/AVPF 0\r\na=rtcp:5005\r\na=rtcp-mux\r\n";
        let n = negotiate(offer, &caps()).expect("usable");
        assert!(n.rtcp_mux);
        assert_eq!(n.remote_rtcp, n.remote_rtp);
        let answer = build_answer(&n, local(), 40000, 1, 1);
        assert!(answer.contains("m=audio 40000 RTP/AVPF 0\r\n"));
        assert!(answer.contains("a=rtcp-mux\r\n"));
    }

    #[test]
    fn ipv6_offer() {
        let offer = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\n\
            t=0 0\r\nm=audio 5004 RTP/AVP 0\r\n";
        let n = negotiate(offer, &caps()).expect("usable");
        assert_eq!(n.remote_rtp, "[2001:db8::1]:5004".parse().expect("addr"));
    }

    #[test]
    fn unusable_offers_map_to_488() {
        let no_common = "v=0\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18 9\r\n\
            a=rtpmap:18 G729/8000\r\n";
        let srtp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/SAVP 0\r\n";
        let video_only = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 4000 RTP/AVP 96\r\n";
        let disabled = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n";
        let no_media = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n";
        let hostname = "v=0\r\nc=IN IP4 pbx.example.org\r\nm=audio 4000 RTP/AVP 0\r\n";
        let pcmu_at_16k = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n\
            a=rtpmap:0 PCMU/16000\r\n";
        for offer in [
            no_common,
            srtp,
            video_only,
            disabled,
            no_media,
            hostname,
            pcmu_at_16k,
        ] {
            let error = negotiate(offer, &caps()).expect_err(offer);
            assert!(
                matches!(error, SdpError::NoUsableMedia(_)),
                "{offer}: {error}"
            );
            assert_eq!(error.sip_status(), 488);
        }
    }

    #[test]
    fn malformed_offers_map_to_400() {
        let oversized = "a".repeat(MAX_SDP_BYTES + 1);
        let cases = [
            "",
            "\r\n\r\n",
            "hello world",
            "<html></html>",
            "v=1\r\nm=audio 4000 RTP/AVP 0\r\n",
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio port RTP/AVP 0\r\n",
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 99999 RTP/AVP 0\r\n",
            "v=0\r\nc=IN\r\nm=audio 4000 RTP/AVP 0\r\n",
            "v=0\r\nm=audio 4000 RTP/AVP 0\r\n",
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio\r\n",
            oversized.as_str(),
        ];
        for offer in cases {
            let error = negotiate(offer, &caps()).expect_err(offer);
            assert!(
                matches!(error, SdpError::Malformed(_)),
                "{offer:.40}: {error}"
            );
            assert_eq!(error.sip_status(), 400);
        }
    }

    #[test]
    fn telephone_event_is_not_negotiated_when_disabled() {
        let no_dtmf = MediaCapabilities {
            telephone_event: false,
            ..caps()
        };
        let n = negotiate(BARESIP_OFFER, &no_dtmf).expect("usable");
        assert_eq!(n.dtmf_payload_type, None);
        let answer = build_answer(&n, local(), 20000, 1, 1);
        assert!(!answer.contains("telephone-event"));
    }

    #[test]
    fn second_audio_stream_is_declined() {
        let offer =
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\n";
        let n = negotiate(offer, &caps()).expect("usable");
        let answer = build_answer(&n, local(), 20000, 1, 1);
        let media_lines: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            media_lines,
            vec!["m=audio 20000 RTP/AVP 0", "m=audio 0 RTP/AVP 0"]
        );
    }

    #[test]
    fn our_offer_negotiates_against_our_own_capabilities() {
        let offer = build_offer(&caps(), local(), 22000, 42, 1);
        assert!(offer.starts_with("v=0\r\no=Frontdoor 42 1 IN IP4 192.0.2.10\r\n"));
        assert!(offer.contains("m=audio 22000 RTP/AVP 0 8 101\r\n"));
        let n = negotiate(&offer, &caps()).expect("usable");
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.dtmf_payload_type, Some(101));
        assert_eq!(n.remote_rtp, "192.0.2.10:22000".parse().expect("addr"));
    }

    #[test]
    fn answer_round_trips_through_negotiate() {
        let n = negotiate(ZOIPER_LIKE_OFFER, &caps()).expect("usable");
        let answer = build_answer(&n, local(), 20002, 9, 3);
        let back = negotiate(&answer, &caps()).expect("answer is valid SDP");
        assert_eq!(back.codec, n.codec);
        assert_eq!(back.dtmf_payload_type, n.dtmf_payload_type);
        assert_eq!(back.remote_rtp, "192.0.2.10:20002".parse().expect("addr"));
    }
}
