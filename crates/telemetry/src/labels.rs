//! Label sets: ordered `name="value"` pairs that tell series of one metric apart.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The label every overflow series carries: past the cardinality limit, new label values of a
/// metric are folded into one series labelled `rampart_overflow="true"`.
pub const OVERFLOW_LABEL: &str = "rampart_overflow";

/// An ordered set of labels. Cheap to build from `&'static str` names and values, and cheap to
/// clone: the pairs are shared by reference count (a snapshot copies no label set), and a clone is
/// only copied when it is changed.
///
/// ```
/// use rampart_telemetry::Labels;
/// let labels = Labels::new().with("route", "/users").with("method", "GET");
/// assert_eq!(labels.get("method"), Some("GET"));
/// assert_eq!(labels.to_string(), r#"{route="/users",method="GET"}"#);
/// ```
#[derive(Clone, Default)]
pub struct Labels(Option<Arc<Vec<Pair>>>);

type Pair = (Cow<'static, str>, Cow<'static, str>);

impl Labels {
    /// No labels.
    pub const fn new() -> Self {
        Labels(None)
    }

    fn pairs(&self) -> &[Pair] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
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
        let pairs = Arc::make_mut(self.0.get_or_insert_with(Default::default));
        if let Some(slot) = pairs.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            pairs.push((name, value));
        }
    }

    /// The value of label `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The labels in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.pairs().iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
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

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        self.pairs() == other.pairs()
    }
}

impl Eq for Labels {}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pairs().hash(state);
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.pairs().cmp(other.pairs())
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
