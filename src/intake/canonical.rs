//! Canonical JSON for hashing: object keys sorted, no whitespace, written straight into the
//! hasher (no intermediate string), so equal documents hash equally however they were sent.

use std::io;

use serde_json::Value;
use sha2::Digest;

struct DigestWriter<'a, D>(&'a mut D);

impl<D: Digest> io::Write for DigestWriter<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn write_canonical<D: Digest>(h: &mut D, v: &Value) {
    match v {
        Value::Null => h.update(b"null"),
        Value::Bool(true) => h.update(b"true"),
        Value::Bool(false) => h.update(b"false"),
        Value::Number(n) => h.update(n.to_string().as_bytes()),
        Value::String(s) => write_string(h, s),
        Value::Array(items) => {
            h.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                write_canonical(h, item);
            }
            h.update(b"]");
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            h.update(b"{");
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                write_string(h, k);
                h.update(b":");
                write_canonical(h, val);
            }
            h.update(b"}");
        }
    }
}

fn write_string<D: Digest>(h: &mut D, s: &str) {
    serde_json::to_writer(DigestWriter(h), s).expect("writing to a hasher cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sha2::Sha256;

    fn canonical(v: &Value) -> Vec<u8> {
        let mut h = Sha256::new();
        write_canonical(&mut h, v);
        h.finalize().to_vec()
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "s"}], "a": null}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"s","y":2}]}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
    }

    #[test]
    fn different_values_hash_differently() {
        assert_ne!(canonical(&json!({"a": 1})), canonical(&json!({"a": "1"})));
        assert_ne!(canonical(&json!([1, 2])), canonical(&json!([2, 1])));
        assert_ne!(
            canonical(&json!({"a": "b,c"})),
            canonical(&json!({"a": "b", "c": null}))
        );
    }

    #[test]
    fn matches_the_compact_sorted_serialization() {
        let v = json!({"z": "é\"\n", "a": [true, 1.5, -3]});
        let direct = Sha256::digest("{\"a\":[true,1.5,-3],\"z\":\"é\\\"\\n\"}".as_bytes());
        assert_eq!(canonical(&v), direct.to_vec());
    }
}
