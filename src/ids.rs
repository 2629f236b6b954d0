//! Prefixed, typed identifiers: `job_` / `mem_` + 32 lowercase hex digits of a UUIDv7.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {prefix} followed by 32 lowercase hex digits")]
pub struct IdParseError {
    pub prefix: &'static str,
}

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
                f.write_str($prefix)?;
                f.write_str(self.0.simple().encode_lower(&mut buf))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = IdParseError { prefix: $prefix };
                let hex = s.strip_prefix($prefix).ok_or(err.clone())?;
                if hex.len() != 32
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(err);
                }
                Uuid::try_parse(hex).map(Self).map_err(|_| err)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .pattern(Some(concat!("^", $prefix, "[0-9a-f]{32}$")))
                    .examples([serde_json::json!(concat!(
                        $prefix,
                        "0192f3a4b5c67d8e9f00112233445566"
                    ))])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

prefixed_id!(JobId, "job_");
prefixed_id!(MemoryId, "mem_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_lowercase_hex() {
        let id = JobId::new();
        let text = id.to_string();
        assert!(text.starts_with("job_"));
        assert_eq!(text.len(), 36);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<JobId>().unwrap(), id);
    }

    #[test]
    fn rejects_other_prefixes_and_shapes() {
        let id = JobId::new().to_string();
        assert!(id.replacen("job_", "mem_", 1).parse::<JobId>().is_err());
        assert!(
            id.to_uppercase()
                .replacen("JOB_", "job_", 1)
                .parse::<JobId>()
                .is_err()
        );
        assert!("job_123".parse::<JobId>().is_err());
        assert!(format!("{id}0").parse::<JobId>().is_err());
        assert!(
            "job_0192f3a4-b5c6-7d8e-9f00-112233445566"
                .parse::<JobId>()
                .is_err()
        );
    }

    #[test]
    fn new_ids_are_time_ordered() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b);
    }
}
