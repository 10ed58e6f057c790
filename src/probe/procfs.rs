//! Linux /proc: the server's process tree, its memory (RSS and PSS), and the machine's available memory.

use std::collections::{BTreeSet, HashMap};
use std::fs;

/// (pid, parent pid, process group) of every process, read from /proc/<pid>/stat.
pub fn process_table() -> Vec<(u32, u32, u32)> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(&stat).map(|(ppid, pgrp)| (pid, ppid, pgrp))
        })
        .collect()
}

/// Parent pid and process group from a stat line; the command name may hold spaces and parentheses.
pub fn parse_stat(stat: &str) -> Option<(u32, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

/// The server's processes: everything in its process group plus every descendant of its leader (a child
/// that moved to another group still belongs to the server).
pub fn server_tree(leader: u32) -> BTreeSet<u32> {
    let table = process_table();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, ppid, _) in &table {
        children.entry(*ppid).or_default().push(*pid);
    }
    let mut tree: BTreeSet<u32> = table.iter().filter(|(_, _, pgrp)| *pgrp == leader).map(|(pid, _, _)| *pid).collect();
    let mut stack = vec![leader];
    while let Some(pid) = stack.pop() {
        if table.iter().any(|(p, _, _)| *p == pid) {
            tree.insert(pid);
        }
        for child in children.get(&pid).into_iter().flatten() {
            if tree.insert(*child) || !stack.contains(child) {
                stack.push(*child);
            }
        }
    }
    tree
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
        assert_eq!(parse_stat("4242 (VLLM::Engine Core) S 4200 4200 4200 0 -1"), Some((4200, 4200)));
        assert_eq!(parse_stat("7 (a) b) R 1 7 7"), Some((1, 7)));
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
        assert!(process_table().iter().any(|(p, _, _)| *p == me));
        assert!(tree_memory(&[me].into()).0 > 0);
        assert_eq!(alive(&[me].into()).len(), 1);
    }
}
