//! Linux /proc: the server's process tree, its memory (RSS and PSS), and the machine's available memory.

use std::collections::BTreeSet;
use std::fs;

/// One process as /proc/<pid>/stat shows it. `start` (clock ticks after boot) tells a process from a later
/// one that was given the same PID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub start: u64,
    pub zombie: bool,
}

/// Every process, read from /proc/<pid>/stat.
pub fn process_table() -> Vec<ProcEntry> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).filter_map(entry).collect()
}

/// One process's entry, if it exists.
pub fn entry(pid: u32) -> Option<ProcEntry> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A stat line; the command name may hold spaces and parentheses, so fields are counted after the last ')'.
pub fn parse_stat(stat: &str) -> Option<ProcEntry> {
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().take(20).collect();
    Some(ProcEntry {
        pid,
        zombie: *fields.first()? == "Z",
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Whether the process's environment holds `VAR=value` (false when unreadable: another user's process).
pub fn has_env(pid: u32, var_value: &str) -> bool {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else { return false };
    env.split(|b| *b == 0).any(|kv| kv == var_value.as_bytes())
}

/// Which of `pids` still exist (zombies count as gone: they hold no memory).
pub fn alive(pids: &BTreeSet<u32>) -> BTreeSet<u32> {
    pids.iter()
        .copied()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.get(s.rfind(')')? + 2..).map(|r| !r.starts_with('Z')))
                .unwrap_or(false)
        })
        .collect()
}

/// RSS and PSS in bytes of one process, from smaps_rollup (kB values).
pub fn rss_pss(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_rollup(&text)
}

pub fn parse_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// Summed RSS and PSS over a set of processes; processes that vanished mid-read are skipped.
pub fn tree_memory(pids: &BTreeSet<u32>) -> (u64, u64) {
    pids.iter().filter_map(|p| rss_pss(*p)).fold((0, 0), |(r, p), (rr, pp)| (r + rr, p + pp))
}

/// (MemTotal, MemAvailable) in bytes.
pub fn meminfo() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let tail = "0 -1 4194560 100 0 0 0 5 2 0 0 20 0 1 0 987654 1000 200";
        let e = parse_stat(&format!("4242 (VLLM::Engine Core) S 4200 4200 4200 {tail}")).unwrap();
        assert_eq!((e.pid, e.ppid, e.pgrp, e.start, e.zombie), (4242, 4200, 4200, 987654, false));
        let e = parse_stat(&format!("7 (a) b) Z 1 7 7 {tail}")).unwrap();
        assert_eq!((e.pid, e.ppid, e.pgrp, e.zombie), (7, 1, 7, true));
        assert_eq!(parse_stat("7 (a) R 1 7 7"), None, "a line without a start time is not an identity");
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_smaps_rollup() {
        let text = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:             3900 kB\nPss:             2500 kB\nPss_Anon:        1000 kB\n";
        assert_eq!(parse_rollup(text), Some((3900 * 1024, 2500 * 1024)));
    }

    #[test]
    fn sees_its_own_process() {
        let me = std::process::id();
        assert!(process_table().iter().any(|e| e.pid == me && !e.zombie && e.start > 0));
        assert!(has_env(me, &format!("PATH={}", std::env::var("PATH").unwrap())));
        assert!(tree_memory(&[me].into()).0 > 0);
        assert_eq!(alive(&[me].into()).len(), 1);
    }
}
