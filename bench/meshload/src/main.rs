//! `meshload`: keeps `--depth` requests in flight on each of `--connections` connections
//! for `--seconds`, and prints one JSON line: requests answered, errors, latency
//! percentiles, and this process's CPU time (so its share of the two cores is known).
//!
//! Requests are a template frame (hex, recorded from a real client) with the request id
//! rewritten per request; a response is matched by its id. Written in Rust because a
//! Python load generator would be the bottleneck at 64 x 16.
//!
//! `--protocol grpc` sends the template as the message of a unary gRPC call to `--path`
//! instead (HTTP/2 by the h2 crate, `--depth` calls in flight per connection), so that a
//! call through the sidecar's gRPC API and a Bolt call straight to the upstream are timed
//! by the same client.

use std::collections::HashMap;
use std::rc::Rc;
use std::cell::RefCell;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Bolt,
    Dubbo,
    Grpc,
}

impl Protocol {
    fn frame_len(self, buf: &[u8]) -> Option<usize> {
        match self {
            Protocol::Bolt => {
                // v1 only: responses have a 20-byte header, requests 22.
                if buf.len() < 2 {
                    return None;
                }
                let (header, lengths_at) = if buf[1] == 0 { (20, 12) } else { (22, 14) };
                if buf.len() < header {
                    return None;
                }
                let class = u16::from_be_bytes([buf[lengths_at], buf[lengths_at + 1]]) as usize;
                let map = u16::from_be_bytes([buf[lengths_at + 2], buf[lengths_at + 3]]) as usize;
                let content = u32::from_be_bytes(buf[lengths_at + 4..lengths_at + 8].try_into().unwrap()) as usize;
                Some(header + class + map + content)
            }
            Protocol::Dubbo => {
                if buf.len() < 16 {
                    return None;
                }
                Some(16 + u32::from_be_bytes(buf[12..16].try_into().unwrap()) as usize)
            }
            Protocol::Grpc => unreachable!("gRPC calls are framed by h2"),
        }
    }

    fn id(self, frame: &[u8]) -> u64 {
        match self {
            Protocol::Bolt => u32::from_be_bytes(frame[5..9].try_into().unwrap()) as u64,
            Protocol::Dubbo => u64::from_be_bytes(frame[4..12].try_into().unwrap()),
            Protocol::Grpc => unreachable!("gRPC calls are matched by h2"),
        }
    }

    fn set_id(self, frame: &mut [u8], id: u64) {
        match self {
            Protocol::Bolt => frame[5..9].copy_from_slice(&(id as u32).to_be_bytes()),
            Protocol::Dubbo => frame[4..12].copy_from_slice(&id.to_be_bytes()),
            Protocol::Grpc => unreachable!("gRPC calls are matched by h2"),
        }
    }

    /// Whether a response carries a success status.
    fn ok(self, frame: &[u8]) -> bool {
        match self {
            Protocol::Bolt => frame[1] == 0 && frame[10] == 0 && frame[11] == 0,
            Protocol::Dubbo => frame[3] == 20,
            Protocol::Grpc => unreachable!("gRPC statuses are read from trailers"),
        }
    }
}

struct Args {
    address: String,
    protocol: Protocol,
    template: Vec<u8>,
    path: String,
    connections: usize,
    depth: usize,
    seconds: f64,
    warmup: f64,
}

fn parse_args() -> Args {
    let mut args = Args {
        address: "127.0.0.1:12220".into(),
        protocol: Protocol::Bolt,
        template: Vec::new(),
        path: String::new(),
        connections: 1,
        depth: 1,
        seconds: 5.0,
        warmup: 0.5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--address" => args.address = value,
            "--protocol" => {
                args.protocol = match value.as_str() {
                    "bolt" => Protocol::Bolt,
                    "dubbo" => Protocol::Dubbo,
                    "grpc" => Protocol::Grpc,
                    other => panic!("protocol {other}"),
                }
            }
            "--template" => {
                args.template = (0..value.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&value[i..i + 2], 16).expect("hex"))
                    .collect()
            }
            "--path" => args.path = value,
            "--connections" => args.connections = value.parse().expect("a number"),
            "--depth" => args.depth = value.parse().expect("a number"),
            "--seconds" => args.seconds = value.parse().expect("a number"),
            "--warmup" => args.warmup = value.parse().expect("a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!args.template.is_empty(), "--template HEX is required");
    assert!(args.protocol != Protocol::Grpc || !args.path.is_empty(), "--path is required with grpc");
    args
}

#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    errors: u64,
    /// Answers that came during the warm-up: a proxy's CPU read around the whole run is
    /// divided by every answer, these included.
    warmup_answers: u64,
}

