//! Value types with GitLab Runner's decoding quirks: Go durations, string-or-array pull
//! policies and times written either as TOML datetimes or RFC 3339 strings.

use std::{fmt, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, de};

/// A duration written as a Go duration string (`"15m0s"`, `"1h30m"`, `"500ms"`) or as a TOML
/// integer counting nanoseconds, as gitlab-runner reads `time.Duration` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct GoDuration {
    nanos: i128,
}

impl GoDuration {
    /// A duration from whole nanoseconds.
    pub fn from_nanos(nanos: i128) -> Self {
        Self { nanos }
    }

    /// The duration in nanoseconds (negative durations are allowed, as in Go).
    pub fn as_nanos(self) -> i128 {
        self.nanos
    }

    /// The duration as a [`Duration`], or `None` when it is zero or negative (gitlab-runner then
    /// uses the key's default).
    pub fn positive(self) -> Option<Duration> {
        u64::try_from(self.nanos).ok().filter(|n| *n > 0).map(Duration::from_nanos)
    }

    /// Parses a Go duration string: an optional sign, then one or more decimal numbers (with an
    /// optional fraction) each followed by a unit `ns`, `us`, `µs`, `ms`, `s`, `m` or `h`; or `0`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid duration {text:?}: expected a Go duration such as \"15m0s\", \"1h30m\" or \"500ms\""
            )
        };
        let (negative, mut rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        if rest == "0" {
            return Ok(Self { nanos: 0 });
        }
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let int_part = &rest[..int_len];
            rest = &rest[int_len..];
            let mut frac_part = "";
            if let Some(r) = rest.strip_prefix('.') {
                let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
                frac_part = &r[..frac_len];
                rest = &r[frac_len..];
            }
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(invalid());
            }
            let unit_len = rest
                .char_indices()
                .find(|(_, c)| c.is_ascii_digit() || *c == '.')
                .map_or(rest.len(), |(i, _)| i);
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let scale: i128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => {
                    return Err(format!(
                        "invalid duration {text:?}: missing unit (use ns, us, ms, s, m or h)"
                    ));
                }
                other => {
                    return Err(format!(
                        "invalid duration {text:?}: unknown unit {other:?} (use ns, us, ms, s, m or h)"
                    ));
                }
            };
            let whole: i128 =
                if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| invalid())? };
            let mut value = whole.checked_mul(scale).ok_or_else(invalid)?;
            if !frac_part.is_empty() {
                let digits = frac_part.len().min(18);
                let frac: i128 = frac_part[..digits].parse().map_err(|_| invalid())?;
                value += frac * scale / 10i128.pow(digits as u32);
            }
            total = total.checked_add(value).ok_or_else(invalid)?;
        }
        if total > i128::from(i64::MAX) {
            return Err(format!("invalid duration {text:?}: out of range"));
        }
        Ok(Self { nanos: if negative { -total } else { total } })
    }
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `Duration.String()` (`2h0m0s`, `1m30s`, `500ms`, `0s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut n = self.nanos;
        if n == 0 {
            return f.write_str("0s");
        }
        if n < 0 {
            f.write_str("-")?;
            n = -n;
        }
        if n < 1_000_000_000 {
            return match n {
                n if n < 1_000 => write!(f, "{n}ns"),
                n if n < 1_000_000 => write!(f, "{}µs", trim_fraction(n, 1_000)),
                n => write!(f, "{}ms", trim_fraction(n, 1_000_000)),
            };
        }
        let hours = n / 3_600_000_000_000;
        let minutes = (n / 60_000_000_000) % 60;
        let seconds = trim_fraction(n % 60_000_000_000, 1_000_000_000);
        if hours > 0 {
            write!(f, "{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            write!(f, "{minutes}m{seconds}s")
        } else {
            write!(f, "{seconds}s")
        }
    }
}

fn trim_fraction(value: i128, unit: i128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl From<GoDuration> for String {
    fn from(value: GoDuration) -> Self {
        value.to_string()
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration string such as \"15m0s\" or an integer of nanoseconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                Ok(GoDuration { nanos: i128::from(v) })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                Ok(GoDuration { nanos: i128::from(v) })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                GoDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GoDuration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Go duration string (\"15m0s\", \"1h30m\", \"500ms\") or an integer of nanoseconds.",
            "type": ["string", "integer"]
        })
    }
}

/// One string or an array of strings (`pull_policy = "always"` or `pull_policy = ["always", "if-not-present"]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct StringOrArray(pub Vec<String>);

impl<'de> Deserialize<'de> for StringOrArray {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = StringOrArray;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOrArray, E> {
                Ok(StringOrArray(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StringOrArray, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StringOrArray(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for StringOrArray {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StringOrArray".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [ { "type": "string" }, { "type": "array", "items": { "type": "string" } } ]
        })
    }
}

/// A point in time written as a TOML datetime (`0001-01-01T00:00:00Z`) or an RFC 3339 string.
/// Kept as its RFC 3339 text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TimeValue(pub String);

impl<'de> Deserialize<'de> for TimeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Datetime(toml::value::Datetime),
            Text(String),
        }
        match Either::deserialize(deserializer).map_err(|_| {
            de::Error::custom("invalid time: expected a TOML datetime or an RFC 3339 string")
        })? {
            Either::Datetime(dt) => Ok(TimeValue(dt.to_string())),
            Either::Text(text) => {
                text.parse::<toml::value::Datetime>().map_err(|_| {
                    de::Error::custom(format!(
                        "invalid time {text:?}: expected RFC 3339, e.g. \"2026-01-31T12:00:00Z\""
                    ))
                })?;
                Ok(TimeValue(text))
            }
        }
    }
}

impl JsonSchema for TimeValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeValue".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "description": "A TOML datetime or an RFC 3339 string.", "type": "string" })
    }
}

/// Go's `strconv.ParseBool`, as gitlab-runner reads `FF_*` variables: `1 t T TRUE true True`
/// and `0 f F FALSE false False`; anything else is `None`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, nanos: i128) {
        assert_eq!(GoDuration::parse(text), Ok(GoDuration::from_nanos(nanos)), "{text}");
    }

    #[test]
    fn go_durations_parse_like_go() {
        check("0", 0);
        check("15m0s", 15 * 60_000_000_000);
        check("1h30m", 90 * 60_000_000_000);
        check("500ms", 500_000_000);
        check("1.5s", 1_500_000_000);
        check("300s", 300_000_000_000);
        check("-2m", -120_000_000_000);
        check("1h2m3s4ms5us6ns", 3_723_004_005_006);
        check(".5h", 1_800_000_000_000);
    }

    #[test]
    fn malformed_go_durations_are_rejected_with_a_reason() {
        for bad in ["", "5", "1x", "h", "1.h2", "--1s", "1 s"] {
            assert!(GoDuration::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(GoDuration::parse("5").unwrap_err().contains("missing unit"));
    }

    #[test]
    fn go_durations_format_like_go() {
        for (nanos, text) in [
            (0, "0s"),
            (7_200_000_000_000, "2h0m0s"),
            (90_000_000_000, "1m30s"),
            (500_000_000, "500ms"),
            (1_500_000_000, "1.5s"),
            (999, "999ns"),
        ] {
            assert_eq!(GoDuration::from_nanos(nanos).to_string(), text);
        }
    }

    #[test]
    fn go_booleans_parse() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(parse_go_bool(" true"), None);
    }
}
