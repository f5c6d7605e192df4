//! Helpers the benchmarks share (a directory module, so Cargo does not take it for a bench).

/// A `kB` field of /proc/self/status such as `VmRSS:` or `VmHWM:` (0 where there is none).
pub fn proc_status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
