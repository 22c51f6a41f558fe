//! SIP core benchmarks: parsing a typical INVITE, and a whole UAS call
//! (INVITE → 100/200 → ACK → BYE → 200) through the sans-IO user agent,
//! without sockets. Throughput is reported in calls per second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use frontdoor::sip::parse_message;
use frontdoor::sip::peer::Peer;
use frontdoor::sip::ua::{SipEvent, UaConfig, UserAgent};

const INVITE: &str = "INVITE sip:1000@192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@192.0.2.10>;tag=1928301774\r\n\
To: <sip:1000@192.0.2.1>\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5062>\r\n\
User-Agent: SIPp\r\n\
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 129\r\n\
\r\n\
v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

fn parse_invite(c: &mut Criterion) {
    let mut group = c.benchmark_group("sip_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("invite", |b| {
        b.iter(|| parse_message(black_box(INVITE.as_bytes())).is_ok())
    });
    group.finish();
}

fn to_tag(payload: &[u8]) -> String {
    let text = std::str::from_utf8(payload).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .unwrap_or_default()
        .to_owned()
}

fn in_dialog(method: &str, call_id: &str, tag: &str, seq: u32, branch: u64) -> String {
    format!(
        "{method} sip:frontdoor@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{branch};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@192.0.2.10>;tag=1928301774\r\n\
To: <sip:1000@192.0.2.1>;tag={tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {seq} {method}\r\n\
Content-Length: 0\r\n\r\n"
    )
}

fn uas_call_cycle(c: &mut Criterion) {
    let mut ua = UserAgent::with_seed(UaConfig::default(), 1);
    let caller = Peer::udp("192.0.2.10:5062".parse().expect("literal address"));
    let mut now = Instant::now();
    let mut n: u64 = 0;
    let mut group = c.benchmark_group("sip_uas");
    group.throughput(Throughput::Elements(1));
    group.bench_function("call_cycle", |b| {
        b.iter(|| {
            n += 1;
            // Simulated time moves on so finished transactions expire.
            now += Duration::from_millis(1);
            ua.handle_timeout(now);
            let call_id = format!("bench-{n}@192.0.2.10");
            let invite = INVITE
                .replace("a84b4c76e66710@pc33.example.com", &call_id)
                .replace("z9hG4bK776asdhds", &format!("z9hG4bKi{n}"));
            ua.handle_datagram(now, invite.as_bytes(), caller);
            while ua.poll_transmit().is_some() {}
            let Some(SipEvent::IncomingCall { call, .. }) = ua.poll_event() else {
                panic!("no IncomingCall");
            };
            ua.answer(now, call, "v=0\r\n".to_owned());
            let ok = ua.poll_transmit().expect("200 OK");
            let tag = to_tag(&ok.payload);
            ua.handle_datagram(
                now,
                in_dialog("ACK", &call_id, &tag, 314159, n * 2).as_bytes(),
                caller,
            );
            ua.handle_datagram(
                now,
                in_dialog("BYE", &call_id, &tag, 314160, n * 2 + 1).as_bytes(),
                caller,
            );
            while ua.poll_transmit().is_some() {}
            while let Some(event) = ua.poll_event() {
                black_box(event);
            }
        })
    });
    group.finish();
    assert_eq!(ua.call_count(), 0, "every benchmark call ended");
}

criterion_group!(benches, parse_invite, uas_call_cycle);
criterion_main!(benches);
