//! Label sets: ordered `name="value"` pairs that tell series of one metric apart.

use std::borrow::Cow;
use std::fmt;

/// The label every overflow series carries: past the cardinality limit, new label values of a
/// metric are folded into one series labelled `rampart_overflow="true"`.
pub const OVERFLOW_LABEL: &str = "rampart_overflow";

/// An ordered set of labels. Cheap to build from `&'static str` names and values.
///
/// ```
/// use rampart_telemetry::Labels;
/// let labels = Labels::new().with("route", "/users").with("method", "GET");
/// assert_eq!(labels.get("method"), Some("GET"));
/// assert_eq!(labels.to_string(), r#"{route="/users",method="GET"}"#);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(Cow<'static, str>, Cow<'static, str>)>);

impl Labels {
    /// No labels.
    pub const fn new() -> Self {
        Labels(Vec::new())
    }

    /// These labels plus `name="value"` (replacing an earlier value of `name`).
    #[must_use]
    pub fn with(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.push(name, value);
        self
    }

    /// Adds `name="value"`, replacing an earlier value of `name`.
    pub fn push(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) {
        let name = name.into();
        let value = value.into();
        if let Some(slot) = self.0.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            self.0.push((name, value));
        }
    }

    /// The value of label `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The labels in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The overflow series' labels: `rampart_overflow="true"`.
    pub fn overflow() -> Self {
        Labels::new().with(OVERFLOW_LABEL, "true")
    }

    /// Whether these are the overflow series' labels.
    pub fn is_overflow(&self) -> bool {
        self.get(OVERFLOW_LABEL) == Some("true")
    }
}

impl<N, V> FromIterator<(N, V)> for Labels
where
    N: Into<Cow<'static, str>>,
    V: Into<Cow<'static, str>>,
{
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut labels = Labels::new();
        for (n, v) in iter {
            labels.push(n, v);
        }
        labels
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}=\"")?;
            for c in v.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
