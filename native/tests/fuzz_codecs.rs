//! Property tests: the splitter, and the mesh's own read step (`codec::take_frame`),
//! return exactly the frames they were fed however the bytes are cut, and no input makes
//! a codec or either of them panic. Bounded by case count, so `cargo test` runs them in a
//! few seconds.

use bytes::BytesMut;
use layotto_fast_native::bolt::{self, Bolt};
use layotto_fast_native::codec::{take_frame, Codec};
use layotto_fast_native::dubbo::{self, Dubbo};
use layotto_fast_native::frame::{Protocol, Splitter};
use layotto_fast_native::hessian::{Decoder, Encoder, Value};
use layotto_fast_native::sofa_hessian;
use proptest::prelude::*;

fn bolt_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u32>(),
        any::<bool>(),
        "[a-z.]{0,20}",
        proptest::collection::vec(("[a-z_]{1,8}", "[ -~]{0,12}"), 0..4),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(id, response, class, header, content)| {
            if response {
                bolt::encode_response(id, 1, 0, &class, &header, &content).unwrap()
            } else {
                bolt::encode_request(id, 11, 3000, &class, &header, &content, false).unwrap()
            }
        })
}

fn dubbo_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u64>(),
        any::<bool>(),
        "[a-z.]{1,30}",
        "[a-zA-Z]{1,12}",
        proptest::collection::vec("\\PC{0,40}", 0..4),
    )
        .prop_map(|(id, two_way, path, method, texts)| {
            let invocation = dubbo::Invocation {
                dubbo_version: "2.0.2".into(),
                path,
                version: "1.0".into(),
                method,
                param_types: "Ljava/lang/String;".repeat(texts.len()),
                args: texts.into_iter().map(Value::String).collect(),
                attachments: vec![],
            };
            dubbo::encode_request(id, &invocation, two_way)
        })
}

/// Bytes biased towards the draft Hessian grammar's tags, so that random input nests.
fn sofa_hessian_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(b"OoVvMzSsnltTJRN\x90\x91\x92\x03".to_vec()),
        any::<u8>(),
    ]
}

/// A SofaResponse {isError F, errorMsg N, appResponse = E {detailMessage "x", cause J1, trace [] }}.
fn sofa_error_answer() -> Vec<u8> {
    let mut out = b"O\x91R\x93\x07isError\x08errorMsg\x0bappResponseo\x90FN".to_vec();
    out.extend_from_slice(
        b"O\x91E\x93\x0ddetailMessage\x05cause\x0astackTraceo\x91\x01xJ\x01Vt\x00\x01[n\x00z",
    );
    out
}

/// `frames` one after another, in pieces of the lengths in `cuts` (repeated as needed).
fn pieces(frames: &[Vec<u8>], cuts: &[usize]) -> Vec<Vec<u8>> {
    let wire: Vec<u8> = frames.concat();
    let mut out = Vec::new();
    let mut at = 0;
    for cut in cuts.iter().cycle() {
        if at >= wire.len() {
            break;
        }
        let end = (at + cut).min(wire.len());
        out.push(wire[at..end].to_vec());
        at = end;
    }
    out
}

/// `frames` fed to a splitter of `protocol` in pieces cut at `cuts`: the frames it
/// returns, and the bytes it still holds.
fn split(protocol: Protocol, frames: &[Vec<u8>], cuts: &[usize]) -> (Vec<Vec<u8>>, usize) {
    let mut splitter = Splitter::new(protocol, 1 << 20).unwrap();
    let mut got = Vec::new();
    for piece in pieces(frames, cuts) {
        splitter.feed(&piece, |f| got.push(f.to_vec())).unwrap();
    }
    (got, splitter.buffered())
}

