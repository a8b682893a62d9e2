//! Both send engines against a scripted HTTP/2 server that writes frames by
//! hand: the server's stream limit (one stream until its SETTINGS arrive,
//! then raised and lowered), flow control both ways, GOAWAY, RST_STREAM and
//! PING. Each test runs once per engine (`h2`, `nghttp2`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use kickoff_sender::push::h2client::{Call, CallFailure, Endpoint, Outgoing, Pool, RawResponse, SendEngine, client_tls};

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const ACK: u8 = 1;
const END_HEADERS: u8 = 4;
const MAX_CONCURRENT_STREAMS: u16 = 3;
const INITIAL_WINDOW_SIZE: u16 = 4;
const REFUSED_STREAM: u32 = 7;
const INTERNAL_ERROR: u32 = 2;
const CANCEL: u32 = 8;

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// A request as the server saw it.
#[derive(Debug)]
struct Seen {
    stream: u32,
    body: Vec<u8>,
    /// Sizes of its DATA frames.
    data_frames: Vec<usize>,
}

/// The server's end of one connection, speaking frames.
struct Peer {
    tcp: TcpStream,
    /// Requests still arriving, by stream.
    partial: HashMap<u32, Seen>,
    /// Every frame read, in order (kind, flags, stream).
    log: Vec<(u8, u8, u32)>,
    /// PING payloads the client acknowledged.
    ping_acks: Vec<Vec<u8>>,
    /// Stream window updates the client sent, by stream (0: connection).
    window_updates: HashMap<u32, u64>,
    /// The server's own SETTINGS went out (it must precede any ack).
    settings_sent: bool,
    /// A client SETTINGS waits for its ack.
    ack_due: bool,
}

impl Peer {
    fn accept(listener: &TcpListener) -> Self {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut preface = [0u8; 24];
        tcp.read_exact(&mut preface).unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        Self {
            tcp,
            partial: HashMap::new(),
            log: Vec::new(),
            ping_acks: Vec::new(),
            window_updates: HashMap::new(),
            settings_sent: false,
            ack_due: false,
        }
    }

    fn write(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.tcp.write_all(&frame).unwrap();
    }

    fn settings(&mut self, params: &[(u16, u32)]) {
        let payload: Vec<u8> = params.iter().flat_map(|(id, v)| [&id.to_be_bytes()[..], &v.to_be_bytes()[..]].concat()).collect();
        self.write(SETTINGS, 0, 0, &payload);
        self.settings_sent = true;
        if std::mem::take(&mut self.ack_due) {
            self.write(SETTINGS, ACK, 0, &[]);
        }
    }

    /// A response: `:status` (HPACK static entry 8, or its name with a
    /// literal value), then the body if any.
    fn respond(&mut self, stream: u32, status: u16, body: &[u8]) {
        let block = if status == 200 { vec![0x88] } else { [&[0x08, 3][..], status.to_string().as_bytes()].concat() };
        self.write(HEADERS, END_HEADERS | if body.is_empty() { END_STREAM } else { 0 }, stream, &block);
        if !body.is_empty() {
            self.write(DATA, END_STREAM, stream, body);
        }
    }

    fn rst(&mut self, stream: u32, code: u32) {
        self.write(RST_STREAM, 0, stream, &code.to_be_bytes());
    }

    fn goaway(&mut self, last: u32, code: u32) {
        self.write(GOAWAY, 0, 0, &[last.to_be_bytes(), code.to_be_bytes()].concat());
    }

