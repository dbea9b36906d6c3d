//! PostgreSQL and Redis targets (features `postgres` and `redis`): requests go through one
//! `rampart-pool` per URL, of `rampart-connect` connections, shared by every worker and as large
//! as the run's concurrency (connections in the open model, peak users in the closed one). Replies
//! are turned into JSON so values can be extracted for later requests as from HTTP responses.

#[cfg(any(feature = "postgres", feature = "redis"))]
use std::collections::HashMap;
use std::time::Duration;

#[cfg(any(feature = "postgres", feature = "redis"))]
use rampart_pool::{PoolConfig, PoolEvents};
use tokio::time::{Instant, timeout};

#[cfg(any(feature = "postgres", feature = "redis"))]
use crate::config::Target;
use crate::config::{RequestSpec, Scenario};
use crate::http::{Sent, extract};
use crate::record::ErrorKind;
use crate::template::Vars;

/// The database pools of a run, one per URL.
#[derive(Default)]
pub(crate) struct Pools {
    #[cfg(feature = "postgres")]
    pg: HashMap<String, rampart_pool::Pool<rampart_connect::postgres::PgManager>>,
    #[cfg(feature = "redis")]
    redis: HashMap<String, rampart_pool::Pool<rampart_connect::redis::RedisManager>>,
}

impl Pools {
    /// Pools for the scenario's database requests, each of at most `size` connections. The URLs
    /// were validated with the scenario, so a pool that cannot be built is left out and its
    /// requests fail as connect errors.
    pub(crate) fn build(scenario: &Scenario, size: usize) -> Self {
        #[allow(unused_mut)]
        let mut pools = Pools::default();
        #[cfg(any(feature = "postgres", feature = "redis"))]
        {
            let config = PoolConfig {
                max_size: size.max(1),
                acquire_timeout: scenario.timeout,
                ..PoolConfig::default()
            };
            let events = PoolEvents::new();
            for spec in &scenario.requests {
                let url = spec.url.render(&Vars::default());
                match &spec.target {
                    #[cfg(feature = "postgres")]
                    Target::Postgres { .. } if !pools.pg.contains_key(&url) => {
                        let pool = rampart_connect::postgres::PgConfig::new(url.clone())
                            .build("load")
                            .and_then(|m| config.build("load", m, &events));
                        if let Ok(pool) = pool {
                            pools.pg.insert(url, pool);
                        }
                    }
                    #[cfg(feature = "redis")]
                    Target::Redis { .. } if !pools.redis.contains_key(&url) => {
                        let manager = rampart_connect::redis::RedisConfig {
                            response_timeout: scenario.timeout,
                            ..rampart_connect::redis::RedisConfig::new(url.clone())
                        }
                        .build("load");
                        if let Ok(pool) = manager.and_then(|m| config.build("load", m, &events)) {
                            pools.redis.insert(url, pool);
                        }
                    }
                    _ => {}
                }
            }
        }
        let _ = (scenario, size);
        pools
    }

    /// Closes every pool, waiting up to `grace` for connections still lent.
    pub(crate) async fn close(&self, grace: Duration) {
        #[cfg(feature = "postgres")]
        for p in self.pg.values() {
            p.close(grace).await;
        }
        #[cfg(feature = "redis")]
        for p in self.redis.values() {
            p.close(grace).await;
        }
        let _ = grace;
    }

    /// Sends a database request within `limit` and sets the variables it extracts.
    pub(crate) async fn send(&self, spec: &RequestSpec, vars: &mut Vars, limit: Duration) -> Sent {
        let started = Instant::now();
        let error = match timeout(limit, self.exchange(spec, vars)).await {
            Ok(Ok(reply)) => extract(&reply, spec, vars).err(),
            Ok(Err(kind)) => Some(kind),
            Err(_) => Some(ErrorKind::Timeout),
        };
        Sent { started, error }
    }

