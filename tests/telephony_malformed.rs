//! Hostile and broken input over UDP and TCP: every message must get a 4xx
//! (or, where no answer can be addressed, be dropped silently), the engine
//! must stay up, and real calls during and after the barrage must work.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// What the engine may answer to a case.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A 4xx, or nothing at all (nothing to address a reply to, or just noise).
    RejectOrDrop,
    /// Must be answered, with one of these codes.
    Exactly(&'static [u16]),
}

struct Case {
    name: &'static str,
    build: fn(&Ctx) -> Vec<u8>,
    expect: Expect,
}

/// Per-send values: the addresses in the message must be real, or the engine
/// would (rightly) send its 4xx somewhere we are not listening.
struct Ctx {
    transport: Transport,
    local_port: u16,
    engine_port: u16,
    serial: u32,
}

impl Ctx {
    fn via(&self) -> String {
        format!(
            "Via: SIP/2.0/{} 127.0.0.1:{};rport;branch=z9hG4bK-malformed-{}\r\n",
            self.transport.via(),
            self.local_port,
            self.serial
        )
    }
    fn from(&self) -> String {
        format!(
            "From: <sip:fuzzer@127.0.0.1:{}>;tag=mal{}\r\n",
            self.local_port, self.serial
        )
    }
    fn to(&self) -> String {
        format!("To: <sip:1000@127.0.0.1:{}>\r\n", self.engine_port)
    }
    fn call_id(&self) -> String {
        format!(
            "Call-ID: malformed-{}-{}@127.0.0.1\r\n",
            self.serial, self.local_port
        )
    }
    fn contact(&self) -> String {
        format!("Contact: <sip:fuzzer@127.0.0.1:{}>\r\n", self.local_port)
    }
    fn ruri(&self) -> String {
        format!("sip:1000@127.0.0.1:{}", self.engine_port)
    }