async fn drive(args: Rc<Args>, tally: Rc<RefCell<Tally>>, start_measuring: Instant, stop: Instant) {
    let stream = TcpStream::connect(&args.address).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut next_id: u64 = 1;
    let mut frame = args.template.clone();
    let mut out = Vec::new();
    for _ in 0..args.depth {
        args.protocol.set_id(&mut frame, next_id);
        sent.insert(next_id, Instant::now());
        next_id += 1;
        out.extend_from_slice(&frame);
    }
    writer.write_all(&out).await.expect("write");
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).await.expect("read");
        if n == 0 {
            panic!("the server closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        let now = Instant::now();
        out.clear();
        let mut at = 0;
        while let Some(len) = args.protocol.frame_len(&buf[at..]) {
            if buf.len() - at < len {
                break;
            }
            let response = &buf[at..at + len];
            at += len;
            let id = args.protocol.id(response);
            let Some(started) = sent.remove(&id) else { continue };
            let mut t = tally.borrow_mut();
            if now < start_measuring {
                t.warmup_answers += 1;
            } else if args.protocol.ok(response) {
                t.latencies_ns.push(now.duration_since(started).as_nanos() as u64);
            } else {
                t.errors += 1;
            }
            drop(t);
            if now < stop {
                args.protocol.set_id(&mut frame, next_id);
                sent.insert(next_id, now);
                next_id += 1;
                out.extend_from_slice(&frame);
            }
        }
        buf.drain(..at);
        if !out.is_empty() {
            writer.write_all(&out).await.expect("write");
        }
        if sent.is_empty() {
            return;
        }
    }
}

async fn drive_grpc(args: Rc<Args>, tally: Rc<RefCell<Tally>>, start_measuring: Instant, stop: Instant) {
    let stream = TcpStream::connect(&args.address).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (client, connection) = h2::client::handshake(stream).await.expect("HTTP/2 handshake");
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    let mut body = Vec::with_capacity(5 + args.template.len());
    body.push(0);
    body.extend_from_slice(&(args.template.len() as u32).to_be_bytes());
    body.extend_from_slice(&args.template);
    let body = bytes::Bytes::from(body);
    let uri: http::Uri = format!("http://{}{}", args.address, args.path).parse().expect("a URI");
    let mut callers = Vec::new();
    for _ in 0..args.depth {
        let (client, body, uri, tally) = (client.clone(), body.clone(), uri.clone(), tally.clone());
        callers.push(tokio::task::spawn_local(async move {
            loop {
                let started = Instant::now();
                if started >= stop {
                    return;
                }
                let ok = unary(client.clone(), &uri, body.clone()).await;
                let now = Instant::now();
                let mut t = tally.borrow_mut();
                if now < start_measuring {
                    t.warmup_answers += 1;
                } else if ok {
                    t.latencies_ns.push(now.duration_since(started).as_nanos() as u64);
                } else {
                    t.errors += 1;
                }
            }
        }));
    }
    for caller in callers {
        caller.await.expect("a caller failed");
    }
}

/// One unary call; whether it ended with grpc-status 0.
async fn unary(client: h2::client::SendRequest<bytes::Bytes>, uri: &http::Uri, body: bytes::Bytes) -> bool {
    let request = http::Request::builder()
        .method("POST")
        .uri(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request");
    let Ok(mut client) = client.ready().await else { return false };
    let Ok((response, mut send)) = client.send_request(request, false) else { return false };
    if send.send_data(body, true).is_err() {
        return false;
    }
    let Ok(response) = response.await else { return false };
    let status = |headers: &http::HeaderMap| headers.get("grpc-status").map(|v| v.as_bytes() == b"0");
    if let Some(ok) = status(response.headers()) {
        return ok; // trailers-only
    }
    let mut answer = response.into_body();
    while let Some(chunk) = answer.data().await {
        let Ok(chunk) = chunk else { return false };
        let _ = answer.flow_control().release_capacity(chunk.len());
    }
    matches!(answer.trailers().await, Ok(Some(trailers)) if status(&trailers) == Some(true))
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let args = Rc::new(parse_args());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    let tally = Rc::new(RefCell::new(Tally::default()));
    let begin = Instant::now();
    let start_measuring = begin + Duration::from_secs_f64(args.warmup);
    let stop = start_measuring + Duration::from_secs_f64(args.seconds);
    let mut cpu_at_start = 0.0;
    local.block_on(&runtime, async {
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            let (args, tally) = (args.clone(), tally.clone());
            tasks.push(match args.protocol {
                Protocol::Grpc => tokio::task::spawn_local(drive_grpc(args, tally, start_measuring, stop)),
                _ => tokio::task::spawn_local(drive(args, tally, start_measuring, stop)),
            });
        }
        tokio::time::sleep_until(start_measuring.into()).await;
        cpu_at_start = cpu_seconds();
        for task in tasks {
            task.await.expect("a connection failed");
        }
    });
    let elapsed = begin.elapsed().as_secs_f64() - args.warmup;
    let cpu = cpu_seconds() - cpu_at_start;
    let mut t = tally.take();
    t.latencies_ns.sort_unstable();
    let pct = |p: f64| -> f64 {
        if t.latencies_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((t.latencies_ns.len() as f64 * p / 100.0) as usize).min(t.latencies_ns.len() - 1);
        t.latencies_ns[i] as f64 / 1000.0
    };
    println!(
        "{{\"ok\": {}, \"errors\": {}, \"warmup_answers\": {}, \"seconds\": {:.3}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"cpu_seconds\": {:.3}}}",
        t.latencies_ns.len(),
        t.errors,
        t.warmup_answers,
        elapsed,
        pct(50.0),
        pct(99.0),
        cpu
    );
}
