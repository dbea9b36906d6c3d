//! Label matchers, written as Alertmanager writes them: `name=value`, `name!=value`,
//! `name=~regex`, `name!~regex` (regexes anchored at both ends). Routes, silences and
//! maintenance windows select alerts with them.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::model::Labels;

/// How a [`Matcher`] compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    /// `=`: equal.
    #[serde(rename = "=")]
    Equal,
    /// `!=`: not equal.
    #[serde(rename = "!=")]
    NotEqual,
    /// `=~`: the whole value matches the regex.
    #[serde(rename = "=~")]
    Regex,
    /// `!~`: the whole value does not match the regex.
    #[serde(rename = "!~")]
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One condition on one label. A missing label has the empty value, as in Alertmanager, so
/// `team=""` matches alerts without a `team` label.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    regex: Option<Regex>,
}

/// A matcher that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MatcherError(String);

impl Matcher {
    /// A matcher from its parts; a bad regex is an error.
    pub fn new(
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let name = name.into();
        let value = value.into();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(MatcherError(format!(
                "label name {name:?} must be letters, digits and `_`"
            )));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| MatcherError(format!("bad regex {value:?}: {e}")))?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    /// Reads `name=value`, `name!=value`, `name=~re` or `name!~re`; the value may be quoted
    /// with double quotes.
    pub fn parse(text: &str) -> Result<Self, MatcherError> {
        let text = text.trim();
        let at = text
            .find(['=', '!'])
            .ok_or_else(|| MatcherError(format!("{text:?} has no operator (=, !=, =~, !~)")))?;
        let (name, rest) = text.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Regex, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Equal, v)
        } else {
            return Err(MatcherError(format!(
                "{text:?} has no operator (=, !=, =~, !~)"
            )));
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Matcher::new(name.trim(), op, value)
    }

    /// The label's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operator.
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The value or regex as written.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// True if `labels` satisfy this matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        let actual = labels.get(&self.name).map_or("", String::as_str);
        match (&self.op, &self.regex) {
            (MatchOp::Equal, _) => actual == self.value,
            (MatchOp::NotEqual, _) => actual != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(actual),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(actual),
            // `new` always compiles the regex of a regex operator.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            name: &'a str,
            op: MatchOp,
            value: &'a str,
        }
        Shown {
            name: &self.name,
            op: self.op,
            value: &self.value,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    /// Either the text form (`"team=web"`) or `{ name, op, value }`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Parts {
                name: String,
                op: MatchOp,
                value: String,
            },
        }
        match Raw::deserialize(d)? {
            Raw::Text(text) => Matcher::parse(&text),
            Raw::Parts { name, op, value } => Matcher::new(name, op, value),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// True if every matcher matches (an empty list matches everything).
pub fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches_as_alertmanager_does() {
        let l = labels(&[("team", "web"), ("severity", "critical")]);
        assert!(Matcher::parse("team=web").unwrap().matches(&l));
        assert!(!Matcher::parse("team!=web").unwrap().matches(&l));
        assert!(
            Matcher::parse("severity=~crit.*|warning")
                .unwrap()
                .matches(&l)
        );
        // Anchored: a partial match is no match.
        assert!(!Matcher::parse("severity=~crit").unwrap().matches(&l));
        assert!(Matcher::parse("severity!~info").unwrap().matches(&l));
        // A missing label is the empty string.
        assert!(Matcher::parse("env=\"\"").unwrap().matches(&l));
        assert!(!Matcher::parse("env=prod").unwrap().matches(&l));
    }

    #[test]
    fn bad_matchers_say_why() {
        assert!(
            Matcher::parse("team")
                .unwrap_err()
                .0
                .contains("no operator")
        );
        assert!(
            Matcher::parse("team=~(")
                .unwrap_err()
                .0
                .contains("bad regex")
        );
        assert!(
            Matcher::parse("te am=x")
                .unwrap_err()
                .0
                .contains("label name")
        );
    }

    #[test]
    fn matchers_read_from_text_or_parts_and_round_trip() {
        let m: Matcher = serde_json::from_str(r#""group=~shop|pay""#).unwrap();
        assert_eq!(m.op(), MatchOp::Regex);
        let json = serde_json::to_string(&m).unwrap();
        let back: Matcher = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert!(back.matches(&labels(&[("group", "pay")])));
    }
}
