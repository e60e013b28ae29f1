//! The virtual clock: nanoseconds that advance only when the simulation says so.

use podplane::{Duration, Instant};

/// A clock that moves only by [`advance`](VirtualClock::advance).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtualClock {
    now: Instant,
}

impl VirtualClock {
    /// A clock at `start`.
    pub fn new(start: Instant) -> Self {
        VirtualClock { now: start }
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Move forward by `d` and return the new time.
    pub fn advance(&mut self, d: Duration) -> Instant {
        self.now = self.now + d;
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_only_when_told() {
        let mut c = VirtualClock::new(Instant::from_nanos(5));
        assert_eq!(c.now(), Instant::from_nanos(5));
        assert_eq!(c.advance(Duration::from_nanos(2000)), Instant::from_nanos(2005));
        assert_eq!(c.now(), Instant::from_nanos(2005));
    }
}
