//! The versioned codec: round trips, and clear errors (never panics) on bad input.

use chorus_raft::codec::{decode, encode, CodecError, CODEC_VERSION};
use chorus_raft::{Command, Request, Route, PROTOCOL_VERSION};

fn request() -> Request {
    Request {
        version: PROTOCOL_VERSION,
        client: u64::MAX,
        serial: 3,
        commands: vec![
            Command::Noop,
            Command::BindResource {
                full_jid: "al@x/ünïcode".into(),
                route: Route {
                    node: 9,
                    session: "s".into(),
                },
            },
        ],
    }
}

#[test]
fn request_round_trips_with_a_version_header() {
    let bytes = encode(&request()).unwrap();
    assert_eq!(&bytes[..2], &CODEC_VERSION.to_be_bytes());
    assert_eq!(decode::<Request>(&bytes).unwrap(), request());
}

#[test]
fn unknown_version_is_a_clear_error() {
    let mut bytes = encode(&request()).unwrap();
    bytes[..2].copy_from_slice(&(CODEC_VERSION + 1).to_be_bytes());
    let err = decode::<Request>(&bytes).unwrap_err();
    assert!(
        matches!(err, CodecError::UnknownVersion { found } if found == CODEC_VERSION + 1),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade"), "{err}");

    bytes[..2].copy_from_slice(&0u16.to_be_bytes());
    assert!(matches!(
        decode::<Request>(&bytes),
        Err(CodecError::UnknownVersion { found: 0 })
    ));
}

#[test]
fn truncated_and_padded_input_are_errors() {
    let bytes = encode(&request()).unwrap();
    assert!(matches!(
        decode::<Request>(&bytes[..1]),
        Err(CodecError::MissingHeader { len: 1 })
    ));
    assert!(matches!(
        decode::<Request>(&bytes[..bytes.len() - 1]),
        Err(CodecError::Decode(_))
    ));
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(matches!(
        decode::<Request>(&padded),
        Err(CodecError::TrailingBytes { extra: 1 })
    ));
}

#[test]
fn garbage_never_panics() {
    // A deterministic spread of byte strings, including huge claimed lengths.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..300usize {
        let mut bytes = CODEC_VERSION.to_be_bytes().to_vec();
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        let _ = decode::<Request>(&bytes);
        let _ = decode::<chorus_raft::Entry>(&bytes);
    }
    let mut huge = CODEC_VERSION.to_be_bytes().to_vec();
    huge.extend_from_slice(&[
        1, 2, 3, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ]);
    assert!(decode::<Request>(&huge).is_err());
}
