//! The one place that turns values into bytes: log entries, state-machine values, snapshots
//! and cluster messages all go through `encode`/`decode`.
//!
//! Format: a 2-byte big-endian format version, then bincode 2 (serde mode, standard config).
//! bincode 2.0.1 is marked unmaintained (RUSTSEC-2025-0141); keeping it behind this module
//! lets us swap it for another encoding under a new version number.
//!
//! Byte strings: serde hands a plain `Vec<u8>` to bincode as a sequence, one call per
//! byte. In a debug build a 512 KiB byte string took 61 ms to encode and 53 ms to decode
//! (0.6 ms each as one block; 1.7/2.1 ms against 0.9/1.1 ms in release): a log entry of
//! offline messages then took longer than a heartbeat interval to send, and a loaded
//! test cluster could not replicate it at all. Every large byte field is therefore marked
//! `serde_bytes` (or `byte_pairs` below), which bincode writes as one block. The bytes
//! are the same either way (a length, then the bytes), so stored data and other
//! versions' messages read as before (`tests::byte_fields_keep_their_encoding`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::PROTOCOL_VERSION;

/// The format version written by this build.
pub const CODEC_VERSION: u16 = PROTOCOL_VERSION;
/// The oldest format version this build still reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;

/// Largest value `decode` will materialise: matches the RPC frame cap so that a hostile
/// length field cannot make us allocate more than a frame could carry.
pub const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// Largest snapshot `decode_snapshot` will materialise (snapshots are held in
/// memory whole until they are streamed).
pub const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024 * 1024;

const HEADER_LEN: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("value is {len} bytes, too short for the {HEADER_LEN}-byte version header")]
    MissingHeader { len: usize },
    #[error(
        "format version {found} is not supported by this node (it reads versions \
         {OLDEST_READABLE_VERSION}..={CODEC_VERSION}); upgrade this node"
    )]
    UnknownVersion { found: u16 },
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("{extra} unexpected bytes after the encoded value")]
    TrailingBytes { extra: usize },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let body = bincode::serde::encode_to_vec(value, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&CODEC_VERSION.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Length of `encode(value)` without building it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(HEADER_LEN + size.bytes_written)
}

/// The format version `bytes` were written with, if this build reads it. Lets a caller
/// whose type changed shape between versions pick the type to decode into.
pub fn version(bytes: &[u8]) -> Result<u16, CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::MissingHeader { len: bytes.len() });
    }
    let version = u16::from_be_bytes([bytes[0], bytes[1]]);
    if !(OLDEST_READABLE_VERSION..=CODEC_VERSION).contains(&version) {
        return Err(CodecError::UnknownVersion { found: version });
    }
    Ok(version)
}

fn decode_with<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<T, CodecError> {
    version(bytes)?;
    let body = &bytes[HEADER_LEN..];
    let (value, used) = bincode::serde::decode_from_slice(body, config)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes {
            extra: body.len() - used,
        });
    }
    Ok(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_with(bytes, config())
}

/// Decode a whole snapshot. It holds the entire state machine, so the frame
/// cap of `decode` does not fit it: offline queues alone can pass 64 MiB. It
/// comes from our own storage or, in chunks, from the leader, never in one
/// frame from an unauthenticated peer.
pub fn decode_snapshot<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_with(
        bytes,
        bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>(),
    )
}

/// `serde(with)` for lists of (key, byte string) pairs: each byte string as one block
/// (see "Byte strings" above).
pub(crate) mod byte_pairs {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<K: Serialize, S: Serializer>(
        pairs: &[(K, Vec<u8>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(pairs.iter().map(|(k, v)| (k, Bytes::new(v))))
    }

    pub fn deserialize<'de, K: DeserializeOwned, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(K, Vec<u8>)>, D::Error> {
        let pairs = Vec::<(K, ByteBuf)>::deserialize(deserializer)?;
        Ok(pairs.into_iter().map(|(k, v)| (k, v.into_vec())).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    /// The shape of the byte fields before they were marked `serde_bytes`.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Before {
        value: Vec<u8>,
        pairs: Vec<(String, Vec<u8>)>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct After {
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        #[serde(with = "byte_pairs")]
        pairs: Vec<(String, Vec<u8>)>,
    }

    #[test]
    fn byte_fields_keep_their_encoding() {
        let value: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let pairs = vec![("a".to_string(), vec![1, 2, 3]), ("b".to_string(), vec![])];
        let before = Before {
            value: value.clone(),
            pairs: pairs.clone(),
        };
        let after = After { value, pairs };
        let old = encode(&before).unwrap();
        assert_eq!(
            old,
            encode(&after).unwrap(),
            "the same bytes on disk and wire"
        );
        assert_eq!(decode::<After>(&old).unwrap(), after);
        assert_eq!(decode::<Before>(&encode(&after).unwrap()).unwrap(), before);
    }

    #[test]
    fn a_byte_string_longer_than_its_input_is_refused() {
        let mut bytes = encode(&After {
            value: vec![9; 100],
            pairs: Vec::new(),
        })
        .unwrap();
        bytes.truncate(50);
        assert!(matches!(
            decode::<After>(&bytes),
            Err(CodecError::Decode(_))
        ));
    }
}
