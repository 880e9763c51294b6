//! Whether a pool member may be answered with: its probe results through rise and fall
//! thresholds, and the operator's drain.

use serde::Serialize;

/// A member's health as the probes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not probed yet: never answered with.
    Unchecked,
    Up,
    Down,
}

/// One member's health: its state and the run of results that may change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: State,
    /// Consecutive results against the current state: failures while up, successes while down.
    streak: u32,
    /// Taken out by the operator: probed, but never answered with.
    pub drained: bool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            state: State::Unchecked,
            streak: 0,
            drained: false,
        }
    }

    /// Counts one probe result; returns whether the member went up or down. The first result
    /// decides at once (not a change: there was no state before), so that a name is served as
    /// soon as its pool has been checked.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        let (threshold, next) = match (self.state, ok) {
            (State::Unchecked, _) => {
                self.state = if ok { State::Up } else { State::Down };
                return false;
            }
            (State::Up, true) | (State::Down, false) => {
                self.streak = 0;
                return false;
            }
            (State::Up, false) => (fall, State::Down),
            (State::Down, true) => (rise, State::Up),
        };
        self.streak += 1;
        if self.streak >= threshold {
            self.state = next;
            self.streak = 0;
            return true;
        }
        false
    }

    /// Whether the member may be in an answer.
    pub fn serves(&self) -> bool {
        self.state == State::Up && !self.drained
    }

    /// Whether a result against the current state has been seen: the state may change soon.
    pub fn is_changing(&self) -> bool {
        self.streak > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_result_decides_then_thresholds_apply() {
        let mut health = Health::new();
        assert!(!health.serves());
        assert!(!health.record(true, 3, 2));
        assert!(health.serves());
        assert!(!health.record(false, 3, 2));
        assert!(health.is_changing() && health.serves());
        assert!(!health.record(true, 3, 2), "a success resets the run");
        assert!(!health.is_changing());
        assert!(!health.record(false, 3, 2));
        assert!(health.record(false, 3, 2));
        assert_eq!(health.state, State::Down);
        for _ in 0..2 {
            assert!(!health.record(true, 3, 2));
        }
        assert!(health.record(true, 3, 2));
        assert_eq!(health.state, State::Up);
    }

    #[test]
    fn a_drained_member_is_not_served() {
        let mut health = Health::new();
        health.record(true, 1, 1);
        health.drained = true;
        assert!(!health.serves());
        health.drained = false;
        assert!(health.serves());
        let mut down = Health::new();
        down.record(false, 1, 1);
        assert_eq!(down.state, State::Down);
        assert!(!down.serves());
    }
}