    /// An OPTIONS with every mandatory header, minus any named in `without`.
    fn options_without(&self, without: &[&str]) -> Vec<u8> {
        let mut m = format!("OPTIONS {} SIP/2.0\r\n", self.ruri());
        let headers = [
            ("Via", self.via()),
            ("From", self.from()),
            ("To", self.to()),
            ("Call-ID", self.call_id()),
            ("CSeq", "CSeq: 1 OPTIONS\r\n".to_owned()),
            ("Max-Forwards", "Max-Forwards: 70\r\n".to_owned()),
        ];
        for (name, line) in headers {
            if !without.contains(&name) {
                m.push_str(&line);
            }
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m.into_bytes()
    }

    fn invite_with_sdp(&self, sdp: &str, content_length: &str) -> Vec<u8> {
        format!(
            "INVITE {} SIP/2.0\r\n{}{}{}{}CSeq: 1 INVITE\r\n{}Max-Forwards: 70\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
            self.ruri(),
            self.via(),
            self.from(),
            self.to(),
            self.call_id(),
            self.contact(),
            content_length,
            sdp
        )
        .into_bytes()
    }
}

fn sdp(media: &str) -> String {
    format!("v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}")
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "truncated mid-header",
            build: |c| {
                let mut m = c.options_without(&[]);
                m.truncate(m.len() / 2);
                m
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "truncated request line",
            build: |_| b"INVITE sip:1000@127.0".to_vec(),
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "missing Via",
            build: |c| c.options_without(&["Via"]),
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "missing From",
            build: |c| c.options_without(&["From"]),
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "missing To",
            build: |c| c.options_without(&["To"]),
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "missing Call-ID",
            build: |c| c.options_without(&["Call-ID"]),
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "missing CSeq",
            build: |c| c.options_without(&["CSeq"]),
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "CSeq method differs from request method",
            build: |c| {
                String::from_utf8_lossy(&c.options_without(&[]))
                    .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")
                    .into_bytes()
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "Content-Length larger than the body",
            build: |c| c.invite_with_sdp(&sdp("m=audio 40000 RTP/AVP 0\r\n"), "5000"),
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "Content-Length not a number",
            build: |c| c.invite_with_sdp(&sdp("m=audio 40000 RTP/AVP 0\r\n"), "twelve"),
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "Content-Length negative",
            build: |c| c.invite_with_sdp(&sdp("m=audio 40000 RTP/AVP 0\r\n"), "-20"),
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "Content-Length enormous",
            build: |c| {
                c.invite_with_sdp(&sdp("m=audio 40000 RTP/AVP 0\r\n"), "99999999999999999999")
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "Request-URI not a URI",
            build: |c| {
                String::from_utf8_lossy(&c.options_without(&[]))
                    .replacen(&c.ruri(), "not a uri at all", 1)
                    .into_bytes()
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "Request-URI with empty host",
            build: |c| {
                String::from_utf8_lossy(&c.options_without(&[]))
                    .replacen(&c.ruri(), "sip:@", 1)
                    .into_bytes()
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "To with an unterminated URI",
            build: |c| {
                String::from_utf8_lossy(&c.options_without(&[]))
                    .replace(&c.to(), "To: <sip:1000@127.0.0.1\r\n")
                    .into_bytes()
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "NUL bytes in headers",
            build: |c| {
                let text = String::from_utf8_lossy(&c.options_without(&[])).into_owned();
                text.replace("Max-Forwards: 70", "Max-Forwards: 7\u{0}\u{0}0")
                    .replace("From: <sip:", "From: <sip:\0")
                    .into_bytes()
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "NUL bytes only",
            build: |_| vec![0u8; 512],
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "64 KB header",
            // Fits one UDP datagram (65,507 bytes of payload at most).
            build: |c| {
                let text = String::from_utf8_lossy(&c.options_without(&[])).into_owned();
                let huge = format!("Subject: {}\r\nContent-Length", "x".repeat(63 * 1024));
                text.replacen("Content-Length", &huge, 1).into_bytes()
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "thousands of tiny headers",
            build: |c| {
                let text = String::from_utf8_lossy(&c.options_without(&[])).into_owned();
                let many = "X-A: b\r\n".repeat(7000) + "Content-Length";
                text.replacen("Content-Length", &many, 1).into_bytes()
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "random garbage",
            build: |c| {
                // Deterministic per case so a failure reproduces.
                let mut x = 0x9E37_79B9u32 ^ c.serial;
                (0..1400)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        (x & 0xff) as u8
                    })
                    .collect()
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "response line as a request",
            build: |_| b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "binary after a valid start line",
            build: |c| {
                let mut m = format!("INVITE {} SIP/2.0\r\n", c.ruri()).into_bytes();
                m.extend((0..=255u8).cycle().take(2000));
                m
            },
            expect: Expect::RejectOrDrop,
        },
        Case {
            name: "SDP with only video",
            build: |c| {
                let body = sdp("m=video 40000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n");
                c.invite_with_sdp(&body, &body.len().to_string())
            },
            expect: Expect::Exactly(&[488, 415, 400]),
        },
        Case {
            name: "SDP audio rejected with port 0",
            build: |c| {
                let body = sdp("m=audio 0 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
                c.invite_with_sdp(&body, &body.len().to_string())
            },
            expect: Expect::Exactly(&[488, 400]),
        },
        Case {
            name: "SDP that is not SDP",
            build: |c| {
                let body = "this is not a session description\r\n";
                c.invite_with_sdp(body, &body.len().to_string())
            },
            expect: Expect::Exactly(&[488, 400, 415]),
        },
    ]
}

fn udp_probe(engine: SocketAddr, case: &Case, serial: u32) -> Option<u16> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let ctx = Ctx {
        transport: Transport::Udp,
        local_port: sock.local_addr().expect("addr").port(),
        engine_port: engine.port(),
        serial,
    };
    let payload = (case.build)(&ctx);
    let payload = &payload[..payload.len().min(65_507)];
    sock.send_to(payload, engine).ok()?;
    let mut buf = vec![0u8; 65_536];
    // Skip a 100 Trying: the final answer is what is judged.
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            return None;
        };
        match status_code(&buf[..n]) {
            Some(100) => continue,
            other => return other,
        }
    }
    None
}

fn tcp_probe(engine: SocketAddr, case: &Case, serial: u32) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&engine, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("engine refused a TCP connection ({}): {e}", case.name));
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let ctx = Ctx {
        transport: Transport::Tcp,
        local_port: stream.local_addr().expect("addr").port(),
        engine_port: engine.port(),
        serial,
    };
    let payload = (case.build)(&ctx);
    if stream.write_all(&payload).is_err() {
        return None;
    }
    // No half-close after writing: the engine treats EOF as the connection
    // gone and (rightly) drops answers still queued for it. A truncated
    // message on a stream just waits for more bytes: that reads as a drop.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                // Judge the first non-100 response.
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = buf[..end].to_vec();
                    let code = status_code(&head);
                    if code != Some(100) {
                        return code;
                    }
                    buf.drain(..end + 4);
                }
            }
        }
    }
    status_code(&buf)
}

