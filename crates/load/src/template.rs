//! Strings with `${name}` variables, and CSV data files that feed them.
//!
//! A [`Template`] is parsed once; [`Template::render`] fills it from a [`Vars`] lookup on each
//! request. `$${` writes a literal `${`. Variables come from the scenario's `[variables]`, the
//! columns of its data file (one row per iteration, in turn), and values extracted from earlier
//! responses of the same iteration.
//!
//! ```
//! use rampart_load::template::{Template, Vars};
//!
//! let t = Template::parse("/users/${id}?q=${q}")?;
//! assert_eq!(t.variables().collect::<Vec<_>>(), ["id", "q"]);
//! let mut vars = Vars::default();
//! vars.set("id", "42");
//! vars.set("q", "x");
//! assert_eq!(t.render(&vars), "/users/42?q=x");
//! # Ok::<(), String>(())
//! ```

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

/// A string with `${name}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `s`; the error says what is wrong (an unclosed `${`, an empty or odd name).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(at) = rest.find("${") {
            if rest[..at].ends_with('$') {
                // `$${` is an escaped `${`.
                text.push_str(&rest[..at - 1]);
                text.push_str("${");
                rest = &rest[at + 2..];
                continue;
            }
            text.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
            let name = &after[..end];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return Err(format!(
                    "bad variable name {name:?} in {s:?} (letters, digits, `_`, `-`, `.`)"
                ));
            }
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Var(name.to_owned()));
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// The variables it uses, in order.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Replaces the variables found in `vars` now, keeping the others as placeholders: used to fold
    /// the scenario's fixed `[variables]` in once.
    pub fn bind(&self, vars: &Vars) -> Template {
        let mut parts: Vec<Part> = Vec::new();
        for p in &self.parts {
            let p = match p {
                Part::Var(v) => match vars.get(v) {
                    Some(value) => Part::Text(value.to_owned()),
                    None => Part::Var(v.clone()),
                },
                text => text.clone(),
            };
            match (parts.last_mut(), p) {
                (Some(Part::Text(a)), Part::Text(b)) => a.push_str(&b),
                (_, p) => parts.push(p),
            }
        }
        Template { parts }
    }

    /// The text before the first variable (all of it if there is none).
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }

    /// True if it has no variables.
    pub fn is_literal(&self) -> bool {
        self.variables().next().is_none()
    }

    /// Fills the placeholders; a variable missing from `vars` becomes empty (validation makes sure
    /// every variable has a source).
    pub fn render(&self, vars: &Vars) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(vars.get(v).unwrap_or_default()),
            }
        }
        out
    }
}

impl std::fmt::Display for Template {
    /// The template as written, with the variables still unfilled shown as `${name}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.parts {
            match p {
                Part::Text(t) => f.write_str(&t.replace("${", "$${"))?,
                Part::Var(v) => write!(f, "${{{v}}}")?,
            }
        }
        Ok(())
    }
}

/// Variable values by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    values: HashMap<String, String>,
}

impl Vars {
    /// Sets `name` to `value`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.values.clear();
    }
}

/// The rows of a CSV data file: a header row naming the columns, then values.
///
/// Fields may be quoted (`"a, b"`, with `""` for a quote inside). Every row must have as many
/// fields as the header.
///
/// ```
/// use rampart_load::template::DataRows;
///
/// let rows = DataRows::parse("user,password\nalice,\"p,1\"\nbob,p2\n")?;
/// assert_eq!(rows.columns(), ["user", "password"]);
/// assert_eq!(rows.len(), 2);
/// assert_eq!(rows.row(1), ["bob", "p2"]);
/// assert_eq!(rows.row(2), ["alice", "p,1"], "rows repeat in turn");
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRows {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl DataRows {
    /// Parses CSV text; the error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut records = Vec::new();
        let mut line = 1;
        let mut chars = text.chars().peekable();
        while chars.peek().is_some() {
            let start_line = line;
            let mut fields = Vec::new();
            let mut field = String::new();
            let mut quoted = false;
            let mut was_quoted = false;
            loop {
                let Some(c) = chars.next() else {
                    if quoted {
                        return Err(format!("line {start_line}: unclosed quote"));
                    }
                    break;
                };
                match (quoted, c) {
                    (true, '"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    (true, '"') => quoted = false,
                    (true, c) => {
                        if c == '\n' {
                            line += 1;
                        }
                        field.push(c);
                    }
                    (false, '"') if field.is_empty() && !was_quoted => {
                        quoted = true;
                        was_quoted = true;
                    }
                    (false, ',') => {
                        fields.push(std::mem::take(&mut field));
                        was_quoted = false;
                    }
                    (false, '\r') if chars.peek() == Some(&'\n') => {}
                    (false, '\n') => {
                        line += 1;
                        break;
                    }
                    (false, c) => field.push(c),
                }
            }
            fields.push(field);
            if fields.len() == 1 && fields[0].is_empty() {
                continue; // a blank line
            }
            records.push((start_line, fields));
        }
        let mut records = records.into_iter();
        let (_, columns) = records
            .next()
            .ok_or_else(|| "is empty: it needs a header row naming the columns".to_owned())?;
        let mut rows = Vec::new();
        for (n, r) in records {
            if r.len() != columns.len() {
                return Err(format!(
                    "line {n}: {} fields, but the header has {}",
                    r.len(),
                    columns.len()
                ));
            }
            rows.push(r);
        }
        if rows.is_empty() {
            return Err("has a header but no rows".to_owned());
        }
        Ok(DataRows { columns, rows })
    }

    /// The column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True if there are no rows (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `i`, wrapping around at the end.
    pub fn row(&self, i: usize) -> &[String] {
        &self.rows[i % self.rows.len()]
    }

    /// Sets the variables of row `i` (wrapping) into `vars`.
    pub fn fill(&self, i: usize, vars: &mut Vars) {
        for (c, v) in self.columns.iter().zip(self.row(i)) {
            vars.set(c.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escapes_and_refuses_bad_names() {
        let t = Template::parse("a$${b}${c}").unwrap();
        assert_eq!(t.variables().collect::<Vec<_>>(), ["c"]);
        let mut v = Vars::default();
        v.set("c", "C");
        assert_eq!(t.render(&v), "a${b}C");
        assert!(Template::parse("x${").unwrap_err().contains("unclosed"));
        assert!(
            Template::parse("${a b}")
                .unwrap_err()
                .contains("bad variable")
        );
        assert!(Template::parse("${}").is_err());
    }

    #[test]
    fn bind_folds_known_variables_and_keeps_the_rest() {
        let mut v = Vars::default();
        v.set("base", "http://h:1");
        let t = Template::parse("${base}/u/${id}").unwrap().bind(&v);
        assert_eq!(t.literal_prefix(), "http://h:1/u/");
        assert_eq!(t.variables().collect::<Vec<_>>(), ["id"]);
        assert!(!t.is_literal());
    }

    #[test]
    fn csv_reports_bad_rows_by_line() {
        let e = DataRows::parse("a,b\n1,2\n3\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        assert!(DataRows::parse("").is_err());
        assert!(DataRows::parse("a\n").unwrap_err().contains("no rows"));
        assert!(
            DataRows::parse("a\n\"x\n")
                .unwrap_err()
                .contains("unclosed")
        );
        let d = DataRows::parse("a,b\r\n\"x\"\"y\",\"multi\nline\"\r\n\r\n").unwrap();
        assert_eq!(d.row(0), ["x\"y", "multi\nline"]);
    }
}
