//! Deciding whether a call's result counts as a success or a failure.
//!
//! An HTTP 503 is an `Ok` response and still a failure of the dependency; a "not found" is an `Err`
//! that says nothing about the dependency's health. A [`Classifier`] says which is which.

/// How a finished call counts for a policy that learns from outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency did its job.
    Success,
    /// The dependency failed.
    Failure,
    /// The result says nothing about the dependency's health; it is not counted.
    Ignored,
}

/// Decides how a result counts. Any `Fn(&Result<T, E>) -> Outcome` is a classifier.
pub trait Classifier<T, E> {
    /// Classifies one result.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classifier<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrIsFailure;

impl<T, E> Classifier<T, E> for ErrIsFailure {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}