fn judge(case: &Case, transport: Transport, got: Option<u16>) -> Result<(), String> {
    let ok = match (case.expect, got) {
        (Expect::RejectOrDrop, None) => true,
        (Expect::RejectOrDrop, Some(code)) => (400..500).contains(&code),
        (Expect::Exactly(codes), Some(code)) => codes.contains(&code),
        (Expect::Exactly(_), None) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} '{}': got {:?}, expected {:?}",
            transport, case.name, got, case.expect
        ))
    }
}

fn options_still_answered(engine: &mut Engine, transport: Transport) {
    engine.assert_alive("after malformed input");
    let case = Case {
        name: "valid OPTIONS",
        build: |c| c.options_without(&[]),
        expect: Expect::Exactly(&[200]),
    };
    let got = match transport {
        Transport::Udp => udp_probe(engine.sip_addr(), &case, 999_999),
        Transport::Tcp => tcp_probe(engine.sip_addr(), &case, 999_998),
    };
    assert_eq!(
        got,
        Some(200),
        "a valid OPTIONS over {transport:?} was not answered after the barrage; log:\n{}",
        engine.log()
    );
}

#[test]
fn malformed_sip_gets_4xx_or_is_dropped_and_calls_carry_on() {
    if !require_binaries(
        "malformed_sip_gets_4xx_or_is_dropped_and_calls_carry_on",
        &["sipp"],
    ) {
        return;
    }
    let mut engine = Engine::start_default();
    // A real call is in progress during the whole barrage.
    let during = Sipp::new("uac_basic.xml", &engine.sip_target())
        .service("3000")
        .args(["-m", "1", "-d", "8000"])
        .spawn();

    let mut failures = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        for transport in [Transport::Udp, Transport::Tcp] {
            let serial = i as u32 * 2 + u32::from(transport == Transport::Tcp);
            let got = match transport {
                Transport::Udp => udp_probe(engine.sip_addr(), case, serial),
                Transport::Tcp => tcp_probe(engine.sip_addr(), case, serial),
            };
            eprintln!("{transport:?} {:<40} -> {got:?}", case.name);
            if let Err(e) = judge(case, transport, got) {
                failures.push(e);
            }
            engine.assert_alive(&format!("after {transport:?} '{}'", case.name));
        }
    }
    options_still_answered(&mut engine, Transport::Udp);
    options_still_answered(&mut engine, Transport::Tcp);

    let during = during.wait();
    assert_sipp_ok(&during, &engine, "call during the malformed barrage");
    let after = Sipp::new("uac_basic.xml", &engine.sip_target())
        .service("3000")
        .args(["-m", "1", "-d", "1000"])
        .run();
    assert_sipp_ok(&after, &engine, "call after the malformed barrage");

    assert!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );
    engine.stop();
}

