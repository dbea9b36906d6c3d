//! The few Linux `/proc` files `sysinfo` does not read for us: per-device I/O operations and busy
//! time from `/proc/diskstats`, and the own process's threads and context switches from
//! `/proc/self/status`.

use std::collections::HashMap;

/// One block device's line of `/proc/diskstats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DiskStat {
    pub(super) reads: u64,
    pub(super) sectors_read: u64,
    pub(super) writes: u64,
    pub(super) sectors_written: u64,
    /// Milliseconds during which the device had I/O in flight.
    pub(super) busy_ms: u64,
}

/// `/proc/diskstats` counts sectors of 512 bytes whatever the device's own sector size
/// (Documentation/admin-guide/iostats.rst).
pub(super) const SECTOR_BYTES: u64 = 512;

/// Every device of `/proc/diskstats` by kernel name (`vda`, `nvme0n1p2`, `dm-0`); empty if the file
/// cannot be read.
pub(super) fn diskstats() -> HashMap<String, DiskStat> {
    std::fs::read_to_string("/proc/diskstats")
        .map(|text| parse_diskstats(&text))
        .unwrap_or_default()
}

fn parse_diskstats(text: &str) -> HashMap<String, DiskStat> {
    text.lines()
        .filter_map(|line| {
            // major minor name reads merged sectors ms writes merged sectors ms in-flight io-ms ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
            let stat = DiskStat {
                reads: num(3)?,
                sectors_read: num(5)?,
                writes: num(7)?,
                sectors_written: num(9)?,
                busy_ms: num(12)?,
            };
            Some(((*fields.get(2)?).to_owned(), stat))
        })
        .collect()
}

/// What the own process's `/proc/self/status` says about threads and scheduling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Status {
    pub(super) threads: Option<u64>,
    pub(super) voluntary_switches: Option<u64>,
    pub(super) involuntary_switches: Option<u64>,
}

pub(super) fn self_status() -> Status {
    std::fs::read_to_string("/proc/self/status")
        .map(|text| parse_status(&text))
        .unwrap_or_default()
}

fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().parse::<u64>().ok();
        match key {
            "Threads" => status.threads = value,
            "voluntary_ctxt_switches" => status.voluntary_switches = value,
            "nonvoluntary_ctxt_switches" => status.involuntary_switches = value,
            _ => {}
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_diskstats_lines_and_skips_short_ones() {
        let text = " 254       0 vda 56446 7618 4494610 53560 31799 66011 20986080 78057 1 12172 132628 10573 38 970464 754 4993 256\n\
                    7 0 loop0 0 0 0 0\n";
        let stats = parse_diskstats(text);
        assert_eq!(stats.len(), 1);
        assert_eq!(
            stats["vda"],
            DiskStat {
                reads: 56446,
                sectors_read: 4494610,
                writes: 31799,
                sectors_written: 20986080,
                busy_ms: 12172,
            }
        );
    }

    #[test]
    fn parses_threads_and_context_switches_from_status() {
        let text = "Name:\tcargo\nThreads:\t7\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(
            parse_status(text),
            Status {
                threads: Some(7),
                voluntary_switches: Some(120),
                involuntary_switches: Some(3),
            }
        );
    }
}