/// `frames` read by the mesh's step for codec `C` from a buffer filled in pieces cut at
/// `cuts`: the frames it takes, and the bytes left over.
fn take_all<C: Codec>(frames: &[Vec<u8>], cuts: &[usize]) -> (Vec<Vec<u8>>, usize) {
    let mut buffer = BytesMut::new();
    let mut got = Vec::new();
    for piece in pieces(frames, cuts) {
        buffer.extend_from_slice(&piece);
        while let Some(frame) = take_frame::<C>(&mut buffer, 1 << 20).unwrap() {
            got.push(frame.to_vec());
        }
    }
    (got, buffer.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_mesh_takes_the_frames_however_cut(
        bolt in proptest::collection::vec(bolt_frame(), 1..8),
        dubbo in proptest::collection::vec(dubbo_frame(), 1..8),
        cuts in proptest::collection::vec(1usize..64, 1..40),
    ) {
        prop_assert_eq!(take_all::<Bolt>(&bolt, &cuts), (bolt.clone(), 0));
        prop_assert_eq!(take_all::<Dubbo>(&dubbo, &cuts), (dubbo.clone(), 0));
    }

    #[test]
    fn the_mesh_step_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buffer = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = take_frame::<Bolt>(&mut buffer, 1 << 20) {}
        let mut buffer = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = take_frame::<Dubbo>(&mut buffer, 1 << 20) {}
    }

    #[test]
    fn splitter_returns_the_frames_however_cut(
        frames in proptest::collection::vec(bolt_frame(), 1..8),
        cuts in proptest::collection::vec(1usize..64, 1..40),
    ) {
        let (got, left) = split(Protocol::Bolt, &frames, &cuts);
        prop_assert_eq!(got, frames);
        prop_assert_eq!(left, 0);
    }

    #[test]
    fn dubbo_splitter_returns_the_frames_however_cut(
        frames in proptest::collection::vec(dubbo_frame(), 1..8),
        cuts in proptest::collection::vec(1usize..64, 1..40),
    ) {
        let (got, left) = split(Protocol::Dubbo, &frames, &cuts);
        prop_assert_eq!(got, frames);
        prop_assert_eq!(left, 0);
    }

    #[test]
    fn bolt_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Bolt::frame_len(&bytes);
        let _ = Bolt::head(&bytes);
        let _ = Bolt::request_meta(&bytes, true);
        let _ = bolt::decode_request(&bytes);
        let _ = bolt::decode_response(&bytes);
        let mut copy = bytes.clone();
        Bolt::set_request_id(&mut copy, 9);
        let mut splitter = Splitter::new(Protocol::Bolt, 4096).unwrap();
        let _ = splitter.feed(&bytes, |_| {});
    }

    #[test]
    fn sofa_hessian_never_panics(bytes in proptest::collection::vec(sofa_hessian_byte(), 0..300)) {
        let _ = sofa_hessian::error_message(&bytes);
    }

    #[test]
    fn sofa_hessian_mutated_answers_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut answer = sofa_error_answer();
        let i = at.index(answer.len());
        answer[i] = byte;
        let _ = sofa_hessian::error_message(&answer);
    }

    #[test]
    fn bolt_mutated_frames_never_panic(frame in bolt_frame(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut frame = frame;
        let i = at.index(frame.len());
        frame[i] = byte;
        let _ = Bolt::head(&frame);
        let _ = Bolt::request_meta(&frame, true);
        let _ = bolt::decode_request(&frame);
        let _ = bolt::decode_response(&frame);
        if let Ok(head) = Bolt::head(&frame) {
            let _ = Bolt::refusal(&frame, &head, layotto_fast_native::codec::Refusal::NoService, "");
        }
    }

    #[test]
    fn dubbo_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Dubbo::frame_len(&bytes);
        let _ = Dubbo::head(&bytes);
        let _ = Dubbo::request_meta(&bytes, true);
        let _ = dubbo::decode_response(&bytes);
        let mut copy = bytes.clone();
        Dubbo::set_request_id(&mut copy, 9);
        let mut decoder = Decoder::new(&bytes);
        while decoder.read_value().is_ok() && !decoder.at_end() {}
    }

    #[test]
    fn dubbo_mutated_requests_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(), text in "\\PC{0,40}") {
        let invocation = dubbo::Invocation {
            dubbo_version: "2.0.2".into(),
            path: "com.example.EchoService".into(),
            version: "1.0".into(),
            method: "echo".into(),
            param_types: "Ljava/lang/String;".into(),
            args: vec![Value::String(text)],
            attachments: vec![("zone".into(), Value::String("gz".into()))],
        };
        let mut frame = dubbo::encode_request(5, &invocation, true);
        prop_assert_eq!(&dubbo::decode_request(&frame).unwrap(), &invocation);
        let i = at.index(frame.len());
        frame[i] = byte;
        let _ = Dubbo::head(&frame);
        let _ = Dubbo::request_meta(&frame, true);
    }

    #[test]
    fn hessian_round_trips_strings_and_numbers(text in "\\PC{0,100}", n in any::<i64>(), x in any::<f64>()) {
        let values = vec![Value::String(text), Value::Long(n), Value::Int(n as i32)];
        let mut encoder = Encoder::new();
        for v in &values {
            encoder.write_value(v);
        }
        encoder.write_value(&Value::Double(x));
        let bytes = encoder.into_bytes();
        let mut decoder = Decoder::new(&bytes);
        for v in &values {
            prop_assert_eq!(&decoder.read_value().unwrap(), v);
        }
        match decoder.read_value().unwrap() {
            Value::Double(y) => prop_assert!(y == x || (x.is_nan() && y.is_nan())),
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

#[test]
fn the_mutated_sofa_answer_is_read_unmutated() {
    assert_eq!(
        sofa_hessian::error_message(&sofa_error_answer()).as_deref(),
        Some("E: x")
    );
}