#[test]
fn endless_header_over_tcp_is_cut_off_not_buffered() {
    let mut engine = Engine::start_default();
    let mut stream =
        TcpStream::connect_timeout(&engine.sip_addr(), Duration::from_secs(5)).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = stream.write_all(b"OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\nSubject: ");
    // 8 MB with no end of line: a server that buffers it all is one TCP
    // client away from running out of memory. It must close or reject.
    let chunk = vec![b'x'; 64 * 1024];
    let mut written = 0usize;
    let mut cut_off = false;
    for _ in 0..128 {
        match stream.write_all(&chunk) {
            Ok(()) => written += chunk.len(),
            Err(_) => {
                cut_off = true;
                break;
            }
        }
    }
    let mut reply = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let _ = stream.read_to_end(&mut reply);
    let code = status_code(&reply);
    eprintln!("endless header: wrote {written} bytes, cut off {cut_off}, reply {code:?}");
    assert!(
        cut_off || code.is_some_and(|c| (400..500).contains(&c)) || reply.is_empty(),
        "engine neither cut off nor rejected an 8 MB header"
    );
    engine.assert_alive("after an endless TCP header");
    options_still_answered(&mut engine, Transport::Tcp);
    engine.stop();
}

#[test]
fn garbage_on_rtp_ports_does_not_disturb_a_live_call() {
    if !require_binaries(
        "garbage_on_rtp_ports_does_not_disturb_a_live_call",
        &["sipp"],
    ) {
        return;
    }
    let mut engine = Engine::start_default();
    let call = Sipp::new("uac_basic.xml", &engine.sip_target())
        .service("1000")
        .args(["-m", "1", "-d", "6000"])
        .spawn();
    engine.wait_for_calls("the call answered", Duration::from_secs(10), |calls| {
        calls.iter().any(|c| c.answered_at.is_some())
    });
    // Spray every port of the engine's RTP range (the live call's RTP and RTCP
    // ports among them) with short, long, RTP-looking and random datagrams.
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let mut x = 0x1234_5678u32;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x & 0xff) as u8
            })
            .collect()
    };
    let mut fake_rtp = vec![0x80u8, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
    fake_rtp.extend(std::iter::repeat_n(0x7fu8, 160));
    let bad_version_rtp = {
        let mut p = fake_rtp.clone();
        p[0] = 0x40;
        p
    };
    // CSRC count 15 and extension bit set, but the packet ends right after the header.
    let lying_header = vec![0x9fu8, 0x00, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
    // Found by fuzz/rtp_parse: a 9-byte RTCP transport feedback packet whose
    // length field is shorter than its contents made the `rtcp` crate panic.
    let rtcp_feedback_overrun = vec![0x81u8, 0xcd, 0x00, 0x01, 0xcc, 0x13, 0x2e, 0x62, 0x04];
    let (low, high) = engine.rtp_ports;
    for round in 0..3 {
        for port in low..=high {
            let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let payloads: [Vec<u8>; 8] = [
                rtcp_feedback_overrun.clone(),
                Vec::new(),
                vec![0x80],
                random(11),
                random(1200 + round),
                fake_rtp.clone(),
                bad_version_rtp.clone(),
                lying_header.clone(),
            ];
            for p in &payloads {
                let _ = sock.send_to(p, target);
            }
        }
    }
    engine.assert_alive("after garbage on the RTP ports");
    let run = call.wait();
    assert_sipp_ok(&run, &engine, "call with garbage on its RTP port");
    let record = engine.wait_call_ended(run.call_ids.first().expect("call id"));
    assert_eq!(record.hangup_by.as_deref(), Some("caller"), "{record:#?}");
    assert!(record.rtp_packets_rx.unwrap_or(0) > 100, "{record:#?}");

    let after = Sipp::new("uac_basic.xml", &engine.sip_target())
        .service("3000")
        .args(["-m", "1", "-d", "800"])
        .run();
    assert_sipp_ok(&after, &engine, "call after RTP garbage");
    engine.stop();
}
