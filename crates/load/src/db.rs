//! PostgreSQL and Redis targets (features `postgres` and `redis`): one connection per worker and
//! URL, opened on first use and again after it broke. Replies are turned into JSON so values can be
//! extracted for later requests the same way as from HTTP responses.

#[cfg(feature = "postgres")]
use tokio::task::JoinHandle;

use crate::config::RequestSpec;
#[cfg(any(feature = "postgres", feature = "redis"))]
use crate::config::Target;
use crate::record::ErrorKind;
use crate::template::Vars;

#[cfg(feature = "postgres")]
struct PgConn {
    url: String,
    client: tokio_postgres::Client,
    driver: JoinHandle<()>,
}

#[cfg(feature = "postgres")]
impl Drop for PgConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A worker's database connections.
#[derive(Default)]
pub(crate) struct DbConns {
    #[cfg(feature = "postgres")]
    pg: Vec<PgConn>,
    #[cfg(feature = "redis")]
    redis: Vec<(String, redis::aio::MultiplexedConnection)>,
}

impl DbConns {
    /// Runs a PostgreSQL or Redis request and returns its reply as JSON.
    pub(crate) async fn exchange(
        &mut self,
        spec: &RequestSpec,
        vars: &Vars,
    ) -> Result<serde_json::Value, ErrorKind> {
        #[cfg(any(feature = "postgres", feature = "redis"))]
        let url = spec.url.render(vars);
        match &spec.target {
            #[cfg(feature = "postgres")]
            Target::Postgres { query } => self.postgres(&url, &query.render(vars)).await,
            #[cfg(feature = "redis")]
            Target::Redis { command } => {
                let words: Vec<String> = command.iter().map(|w| w.render(vars)).collect();
                self.redis(&url, &words).await
            }
            // Validation refuses targets this build cannot reach.
            _ => {
                let _ = vars;
                Err(ErrorKind::Connect)
            }
        }
    }

    #[cfg(feature = "postgres")]
    async fn postgres(&mut self, url: &str, sql: &str) -> Result<serde_json::Value, ErrorKind> {
        use serde_json::{Map, Value};
        use tokio_postgres::SimpleQueryMessage;

        let i = match self
            .pg
            .iter()
            .position(|c| c.url == url && !c.client.is_closed())
        {
            Some(i) => i,
            None => {
                self.pg.retain(|c| c.url != url);
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .map_err(|_| ErrorKind::Connect)?;
                let driver = tokio::spawn(async move {
                    let _ = connection.await;
                });
                self.pg.push(PgConn {
                    url: url.to_owned(),
                    client,
                    driver,
                });
                self.pg.len() - 1
            }
        };
        let messages = match self.pg[i].client.simple_query(sql).await {
            Ok(m) => m,
            Err(e) if e.as_db_error().is_some() => return Err(ErrorKind::Query),
            Err(_) => {
                self.pg.swap_remove(i);
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
    async fn redis(&mut self, url: &str, words: &[String]) -> Result<serde_json::Value, ErrorKind> {
        let i = match self.redis.iter().position(|(u, _)| u == url) {
            Some(i) => i,
            None => {
                let client = redis::Client::open(url).map_err(|_| ErrorKind::Connect)?;
                let con = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|_| ErrorKind::Connect)?;
                self.redis.push((url.to_owned(), con));
                self.redis.len() - 1
            }
        };
        let Some((name, args)) = words.split_first() else {
            return Err(ErrorKind::Query);
        };
        let mut cmd = redis::cmd(name);
        for a in args {
            cmd.arg(a);
        }
        match cmd.query_async::<redis::Value>(&mut self.redis[i].1).await {
            Ok(v) => Ok(redis_json(v)),
            Err(e)
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() =>
            {
                self.redis.swap_remove(i);
                Err(ErrorKind::Io)
            }
            Err(_) => Err(ErrorKind::Query),
        }
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
