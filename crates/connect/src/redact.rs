//! Secrets kept out of `Debug` output: connection strings may carry a password.

#![cfg_attr(
    not(any(
        feature = "postgres",
        feature = "redis",
        feature = "ai",
        feature = "mqtt"
    )),
    allow(dead_code)
)]

/// `url` with any password replaced by `***`: the `user:password@` part of a URL, and the value of
/// a `password=` pair in a key-value connection string.
pub(crate) fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[scheme_end + 3 + at..]
                );
            }
        }
        return url.to_owned();
    }
    url.split(' ')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_replaced_and_the_rest_kept() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/orders?sslmode=disable"),
            "postgres://app:***@db:5432/orders?sslmode=disable"
        );
        assert_eq!(
            redact("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact("host=db user=app password=s3cret dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn a_logged_postgres_config_shows_no_password() {
        let config = crate::postgres::PgConfig::new("postgres://app:s3cret@db/orders");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://app:***@db/orders"), "{shown}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_logged_redis_config_shows_no_password() {
        let config = crate::redis::RedisConfig::new("redis://:hunter2@127.0.0.1:6379");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
