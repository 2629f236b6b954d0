//! Answers that must fit a caller's limit (a ChatGPT Action reads at most 100,000 characters):
//! the one part that can be large — a result, inputs — is replaced by a marker with a preview,
//! its full size, and where to read the whole.

use serde_json::{Value, json};

/// Room the marker's own members take, beyond its preview.
const MARKER_CHARS: usize = 200;

/// Fits `part` into what is left of `max_chars` once `rest_chars` (the answer without it) is
/// spent. Returns whether it had to cut.
pub fn bound(part: &mut Option<Value>, rest_chars: usize, max_chars: usize, full_at: &str) -> bool {
    let Some(value) = part.as_ref() else {
        return false;
    };
    let text = value.to_string();
    let total = text.chars().count();
    if rest_chars + total <= max_chars {
        return false;
    }
    let budget = max_chars.saturating_sub(rest_chars + MARKER_CHARS + full_at.len());
    // JSON-escaping the preview can lengthen it: cut until the encoded preview fits.
    let mut keep = budget;
    let preview = loop {
        let candidate: String = text.chars().take(keep).collect();
        let encoded = serde_json::to_string(&candidate)
            .expect("a string encodes")
            .chars()
            .count();
        if encoded <= budget || keep == 0 {
            break candidate;
        }
        // Shrink in proportion (escaping lengthens evenly enough), always by at least one.
        keep = (keep * budget / encoded).min(keep - 1);
    };
    *part = Some(json!({
        "truncated": true,
        "total_chars": total,
        "preview": preview,
        "full_at": full_at,
    }));
    true
}

/// The length of `v` as JSON text, in characters.
pub fn json_chars(v: &impl serde::Serialize) -> usize {
    serde_json::to_string(v)
        .map(|s| s.chars().count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_parts_stay_large_ones_become_a_marker_that_fits() {
        let mut small = Some(json!({"a": 1}));
        assert!(!bound(&mut small, 100, 1_000, "/jobs/x"));
        assert_eq!(small, Some(json!({"a": 1})));

        // Quotes double when escaped: the marker must still fit.
        let mut large = Some(json!({"text": "\"".repeat(50_000)}));
        assert!(bound(&mut large, 300, 10_000, "https://h/jobs/job_1"));
        let marker = large.unwrap();
        assert_eq!(marker["truncated"], true);
        assert_eq!(marker["full_at"], "https://h/jobs/job_1");
        assert!(marker["total_chars"].as_u64().unwrap() > 100_000);
        assert!(
            300 + json_chars(&marker) <= 10_000,
            "{}",
            json_chars(&marker)
        );
        assert!(marker["preview"].as_str().unwrap().len() > 1_000);
    }
}