    /// One frame; `None` at the end of the connection or when nothing
    /// arrives within `wait`. Acknowledges SETTINGS and records PING acks
    /// and window updates.
    fn read(&mut self, wait: Duration) -> Option<Frame> {
        self.tcp.set_read_timeout(Some(wait)).unwrap();
        let mut head = [0u8; 9];
        if let Err(e) = self.tcp.read_exact(&mut head) {
            assert!(
                matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::UnexpectedEof),
                "{e}"
            );
            return None;
        }
        self.tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        self.tcp.read_exact(&mut payload).unwrap();
        let frame =
            Frame { kind: head[3], flags: head[4], stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff, payload };
        self.log.push((frame.kind, frame.flags, frame.stream));
        match frame.kind {
            SETTINGS if frame.flags & ACK == 0 && self.settings_sent => self.write(SETTINGS, ACK, 0, &[]),
            SETTINGS if frame.flags & ACK == 0 => self.ack_due = true,
            PING if frame.flags & ACK != 0 => self.ping_acks.push(frame.payload.clone()),
            WINDOW_UPDATE => {
                let n = u32::from_be_bytes(frame.payload[..4].try_into().unwrap());
                *self.window_updates.entry(frame.stream).or_default() += u64::from(n);
            }
            _ => {}
        }
        Some(frame)
    }

    /// Reads until a request is whole (END_STREAM seen); `None` when none
    /// completes within `wait`.
    fn request(&mut self, wait: Duration) -> Option<Seen> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let frame = self.read(left.max(Duration::from_millis(1)))?;
            let seen = || Seen { stream: frame.stream, body: Vec::new(), data_frames: Vec::new() };
            let ends = frame.flags & END_STREAM != 0;
            match frame.kind {
                HEADERS | CONTINUATION => {
                    self.partial.entry(frame.stream).or_insert_with(seen);
                }
                DATA => {
                    let s = self.partial.get_mut(&frame.stream).expect("DATA after HEADERS");
                    s.body.extend_from_slice(&frame.payload);
                    s.data_frames.push(frame.payload.len());
                }
                _ => continue,
            }
            if ends && frame.kind != CONTINUATION {
                return self.partial.remove(&frame.stream);
            }
        }
    }

    /// Streams whose HEADERS the server has read.
    fn opened(&self) -> Vec<u32> {
        self.log.iter().filter(|(k, _, _)| *k == HEADERS).map(|(_, _, s)| *s).collect()
    }
}

fn server(script: impl FnOnce(&TcpListener) + Send + 'static) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, std::thread::spawn(move || script(&listener)))
}

async fn pool(port: u16, engine: SendEngine) -> Pool {
    let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}"), &client_tls(None).unwrap()).unwrap().with_engine(engine);
    Pool::open(Arc::new(endpoint), 1).await.unwrap()
}

fn send(pool: &mut Pool, body: &[u8]) -> Call {
    let topic = (HeaderName::from_static("apns-topic"), HeaderValue::from_static("dev.kickoff.demo"));
    let path = format!("/3/device/{}", "ab".repeat(32));
    let outgoing = Outgoing { method: &Method::POST, path: &path, headers: &[(&topic.0, &topic.1)] };
    pool.send(&outgoing, Bytes::copy_from_slice(body), false).expect("a live connection")
}

