//! The breaker's states, and the packed atomic word that holds state, generation and half-open
//! permits together so that every transition and every half-open admission is one compare-and-swap.

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass; outcomes are recorded.
    Closed,
    /// Calls are rejected until the wait in open ends.
    Open,
    /// A limited number of trial calls pass; their outcomes decide between closed and open.
    HalfOpen,
    /// Forced open by an operator: every call is rejected until the breaker is reset.
    ForcedOpen,
    /// Disabled by an operator: every call passes and nothing is recorded.
    Disabled,
}

impl BreakerState {
    const fn code(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::ForcedOpen => 3,
            BreakerState::Disabled => 4,
        }
    }

    fn from_code(code: u64) -> BreakerState {
        match code {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            3 => BreakerState::ForcedOpen,
            4 => BreakerState::Disabled,
            _ => BreakerState::Closed,
        }
    }

    /// True for the states that reject every call.
    pub fn rejects(self) -> bool {
        matches!(self, BreakerState::Open | BreakerState::ForcedOpen)
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::Disabled => "disabled",
        })
    }
}

/// `[generation: 32][permits: 16][unused: 7][lazy: 1][state: 8]`.
///
/// `lazy` marks an open state with no timer armed to end it (no tokio runtime was running when it
/// opened): only then does the rejection path read the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Word(pub(super) u64);

const STATE_MASK: u64 = 0xff;
const LAZY_BIT: u64 = 1 << 8;
const PERMIT_SHIFT: u32 = 16;
const PERMIT_MASK: u64 = 0xffff << PERMIT_SHIFT;
const GEN_SHIFT: u32 = 32;

impl Word {
    pub(super) fn new(state: BreakerState, generation: u32, permits: u32, lazy: bool) -> Word {
        Word(
            state.code()
                | if lazy { LAZY_BIT } else { 0 }
                | ((u64::from(permits) & 0xffff) << PERMIT_SHIFT)
                | (u64::from(generation) << GEN_SHIFT),
        )
    }
    #[inline]
    pub(super) fn state(self) -> BreakerState {
        BreakerState::from_code(self.0 & STATE_MASK)
    }
    /// True if the word is plainly `Closed` (the hot path asks only this).
    #[inline]
    pub(super) fn is_closed(self) -> bool {
        self.0 & STATE_MASK == 0
    }
    #[inline]
    pub(super) fn rejects_without_clock(self) -> bool {
        let code = self.0 & STATE_MASK;
        code == BreakerState::ForcedOpen.code()
            || (code == BreakerState::Open.code() && self.0 & LAZY_BIT == 0)
    }
    #[cfg(test)]
    pub(super) fn lazy(self) -> bool {
        self.0 & LAZY_BIT != 0
    }
    #[inline]
    pub(super) fn generation(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32
    }
    #[inline]
    pub(super) fn permits(self) -> u32 {
        ((self.0 & PERMIT_MASK) >> PERMIT_SHIFT) as u32
    }
    pub(super) fn with_permits(self, permits: u32) -> Word {
        Word((self.0 & !PERMIT_MASK) | ((u64::from(permits) & 0xffff) << PERMIT_SHIFT))
    }
}

/// Results of the trial calls of one half-open period: `[generation: 32][slow: 10][failed: 10][calls: 10]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Trials(pub(super) u64);

impl Trials {
    pub(super) fn empty(generation: u32) -> Trials {
        Trials(u64::from(generation) << 32)
    }
    pub(super) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub(super) fn calls(self) -> u32 {
        (self.0 & 0x3ff) as u32
    }
    pub(super) fn failed(self) -> u32 {
        ((self.0 >> 10) & 0x3ff) as u32
    }
    pub(super) fn slow(self) -> u32 {
        ((self.0 >> 20) & 0x3ff) as u32
    }
    /// One more trial; counts stay below 1024 because half-open permits at most 1000 calls.
    pub(super) fn add(self, failed: bool, slow: bool) -> Trials {
        Trials(self.0 + 1 + if failed { 1 << 10 } else { 0 } + if slow { 1 << 20 } else { 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn word_fields_round_trip(code in 0u64..5, generation: u32, permits in 0u32..=0xffff, lazy: bool) {
            let state = BreakerState::from_code(code);
            let w = Word::new(state, generation, permits, lazy);
            prop_assert_eq!(w.state(), state);
            prop_assert_eq!(w.generation(), generation);
            prop_assert_eq!(w.permits(), permits);
            prop_assert_eq!(w.lazy(), lazy);
            prop_assert_eq!(w.is_closed(), state == BreakerState::Closed);
            let p2 = permits / 2;
            let w2 = w.with_permits(p2);
            prop_assert_eq!((w2.state(), w2.generation(), w2.permits()), (state, generation, p2));
        }

        #[test]
        fn trials_count_without_carry(generation: u32, outcomes in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..1000)) {
            let mut t = Trials::empty(generation);
            for (f, s) in &outcomes {
                t = t.add(*f, *s);
            }
            prop_assert_eq!(t.generation(), generation);
            prop_assert_eq!(t.calls() as usize, outcomes.len());
            prop_assert_eq!(t.failed() as usize, outcomes.iter().filter(|o| o.0).count());
            prop_assert_eq!(t.slow() as usize, outcomes.iter().filter(|o| o.1).count());
        }
    }
}