    async fn exchange(
        &self,
        spec: &RequestSpec,
        vars: &Vars,
    ) -> Result<serde_json::Value, ErrorKind> {
        #[cfg(any(feature = "postgres", feature = "redis"))]
        let url = spec.url.render(&Vars::default());
        match &spec.target {
            #[cfg(feature = "postgres")]
            Target::Postgres { query } => {
                let pool = self.pg.get(&url).ok_or(ErrorKind::Connect)?;
                postgres_query(pool, &query.render(vars)).await
            }
            #[cfg(feature = "redis")]
            Target::Redis { command } => {
                let pool = self.redis.get(&url).ok_or(ErrorKind::Connect)?;
                let words: Vec<String> = command.iter().map(|w| w.render(vars)).collect();
                redis_command(pool, &words).await
            }
            // Validation refuses targets this build cannot reach.
            _ => {
                let _ = (spec, vars);
                Err(ErrorKind::Connect)
            }
        }
    }
}

#[cfg(feature = "postgres")]
async fn postgres_query(
    pool: &rampart_pool::Pool<rampart_connect::postgres::PgManager>,
    sql: &str,
) -> Result<serde_json::Value, ErrorKind> {
    use serde_json::{Map, Value};
    use tokio_postgres::SimpleQueryMessage;

    let mut conn = pool.acquire().await.map_err(|e| {
        if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connect
        }
    })?;
    let messages = match conn.client().simple_query(sql).await {
        Ok(m) => m,
        Err(e) if e.as_db_error().is_some() => return Err(ErrorKind::Query),
        Err(_) => {
            conn.mark_broken();
            return Err(ErrorKind::Io);
        }
    };
    let rows = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .map(|row| {
            let mut obj = Map::new();
            for (c, col) in row.columns().iter().enumerate() {
                let v = row
                    .get(c)
                    .map_or(Value::Null, |v| Value::String(v.to_owned()));
                obj.insert(col.name().to_owned(), v);
            }
            Value::Object(obj)
        })
        .collect();
    Ok(Value::Array(rows))
}

#[cfg(feature = "redis")]
async fn redis_command(
    pool: &rampart_pool::Pool<rampart_connect::redis::RedisManager>,
    words: &[String],
) -> Result<serde_json::Value, ErrorKind> {
    let Some((name, args)) = words.split_first() else {
        return Err(ErrorKind::Query);
    };
    let mut cmd = ::redis::cmd(name);
    for a in args {
        cmd.arg(a);
    }
    let mut conn = pool.acquire().await.map_err(|e| {
        if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connect
        }
    })?;
    match cmd.query_async::<::redis::Value>(&mut *conn).await {
        Ok(v) => Ok(redis_json(v)),
        Err(e)
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_unrecoverable_error()
                || e.is_timeout() =>
        {
            conn.mark_broken();
            Err(if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Io
            })
        }
        Err(_) => Err(ErrorKind::Query),
    }
}
/// A Redis reply as JSON: strings, numbers, arrays and maps as themselves, nil as null.
#[cfg(feature = "redis")]
fn redis_json(v: redis::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        redis::Value::Nil => Value::Null,
        redis::Value::Int(i) => Value::from(i),
        redis::Value::BulkString(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::SimpleString(s) => Value::String(s),
        redis::Value::Okay => Value::String("OK".to_owned()),
        redis::Value::Array(a) | redis::Value::Set(a) => {
            Value::Array(a.into_iter().map(redis_json).collect())
        }
        redis::Value::Map(pairs) => Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| {
                    let key = match redis_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, redis_json(v))
                })
                .collect(),
        ),
        redis::Value::Double(f) => {
            serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        redis::Value::Boolean(b) => Value::Bool(b),
        other => Value::String(format!("{other:?}")),
    }
}

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::*;

    #[test]
    fn redis_replies_become_json() {
        let v = redis::Value::Array(vec![
            redis::Value::BulkString(b"a".to_vec()),
            redis::Value::Int(3),
            redis::Value::Nil,
            redis::Value::Okay,
        ]);
        assert_eq!(redis_json(v), serde_json::json!(["a", 3, null, "OK"]));
        let m = redis::Value::Map(vec![(
            redis::Value::SimpleString("k".into()),
            redis::Value::Double(1.5),
        )]);
        assert_eq!(redis_json(m), serde_json::json!({"k": 1.5}));
    }
}
