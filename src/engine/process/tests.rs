use super::*;

fn e(pid: u32, ppid: u32, pgrp: u32, start: u64) -> ProcEntry {
    ProcEntry { pid, ppid, pgrp, start, zombie: false }
}

#[test]
fn a_reused_pid_is_not_ours() {
    let mut own = Ownership::default();
    // Leader 100 (servelab is 1), a child 101 in the group, a grandchild 102 that moved to its own group.
    let table = [e(1, 0, 1, 5), e(100, 1, 100, 10), e(101, 100, 100, 11), e(102, 101, 102, 12), e(7, 1, 7, 3)];
    let tree = own.scan(&table, 100, 1, |_| false, |_| None);
    assert_eq!(tree, [100, 101, 102].into());
    // 101 exits; the kernel gives its PID to an unrelated process (another parent, group, start time).
    let later = [e(1, 0, 1, 5), e(100, 1, 100, 10), e(101, 1, 101, 99), e(102, 1, 102, 12)];
    assert_eq!(own.alive(&later), [100, 102].into(), "101 is someone else's now");
    // Scanning again does not take it over either: it is neither in the group nor below the leader.
    assert_eq!(own.scan(&later, 100, 1, |_| false, |_| None), [100, 102].into());
}

#[test]
fn an_orphan_reparented_to_servelab_is_adopted_only_with_the_marker() {
    let mut own = Ownership::default();
    // 200 called setsid and its parent exited: it is servelab's (1) child now, in a group of its own; 300 is
    // another child of servelab (a watchdog, nvidia-smi) without the marker.
    let table = [e(100, 1, 100, 10), e(200, 1, 200, 20), e(201, 200, 200, 21), e(300, 1, 300, 30)];
    let tree = own.scan(&table, 100, 1, |pid| pid == 200, |_| None);
    assert_eq!(tree, [100, 200, 201].into());
}

#[test]
fn zombies_are_gone() {
    let mut own = Ownership::default();
    let mut z = e(101, 100, 100, 11);
    own.scan(&[e(100, 1, 100, 10), z], 100, 1, |_| false, |_| None);
    z.zombie = true;
    assert_eq!(own.alive(&[e(100, 1, 100, 10), z]), [100].into());
}
