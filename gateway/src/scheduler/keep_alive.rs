//! How long an idle model stays loaded, as Ollama and Docker Model Runner
//! spell it: a duration (`"5m"`, `"90s"`, `"1h30m"`, `"250ms"`), a number
//! of seconds, `0` (unload as soon as it is idle) or any negative value
//! (never unload).

use std::time::Duration;

use serde::Deserialize;

/// The default: five minutes, as Ollama and Docker Model Runner.
pub const DEFAULT_KEEP_ALIVE: KeepAlive = KeepAlive::For(Duration::from_secs(300));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Unload once idle this long (zero: as soon as it is idle).
    For(Duration),
    /// Never unload for idleness.
    Forever,
}

impl KeepAlive {
    /// Parses `"5m"`, `"90s"`, `"1h30m"`, `"250ms"`, `"0"`, `"-1"`, `"300"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the keep-alive must not be empty".into());
        }
        if text.starts_with('-') {
            return Ok(Self::Forever);
        }
        if let Ok(seconds) = text.parse::<f64>() {
            return Self::from_seconds(seconds);
        }
        let invalid =
            || format!("`{text}` is not a duration (e.g. \"5m\", \"90s\", \"0\", \"-1\")");
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(invalid)?;
            let (number, tail) = rest.split_at(digits);
            let number: f64 = number.parse().map_err(|_| invalid())?;
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let seconds = match unit {
                "ms" => number / 1000.0,
                "s" => number,
                "m" => number * 60.0,
                "h" => number * 3600.0,
                _ => return Err(invalid()),
            };
            total += Duration::try_from_secs_f64(seconds).map_err(|_| invalid())?;
            rest = tail;
        }
        Ok(Self::For(total))
    }

    /// A number of seconds: negative is forever.
    pub fn from_seconds(seconds: f64) -> Result<Self, String> {
        if seconds.is_nan() {
            return Err("the keep-alive must be a number of seconds".into());
        }
        if seconds < 0.0 {
            return Ok(Self::Forever);
        }
        Duration::try_from_secs_f64(seconds)
            .map(Self::For)
            .map_err(|_| format!("{seconds} seconds is too long a keep-alive; use -1 for ever"))
    }

    /// Whether a model idle for `idle` should be unloaded.
    pub fn expired(self, idle: Duration) -> bool {
        match self {
            Self::For(limit) => idle >= limit,
            Self::Forever => false,
        }
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(s) => Self::from_seconds(s),
            Raw::Text(t) => Self::parse(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollamas_spellings_parse() {
        let secs = |s| KeepAlive::For(Duration::from_secs(s));
        assert_eq!(KeepAlive::parse("5m"), Ok(secs(300)));
        assert_eq!(KeepAlive::parse("1h30m"), Ok(secs(5400)));
        assert_eq!(KeepAlive::parse("90s"), Ok(secs(90)));
        assert_eq!(
            KeepAlive::parse("250ms"),
            Ok(KeepAlive::For(Duration::from_millis(250)))
        );
        assert_eq!(KeepAlive::parse("0"), Ok(secs(0)));
        assert_eq!(KeepAlive::parse("300"), Ok(secs(300)));
        assert_eq!(KeepAlive::parse("-1"), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse("-1m"), Ok(KeepAlive::Forever));
        for bad in ["", "soon", "5 minutes", "5d", "m", "1e400"] {
            assert!(KeepAlive::parse(bad).is_err(), "{bad}");
        }
        assert!(KeepAlive::from_seconds(f64::NAN).is_err());
        assert!(KeepAlive::from_seconds(1e300).is_err());
    }

    #[test]
    fn expiry() {
        assert!(KeepAlive::For(Duration::ZERO).expired(Duration::ZERO));
        assert!(!KeepAlive::For(Duration::from_secs(2)).expired(Duration::from_secs(1)));
        assert!(!KeepAlive::Forever.expired(Duration::MAX));
    }
}
