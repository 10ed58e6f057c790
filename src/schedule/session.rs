//! This invocation's account of its server starts: what the executor has begun and what came back. Together
//! with the committed records it is everything the schedule decides on; the executor updates it as each step
//! starts and ends.

/// Where one server start stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Its server is starting (and warming up).
    Starting,
    /// Ready, with nothing measured right now: the schedule says what comes next on it.
    Up,
    /// A point is being measured on it.
    Measuring,
    Stopping,
    /// Stopped, or it never became ready.
    Ended,
}

/// One server start of this invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    pub group: String,
    /// The points it was started for, in order.
    pub points: Vec<String>,
    pub phase: Phase,
    /// Points measured or passed over on it, in order.
    pub visited: Vec<String>,
    /// Its server died: the points after are recorded as not run.
    pub dead: bool,
    /// It failed to start, a point on it failed, or its stop left processes behind.
    pub failed: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Session {
    pub starts: Vec<Start>,
    pub interrupted: bool,
}

impl Session {
    pub fn any_failed(&self) -> bool {
        self.starts.iter().any(|s| s.failed)
    }

    /// Something is under way that will report back.
    pub fn in_flight(&self) -> bool {
        self.starts.iter().any(|s| matches!(s.phase, Phase::Starting | Phase::Measuring | Phase::Stopping))
    }

    /// Groups started in this invocation (whatever became of the start).
    pub fn started(&self, group: &str) -> bool {
        self.starts.iter().any(|s| s.group == group)
    }

    /// The group's start that has not ended.
    pub fn active(&self, group: &str) -> Option<&Start> {
        self.starts.iter().rev().find(|s| s.group == group && s.phase != Phase::Ended)
    }

    fn active_mut(&mut self, group: &str) -> Option<&mut Start> {
        self.starts.iter_mut().rev().find(|s| s.group == group && s.phase != Phase::Ended)
    }

    pub fn begin(&mut self, group: &str, points: Vec<String>) {
        self.starts.push(Start {
            group: group.to_owned(),
            points,
            phase: Phase::Starting,
            visited: Vec::new(),
            dead: false,
            failed: false,
        });
    }

    /// The server is ready (`Ok`), or never became ready (`failed`: whether that counts as a failure; an
    /// interrupted start does not).
    pub fn started_as(&mut self, group: &str, up: Result<(), bool>) {
        if let Some(s) = self.active_mut(group) {
            match up {
                Ok(()) => s.phase = Phase::Up,
                Err(failed) => {
                    s.phase = Phase::Ended;
                    s.failed |= failed;
                }
            }
        }
    }

    pub fn measuring(&mut self, group: &str, point: &str) {
        if let Some(s) = self.active_mut(group) {
            s.phase = Phase::Measuring;
            s.visited.push(point.to_owned());
        }
    }

    pub fn measured(&mut self, group: &str, failed: bool, died: bool) {
        if let Some(s) = self.active_mut(group) {
            s.phase = Phase::Up;
            s.failed |= failed;
            s.dead |= died;
        }
    }

    pub fn skipped(&mut self, group: &str, point: &str) {
        if let Some(s) = self.active_mut(group) {
            s.visited.push(point.to_owned());
        }
    }

    pub fn stopping(&mut self, group: &str) {
        if let Some(s) = self.active_mut(group) {
            s.phase = Phase::Stopping;
        }
    }

    pub fn stopped(&mut self, group: &str, failed: bool) {
        if let Some(s) = self.active_mut(group) {
            s.phase = Phase::Ended;
            s.failed |= failed;
        }
    }
}
