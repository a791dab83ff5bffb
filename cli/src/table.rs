//! Output for people: aligned tables, sizes in MB/GB, "3 minutes ago".

use std::time::{SystemTime, UNIX_EPOCH};

/// Columns padded to their widest cell, two spaces apart.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Bytes as Docker shows them: decimal units, two significant decimals.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// How long ago a Unix time was: "just now", "3 minutes ago", "2 days ago".
pub fn ago(unix: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if unix <= 0 {
        return "-".into();
    }
    describe(now - unix, "ago")
}

/// How far off a Unix time is: "in 4 minutes".
pub fn from_now(unix: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let seconds = unix - now;
    if seconds <= 0 {
        "now".into()
    } else {
        format!("in {}", describe(seconds, "").trim_end())
    }
}

fn describe(seconds: i64, suffix: &str) -> String {
    let seconds = seconds.max(0);
    let (n, unit) = match seconds {
        0..=4 if !suffix.is_empty() => return "just now".into(),
        0..=59 => (seconds, "second"),
        60..=3599 => (seconds / 60, "minute"),
        3600..=86_399 => (seconds / 3600, "hour"),
        86_400..=2_591_999 => (seconds / 86_400, "day"),
        2_592_000..=31_535_999 => (seconds / 2_592_000, "month"),
        _ => (seconds / 31_536_000, "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{plural} {suffix}").trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let out = render(
            &["NAME", "SIZE"],
            &[
                vec!["a".into(), "1 B".into()],
                vec!["longer".into(), "2 B".into()],
            ],
        );
        assert_eq!(out, "NAME    SIZE\na       1 B\nlonger  2 B\n");
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(98_355_360), "98.36 MB");
        assert_eq!(size(2_000_000_000), "2.00 GB");
        assert_eq!(describe(1, "ago"), "just now");
        assert_eq!(describe(180, "ago"), "3 minutes ago");
        assert_eq!(describe(3600, "ago"), "1 hour ago");
        assert_eq!(describe(90, ""), "1 minute");
    }
}
