//! Peak resident memory, from `/proc/self/status` (VmHWM). A scenario's own peak comes from a
//! fresh child process (`tcb-backup bench` runs each scenario in one) or, in-process, from
//! resetting the high-water mark through `/proc/self/clear_refs` ("5") before it starts.

/// Peak RSS of this process in bytes (None where /proc is not available).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// Current RSS of this process in bytes.
pub fn current_rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// Resets VmHWM to the current RSS; false when the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&text, key)
}

fn parse_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status_lines() {
        let text = "Name:\tx\nVmHWM:\t   13528 kB\nVmRSS:\t 9000 kB\n";
        assert_eq!(parse_kib(text, "VmHWM:"), Some(13528));
        assert_eq!(parse_kib(text, "VmRSS:"), Some(9000));
        assert_eq!(parse_kib(text, "VmSwap:"), None);
        assert_eq!(parse_kib("VmHWM: lots kB", "VmHWM:"), None);
    }
}
