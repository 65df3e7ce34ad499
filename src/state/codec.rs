//! Values in the store are bincode behind a format-version byte, so the format can evolve (and bincode,
//! now unmaintained, can be replaced) without a silent misread.

use super::StoreError;
use serde::{Serialize, de::DeserializeOwned};

/// Current value format.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes `v` with the version byte in front.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_VERSION];
    let body =
        bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(|e| StoreError::Codec(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a value written by [`encode`]; an unknown version is an error, never a guess.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| StoreError::Codec(e.to_string())),
        Some((v, _)) => Err(StoreError::Codec(format!("unknown value format version {v}"))),
        None => Err(StoreError::Codec("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_versions() {
        let v = (42u64, "x".to_string());
        let bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u64, String)>(&bytes).unwrap(), v);
        let mut bad = bytes.clone();
        bad[0] = 99;
        assert!(decode::<(u64, String)>(&bad).is_err());
    }
}
