//! What a request talks to, read from its URL's scheme: HTTP, PostgreSQL or Redis.

use rampart_resilience::ConfigError;

use super::{RequestConfig, Target};
use crate::template::Template;

/// The kind of target a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Http,
    Postgres,
    Redis,
}

/// `host:port` and the scheme of a URL whose scheme and host are fixed.
pub(super) fn authority_of(url: &Template) -> Result<(String, Scheme), String> {
    let prefix = url.literal_prefix();
    let schemes = [
        ("http://", Scheme::Http, 80),
        ("postgres://", Scheme::Postgres, 5432),
        ("postgresql://", Scheme::Postgres, 5432),
        ("redis://", Scheme::Redis, 6379),
    ];
    let Some((rest, scheme, port)) = schemes
        .iter()
        .find_map(|(p, s, port)| prefix.strip_prefix(p).map(|r| (r, *s, *port)))
    else {
        return Err(
            if prefix.starts_with("https://") || prefix.starts_with("rediss://") {
                "TLS is not supported yet; use http://, postgres:// or redis://".to_owned()
            } else {
                format!(
                    "must start with http://, postgres:// or redis:// and a host, got {prefix:?}"
                )
            },
        );
    };
    if scheme != Scheme::Http && !url.is_literal() {
        return Err(
            "a postgres:// or redis:// URL must not use data-file or extracted variables"
                .to_owned(),
        );
    }
    let end = rest.find(['/', '?', '#']);
    if end.is_none() && !url.is_literal() {
        return Err(
            "the host and port must not depend on a data-file or extracted variable".to_owned(),
        );
    }
    let host = &rest[..end.unwrap_or(rest.len())];
    // Credentials (`user:password@`) are not part of where to connect.
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let uri: hyper::Uri = format!("http://{host}/")
        .parse()
        .map_err(|err| format!("host {host:?} is not valid: {err}"))?;
    let h = uri.host().unwrap_or_default();
    if h.is_empty() {
        return Err("has no host".to_owned());
    }
    Ok((format!("{h}:{}", uri.port_u16().unwrap_or(port)), scheme))
}

/// The target of request `r` with a URL of `scheme`: checks that it has what its kind needs
/// (a query, a command) and nothing of another kind.
pub(super) fn target_of(
    r: &RequestConfig,
    url: &Template,
    scheme: Scheme,
    key: &dyn Fn(&str) -> String,
    template: &mut dyn FnMut(&str, &str, &mut ConfigError) -> Option<Template>,
    e: &mut ConfigError,
) -> Option<Target> {
    let http_only = [
        ("method", r.method.is_some()),
        ("headers", !r.headers.is_empty()),
        ("body", r.body.is_some()),
    ];
    match scheme {
        Scheme::Http => {
            for (k, set) in [
                ("query", r.query.is_some()),
                ("command", r.command.is_some()),
            ] {
                if set {
                    e.push(key(k), "goes with a postgres:// or redis:// URL");
                }
            }
            Some(Target::Http)
        }
        Scheme::Postgres | Scheme::Redis => {
            for (k, set) in http_only {
                if set {
                    e.push(key(k), "goes with an http:// URL");
                }
            }
            let (needed, other) = if scheme == Scheme::Postgres {
                ("query", ("command", r.command.is_some()))
            } else {
                ("command", ("query", r.query.is_some()))
            };
            if other.1 {
                e.push(
                    key(other.0),
                    format!("does not go with this URL, which needs `{needed}`"),
                );
            }
            let (feature, enabled) = match scheme {
                Scheme::Postgres => ("postgres", cfg!(feature = "postgres")),
                _ => ("redis", cfg!(feature = "redis")),
            };
            if !enabled {
                e.push(
                    key("url"),
                    format!("this build of rampart-load has no `{feature}` feature"),
                );
            }
            // The connector checks its URL the way it will read it (credentials are not quoted).
            let url_key = key("");
            let url_key = url_key.trim_end_matches('.');
            #[cfg(feature = "postgres")]
            if scheme == Scheme::Postgres {
                rampart_connect::postgres::PgConfig::new(url.to_string()).validate(url_key, e);
            }
            #[cfg(feature = "redis")]
            if scheme == Scheme::Redis {
                rampart_connect::redis::RedisConfig::new(url.to_string()).validate(url_key, e);
            }
            let _ = (url, url_key);
            if scheme == Scheme::Postgres {
                let Some(q) = &r.query else {
                    e.push(key("query"), "is required: the SQL to run");
                    return None;
                };
                let query = template(&key("query"), q, e)?;
                Some(Target::Postgres { query })
            } else {
                let words = match &r.command {
                    Some(c) if !c.is_empty() => c,
                    _ => {
                        e.push(key("command"), "is required: the command and its arguments, such as [\"GET\", \"key\"]");
                        return None;
                    }
                };
                let mut command = Vec::new();
                for (i, w) in words.iter().enumerate() {
                    command.push(template(&key(&format!("command[{i}]")), w, e)?);
                }
                Some(Target::Redis { command })
            }
        }
    }
}