/// Sends once a connection is live again (after a GOAWAY or a close).
async fn send_when_live(pool: &mut Pool) -> Call {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let outgoing = Outgoing { method: &Method::POST, path: "/3/device/x", headers: &[] };
        if let Some(call) = pool.send(&outgoing, Bytes::from_static(b"{}"), false) {
            return call;
        }
        assert!(Instant::now() < deadline, "the pool never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status(answer: Result<RawResponse, kickoff_sender::push::h2client::CallError>) -> u16 {
    answer.expect("an answer").status
}

/// One stream until the server's SETTINGS arrive (APNs's rule until its
/// first accepted request), then the server's limit, raised and lowered.
async fn the_server_stream_limit_holds_before_its_settings_and_when_it_changes(engine: SendEngine) {
    let (port, script) = server(|listener| {
        let mut peer = Peer::accept(listener);
        // No SETTINGS yet: the client may open one stream only.
        let first = peer.request(Duration::from_millis(700)).expect("the first request");
        while peer.read(Duration::from_millis(200)).is_some() {}
        assert_eq!(peer.opened(), [first.stream], "one stream before the server's SETTINGS");
        peer.settings(&[(MAX_CONCURRENT_STREAMS, 2)]);
        // At most two open at once from now on: answer one at a time.
        let mut open = vec![first.stream];
        let mut answered = 0;
        while answered < 5 {
            while let Some(r) = peer.request(Duration::from_millis(150)) {
                open.push(r.stream);
                assert!(open.len() <= 2, "more streams open than the server allows: {open:?}");
            }
            if open.is_empty() {
                open.push(peer.request(Duration::from_secs(5)).expect("the next request").stream);
            }
            let stream = open.remove(0);
            peer.respond(stream, 200, b"");
            answered += 1;
        }
        // Once the client has seen the limit of two (it sends one more
        // request to say so), lowered to one: never two open after that.
        let r = peer.request(Duration::from_secs(5)).expect("the client's go-ahead");
        peer.respond(r.stream, 200, b"");
        peer.settings(&[(MAX_CONCURRENT_STREAMS, 1)]);
        let mut answered = 0;
        while answered < 4 {
            let r = peer.request(Duration::from_secs(5)).expect("a request under the lowered limit");
            assert!(peer.request(Duration::from_millis(150)).is_none(), "a second stream opened under a limit of one");
            peer.respond(r.stream, 200, b"");
            answered += 1;
        }
    });
    let mut pool = pool(port, engine).await;
    assert_eq!(pool.capacity(), 1, "one stream assumed until the server's SETTINGS");
    let calls: Vec<Call> = (0..5).map(|_| send(&mut pool, b"{}")).collect();
    for call in calls {
        assert_eq!(status(call.await), 200);
    }
    assert_eq!(pool.capacity(), 2, "the server's limit");
    assert_eq!(status(send(&mut pool, b"{}").await), 200);
    // Let the lowered SETTINGS arrive before sending under it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.capacity() != 1 {
        assert!(Instant::now() < deadline, "the lowered limit never took effect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls: Vec<Call> = (0..4).map(|_| send(&mut pool, b"{}")).collect();
    for call in calls {
        assert_eq!(status(call.await), 200);
    }
    script.join().unwrap();
}
both_engines!(the_server_stream_limit_holds_before_its_settings_and_when_it_changes);

/// A 470-byte body through a 100-byte stream window arrives whole, in
/// frames that never overrun the window; a 2 MB response is read to the
/// end through the client's own window updates.
async fn flow_control_holds_both_ways(engine: SendEngine) {
    let (port, script) = server(|listener| {
        let mut peer = Peer::accept(listener);
        peer.settings(&[(INITIAL_WINDOW_SIZE, 100), (MAX_CONCURRENT_STREAMS, 10)]);
        // Grant 100 more bytes each time the window is used up.
        let mut body = Vec::new();
        let mut frames = Vec::new();
        let mut stream = 0;
        let mut window = 100usize;
        while body.len() < 470 {
            let f = peer.read(Duration::from_secs(5)).expect("the body keeps coming");
            if f.kind == HEADERS {
                stream = f.stream;
            }
            if f.kind == DATA {
                assert!(f.payload.len() <= window, "a DATA frame of {} bytes overran a window of {window}", f.payload.len());
                window -= f.payload.len();
                body.extend_from_slice(&f.payload);
                frames.push(f.payload.len());
                if window == 0 {
                    peer.write(WINDOW_UPDATE, 0, stream, &100u32.to_be_bytes());
                    window = 100;
                }
            }
        }
        assert_eq!(body, vec![b'x'; 470], "the body arrived whole");
        assert!(frames.len() >= 5, "the body came in window-sized pieces: {frames:?}");
        // A response far larger than the client's 1 MiB stream window.
        peer.write(HEADERS, END_HEADERS, stream, &[0x88]);
        // Windows: the client's SETTINGS (1 MiB a stream) and the 65,535
        // default for the connection, plus every update it has sent.
        let (total, chunk) = (2usize << 20, 16 * 1024);
        let granted = |peer: &Peer, id: u32| peer.window_updates.get(&id).copied().unwrap_or(0) as usize;
        let mut sent = 0;
        while sent < total {
            let stream_window = (1 << 20) + granted(&peer, stream) - sent;
            let conn_window = 65_535 + granted(&peer, 0) - sent;
            let n = chunk.min(total - sent).min(stream_window).min(conn_window);
            if n == 0 {
                peer.read(Duration::from_secs(5)).expect("a window update");
                continue;
            }
            let last = sent + n == total;
            peer.write(DATA, if last { END_STREAM } else { 0 }, stream, &vec![b'y'; n]);
            sent += n;
        }
        assert!(peer.window_updates.get(&stream).copied().unwrap_or(0) > 0, "the client opened its stream window as it read");
        // Stay until the client is done reading.
        while peer.read(Duration::from_millis(300)).is_some() {}
    });
    let mut pool = pool(port, engine).await;
    let call = send(&mut pool, &[b'x'; 470]);
    let answer = tokio::time::timeout(Duration::from_secs(20), call).await.expect("no stall").expect("an answer");
    assert_eq!(answer.status, 200);
    script.join().unwrap();
}
both_engines!(flow_control_holds_both_ways);

/// GOAWAY with last-stream-id 1: stream 1 is answered, streams 3 and 5 come
/// back as never sent (safe to send again), and the pool reconnects.
async fn a_goaway_refuses_the_streams_above_its_last_id_and_the_pool_reconnects(engine: SendEngine) {
    let (port, script) = server(|listener| {
        let mut peer = Peer::accept(listener);
        peer.settings(&[(MAX_CONCURRENT_STREAMS, 100)]);
        let mut streams: Vec<u32> = (0..3).map(|_| peer.request(Duration::from_secs(5)).expect("three requests").stream).collect();
        streams.sort_unstable();
        assert_eq!(streams, [1, 3, 5]);
        peer.goaway(1, 0);
        peer.respond(1, 200, b"");
        while peer.read(Duration::from_millis(300)).is_some() {}
        drop(peer);
        // The replacement connection.
        let mut peer = Peer::accept(listener);
        peer.settings(&[(MAX_CONCURRENT_STREAMS, 100)]);
        let r = peer.request(Duration::from_secs(5)).expect("a request on the new connection");
        assert_eq!(r.stream, 1, "a new connection");
        peer.respond(r.stream, 200, b"");
        while peer.read(Duration::from_millis(300)).is_some() {}
    });
    let mut pool = pool(port, engine).await;
    let calls: Vec<Call> = (0..3).map(|_| send(&mut pool, b"{}")).collect();
    let answers = futures_util::future::join_all(calls).await;
    assert_eq!(answers[0].as_ref().map(|r| r.status), Ok(200), "{answers:?}");
    for a in &answers[1..] {
        assert_eq!(a.as_ref().map_err(|e| e.kind), Err(CallFailure::NotSent), "{answers:?}");
    }
    assert_eq!(status(send_when_live(&mut pool).await.await), 200);
    script.join().unwrap();
}
both_engines!(a_goaway_refuses_the_streams_above_its_last_id_and_the_pool_reconnects);

/// RST_STREAM: REFUSED_STREAM means never processed (unsent), another code
/// a reset (retried on the budget), and a reset after a 200 is still a 200.
async fn rst_stream_codes_map_to_unsent_reset_and_accepted(engine: SendEngine) {
    let (port, script) = server(|listener| {
        let mut peer = Peer::accept(listener);
        peer.settings(&[(MAX_CONCURRENT_STREAMS, 100)]);
        for _ in 0..3 {
            peer.request(Duration::from_secs(5)).expect("three requests");
        }
        peer.rst(1, REFUSED_STREAM);
        peer.rst(3, INTERNAL_ERROR);
        peer.write(HEADERS, END_HEADERS, 5, &[0x88]);
        peer.rst(5, CANCEL);
        while peer.read(Duration::from_millis(300)).is_some() {}
    });
    let mut pool = pool(port, engine).await;
    let calls: Vec<Call> = (0..3).map(|_| send(&mut pool, b"{}")).collect();
    let answers = futures_util::future::join_all(calls).await;
    assert_eq!(answers[0].as_ref().map_err(|e| e.kind), Err(CallFailure::NotSent), "{answers:?}");
    assert_eq!(answers[1].as_ref().map_err(|e| e.kind), Err(CallFailure::Reset), "{answers:?}");
    assert_eq!(answers[2].as_ref().map(|r| r.status), Ok(200), "{answers:?}");
    script.join().unwrap();
}
both_engines!(rst_stream_codes_map_to_unsent_reset_and_accepted);

/// A server PING is acknowledged with its payload, mid-traffic.
async fn a_server_ping_is_acknowledged_with_its_payload(engine: SendEngine) {
    let (port, script) = server(|listener| {
        let mut peer = Peer::accept(listener);
        peer.settings(&[(MAX_CONCURRENT_STREAMS, 100)]);
        let r = peer.request(Duration::from_secs(5)).expect("a request");
        peer.write(PING, 0, 0, b"kickoff!");
        let deadline = Instant::now() + Duration::from_secs(5);
        while peer.ping_acks.is_empty() && Instant::now() < deadline {
            peer.read(Duration::from_millis(100));
        }
        assert_eq!(peer.ping_acks, [b"kickoff!".to_vec()], "the PING was acknowledged with its payload");
        peer.respond(r.stream, 200, b"");
        while peer.read(Duration::from_millis(300)).is_some() {}
    });
    let mut pool = pool(port, engine).await;
    assert_eq!(status(send(&mut pool, b"{}").await), 200);
    script.join().unwrap();
}
both_engines!(a_server_ping_is_acknowledged_with_its_payload);
