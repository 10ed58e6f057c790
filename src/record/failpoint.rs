//! Fault injection for tests: `SERVELAB_FAILPOINTS=name[,name...]` makes the named points fail. Compiled only
//! with the test-only cargo feature `failpoints` (scripts/test.sh builds the tests with it); without it every
//! point is an inlined `false`, so a release build carries no hook and reads no variable.
//!
//! Points: `sampler-panic` (the load point's GPU and /metrics sampler panics), `subreaper` (becoming a child
//! subreaper fails), `watchdog` (the watchdog cannot start), `watchdog-gone` (telling the watchdog fails),
//! `archive-rename` (setting an earlier attempt's server files aside fails), `chart-draw` (a chart cannot be
//! drawn).

/// Whether the point `name` is set to fail.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) -> bool {
    std::env::var("SERVELAB_FAILPOINTS").is_ok_and(|v| v.split(',').any(|n| n.trim() == name))
}

/// Whether the point `name` is set to fail: never, without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) -> bool {
    false
}

/// An I/O error at the point `name` when it is set to fail.
#[inline]
pub fn io(name: &str) -> std::io::Result<()> {
    if hit(name) { Err(std::io::Error::other(format!("failpoint `{name}`"))) } else { Ok(()) }
}

/// A panic at the point `name` when it is set to fail (a test's stand-in for a bug in that code).
#[inline]
pub fn panic(name: &str) {
    if hit(name) {
        panic!("failpoint `{name}`");
    }
}
