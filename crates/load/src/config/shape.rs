//! Reading a TOML value into a config struct while listing every shape problem.

use rampart_resilience::ConfigError;

/// Deserialises `value` into `T`, recording each unknown key or mistyped value as a problem under
/// `prefix` and removing it, then trying again, so every shape problem is listed.
pub(super) fn deserialize_all<T: serde::de::DeserializeOwned + Default>(
    mut value: toml::Value,
    errors: &mut ConfigError,
) -> T {
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return v,
            Err(e) => {
                let mut path: Vec<serde_path_to_error::Segment> =
                    e.path().iter().cloned().collect();
                let message = e.into_inner().to_string();
                let message = message.lines().next().unwrap_or_default().trim().to_owned();
                // An unknown key is named in the message; its path may stop at the table.
                if let Some(key) = message
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                {
                    let named = matches!(path.last(), Some(serde_path_to_error::Segment::Map { key: k }) if k == key);
                    if !named {
                        path.push(serde_path_to_error::Segment::Map {
                            key: key.to_owned(),
                        });
                    }
                }
                let shown = show_path(&path);
                errors.push(
                    if shown.is_empty() {
                        "(file)".to_owned()
                    } else {
                        shown
                    },
                    message,
                );
                if path.is_empty() || !remove_at(&mut value, &path) {
                    return T::default();
                }
            }
        }
    }
    T::default()
}

fn show_path(path: &[serde_path_to_error::Segment]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            serde_path_to_error::Segment::Seq { index } => s.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
            }
            _ => {}
        }
    }
    s
}

/// Removes the value at `path`; an array element is replaced by an empty table so that later
/// elements keep their index in messages.
fn remove_at(value: &mut toml::Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for seg in parents {
        at = match (seg, at) {
            (Segment::Map { key }, toml::Value::Table(t)) => match t.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, toml::Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, at) {
        (Segment::Map { key }, toml::Value::Table(t)) => t.remove(key).is_some(),
        (Segment::Seq { index }, toml::Value::Array(a)) if *index < a.len() => {
            // A bad element of a list of strings (thresholds) is dropped; of tables, emptied.
            if a[*index].is_table() {
                a[*index] = toml::Value::Table(toml::Table::new());
            } else {
                a.remove(*index);
            }
            true
        }
        _ => false,
    }
}
