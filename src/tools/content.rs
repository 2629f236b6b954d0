//! Bytes in JSON, for the tools that move them (`http.fetch`, `fs.*`): text when they are
//! UTF-8, base64 otherwise. NUL counts as binary: PostgreSQL's jsonb, where results are
//! stored, cannot hold it in a string.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Text,
    Base64,
}

/// `bytes` as a JSON string. `cut` says the bytes were cut at a limit: a character split by
/// the cut is dropped rather than turning the whole body into base64.
pub fn encode(bytes: &[u8], cut: bool) -> (Encoding, String) {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => Some(text),
        // `error_len() == None`: only the end is an incomplete character.
        Err(e) if cut && e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    match text {
        Some(text) if !text.contains('\0') => (Encoding::Text, text.to_owned()),
        _ => (Encoding::Base64, STANDARD.encode(bytes)),
    }
}

/// What a caller sent, as bytes.
pub fn decode(content: &str, encoding: Encoding) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Text => Ok(content.as_bytes().to_vec()),
        Encoding::Base64 => STANDARD
            .decode(content)
            .map_err(|e| format!("is not base64 ({e})")),
    }
}

/// The JSON Schema of an `encoding` input.
pub fn encoding_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "string",
        "enum": ["text", "base64"],
        "default": "text",
        "description": "How `content` is written: UTF-8 text, or base64 for any bytes."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_when_it_can_be_base64_otherwise() {
        use Encoding::{Base64, Text};
        #[rustfmt::skip]
        let cases: &[(&[u8], bool, Encoding, &str)] = &[
            (b"hello", false, Text, "hello"),
            (b"", false, Text, ""),
            ("h\u{e9}".as_bytes(), false, Text, "h\u{e9}"),
            // A cut through "é" (c3 a9) keeps the text before it…
            (b"h\xc3", true, Text, "h"),
            // …but the same bytes uncut are not UTF-8.
            (b"h\xc3", false, Base64, "aMM="),
            (b"\xff\xfe", true, Base64, "//4="),
            (b"a\0b", false, Base64, "YQBi"),
        ];
        for (bytes, cut, encoding, text) in cases {
            assert_eq!(
                encode(bytes, *cut),
                (*encoding, text.to_string()),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn decode_reads_both() {
        assert_eq!(decode("hi", Encoding::Text).unwrap(), b"hi");
        assert_eq!(decode("YQBi", Encoding::Base64).unwrap(), b"a\0b");
        assert!(decode("not base64!", Encoding::Base64).is_err());
    }
}
