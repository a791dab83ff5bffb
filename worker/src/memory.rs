//! Process and host memory, read from `/proc` (zeros where unavailable).

/// Host memory totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostMemory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Resident set size of this process.
pub fn process_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| kib_field(&s, "VmRSS:"))
        .unwrap_or(0)
}

/// Total and available memory of the host.
pub fn host() -> HostMemory {
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else {
        return HostMemory::default();
    };
    HostMemory {
        total_bytes: kib_field(&info, "MemTotal:").unwrap_or(0),
        available_bytes: kib_field(&info, "MemAvailable:").unwrap_or(0),
    }
}

/// Parses a `Name:   123 kB` line into bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kib_lines() {
        let text = "Name:\tx\nVmRSS:\t  2048 kB\n";
        assert_eq!(kib_field(text, "VmRSS:"), Some(2 * 1024 * 1024));
        assert_eq!(kib_field(text, "VmSwap:"), None);
    }

    #[test]
    fn this_process_has_memory() {
        assert!(process_rss_bytes() > 0);
        assert!(host().total_bytes >= host().available_bytes);
    }
}
