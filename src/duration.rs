//! Durations in configuration: written the way people write them (`"8s"`, `"250ms"`, `"24h"`,
//! `"1h 30m"`: humantime's syntax), parsed once at load into `Duration`s, and written back the
//! same way. The keys they replaced name their unit (`lease_ms`, `tolerance_secs`,
//! `ttl_hours`); [`Unit::of_key`] reads a bare integer under such a key. A leaf module.
//!
//! On a field: `#[serde(with = "crate::duration::human")]` (`human_list` for a list,
//! `human_option` for an optional one).

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// How a duration is written: `"8s"`, `"250ms"`, `"1h 30m"`.
const EXAMPLES: &str = r#""8s", "250ms", "24h" or "1h 30m""#;

/// A human duration; the error names the value and shows how to write one.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. {EXAMPLES}"))
}

/// The way [`parse`] reads it back: `"8s"`, `"1h 30m"`, `"0s"`.
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// The unit a key's name ends in, which is the unit of a bare integer under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Secs,
    Hours,
}

impl Unit {
    /// `lease_ms` is `lease` in milliseconds, `tolerance_secs` `tolerance` in seconds,
    /// `ttl_hours` `ttl` in hours; other keys name no unit.
    pub fn of_key(key: &str) -> Option<(&str, Unit)> {
        [
            ("_ms", Unit::Millis),
            ("_secs", Unit::Secs),
            ("_hours", Unit::Hours),
        ]
        .into_iter()
        .find_map(|(suffix, unit)| {
            key.strip_suffix(suffix)
                .filter(|name| !name.is_empty())
                .map(|name| (name, unit))
        })
    }

    /// `count` of this unit; `None` past what a `Duration` holds.
    pub fn times(self, count: u64) -> Option<Duration> {
        match self {
            Unit::Millis => Some(Duration::from_millis(count)),
            Unit::Secs => Some(Duration::from_secs(count)),
            Unit::Hours => count.checked_mul(3600).map(Duration::from_secs),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Millis => "milliseconds",
            Unit::Secs => "seconds",
            Unit::Hours => "hours",
        }
    }
}

/// A `Duration` that (de)serializes as a human string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Human(pub Duration);

impl Serialize for Human {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(self.0))
    }
}

impl<'de> Deserialize<'de> for Human {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Human;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a duration with its unit, such as {EXAMPLES}")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Human, E> {
                parse(text).map(Human).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// `#[serde(with = "crate::duration::human")]` for a `Duration`.
pub mod human {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        Human(*value).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Human::deserialize(deserializer).map(|h| h.0)
    }
}

/// `#[serde(with = "crate::duration::human_list")]` for a `Vec<Duration>`.
pub mod human_list {
    use super::*;

    pub fn serialize<S: Serializer>(value: &[Duration], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(value.iter().copied().map(Human))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        Vec::<Human>::deserialize(deserializer).map(|v| v.into_iter().map(|h| h.0).collect())
    }
}

/// `#[serde(with = "crate::duration::human_option")]` for an `Option<Duration>`.
pub mod human_option {
    use super::*;

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.map(Human).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<Human>::deserialize(deserializer).map(|o| o.map(|h| h.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Settings {
        #[serde(with = "human")]
        one: Duration,
        #[serde(with = "human_list", default)]
        many: Vec<Duration>,
        #[serde(with = "human_option", default)]
        maybe: Option<Duration>,
    }

    fn settings(json: &str) -> Result<Settings, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_human_strings() {
        for (text, want) in [
            ("8s", Duration::from_secs(8)),
            ("250ms", Duration::from_millis(250)),
            ("24h", Duration::from_secs(24 * 3600)),
            ("1h 30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            (" 2m ", Duration::from_secs(120)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
        let s = settings(r#"{"one": "8s", "many": ["5s", "5m"], "maybe": "1h"}"#).unwrap();
        assert_eq!(
            s,
            Settings {
                one: Duration::from_secs(8),
                many: vec![Duration::from_secs(5), Duration::from_secs(300)],
                maybe: Some(Duration::from_secs(3600)),
            }
        );
        assert_eq!(settings(r#"{"one": "1s"}"#).unwrap().maybe, None);
    }

    #[test]
    fn refuses_what_is_not_a_duration_naming_it() {
        for text in ["eight seconds", "8", "-5s", "", "8 parsecs"] {
            let error = parse(text).unwrap_err();
            assert!(
                error.starts_with(&format!("`{text}` is not a duration (")),
                "{error}"
            );
            assert!(error.contains(r#"e.g. "8s""#), "{error}");
        }
        let error = settings(r#"{"one": "soon"}"#).unwrap_err();
        assert!(error.contains("`soon` is not a duration"), "{error}");
        let error = settings(r#"{"one": 2000}"#).unwrap_err();
        assert!(
            error.contains(r#"integer `2000`, expected a duration with its unit, such as "8s""#),
            "{error}"
        );
        let error = settings(r#"{"one": "1s", "many": ["5s", 5]}"#).unwrap_err();
        assert!(error.contains("integer `5`"), "{error}");
    }

    #[test]
    fn integers_take_the_unit_their_key_names() {
        assert_eq!(Unit::of_key("lease_ms"), Some(("lease", Unit::Millis)));
        assert_eq!(
            Unit::of_key("tolerance_secs"),
            Some(("tolerance", Unit::Secs))
        );
        assert_eq!(Unit::of_key("ttl_hours"), Some(("ttl", Unit::Hours)));
        assert_eq!(Unit::of_key("lease"), None);
        assert_eq!(Unit::of_key("_ms"), None);
        assert_eq!(Unit::of_key("max_body_bytes"), None);
        assert_eq!(Unit::Millis.times(2_000), Some(Duration::from_secs(2)));
        assert_eq!(Unit::Secs.times(300), Some(Duration::from_secs(300)));
        assert_eq!(Unit::Hours.times(24), Some(Duration::from_secs(86_400)));
        assert_eq!(Unit::Hours.times(u64::MAX), None);
    }

    #[test]
    fn writes_what_it_reads() {
        let s = Settings {
            one: Duration::from_millis(8_000),
            many: [5, 300, 1800, 7200, 18000, 36000]
                .map(Duration::from_secs)
                .to_vec(),
            maybe: Some(Duration::from_millis(5_400_250)),
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "one": "8s",
                "many": ["5s", "5m", "30m", "2h", "5h", "10h"],
                "maybe": "1h 30m 250ms",
            })
        );
        assert_eq!(serde_json::from_value::<Settings>(json).unwrap(), s);
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(36_000_000),
            Duration::from_secs(400 * 86_400 + 1),
        ] {
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
    }
}
