//! U+0000, which PostgreSQL's `text` and `jsonb` cannot hold: found and refused at the edge
//! (naming where it is), dropped from what tools and remote peers send us.

use std::borrow::Cow;

use serde_json::Value;

/// Where the first NUL in `v` is, as a path under `root` (`inputs.a[1].b`), if any.
pub fn find(v: &Value, root: &str) -> Option<String> {
    fn walk(v: &Value, path: &mut String) -> Option<String> {
        match v {
            Value::String(s) if s.contains('\0') => Some(path.clone()),
            Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                path.truncate(len);
                found
            }),
            Value::Object(map) => map.iter().find_map(|(k, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                let found = if k.contains('\0') {
                    Some(path.replace('\0', "\\u0000"))
                } else {
                    walk(item, path)
                };
                path.truncate(len);
                found
            }),
            _ => None,
        }
    }
    walk(v, &mut root.to_owned())
}

/// The text without NULs.
pub fn strip(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', ""))
    } else {
        Cow::Borrowed(s)
    }
}

/// Drops every NUL from the strings and keys of `v`.
pub fn strip_value(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => s.retain(|c| c != '\0'),
        Value::Array(items) => items.iter_mut().for_each(strip_value),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
                for (k, val) in entries {
                    map.insert(k.replace('\0', ""), val);
                }
            }
            map.values_mut().for_each(strip_value);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_nul_characters_by_path() {
        let v = json!({"a": ["ok", {"b": "x\u{0}"}]});
        assert_eq!(find(&v, "inputs"), Some("inputs.a[1].b".into()));
        assert_eq!(find(&v, ""), Some("a[1].b".into()));
        assert_eq!(find(&json!({"k\u{0}": 1}), ""), Some("k\\u0000".into()));
        assert_eq!(find(&json!({"a": "fine"}), "inputs"), None);
        assert_eq!(find(&json!("x\u{0}"), "body"), Some("body".into()));
    }

    #[test]
    fn strips_them_everywhere() {
        let mut v = json!({"o\u{0}ut": ["a\u{0}b", {"c": "\u{0}"}], "n": 1});
        strip_value(&mut v);
        assert_eq!(v, json!({"out": ["ab", {"c": ""}], "n": 1}));
        assert_eq!(strip("a\0b"), "ab");
        assert!(matches!(strip("ab"), Cow::Borrowed(_)));
    }
}
