//! Where alerting keeps what must survive a restart: the engine's [`DurableState`] and the
//! silences. [`SqliteStore`] keeps both in the history file.

use std::time::SystemTime;

use rusqlite::OptionalExtension;
use rusqlite::types::Value;

use super::engine::DurableState;
use super::silence::Silence;
use crate::store::record::to_ms;
use crate::store::writer::Command;
use crate::store::{SqliteStore, StoreError, StoreFuture};

/// Alerting's durable state. Object-safe, like [`Store`](crate::store::Store).
pub trait AlertStateStore: Send + Sync {
    /// The state saved last, if any.
    fn load_alert_state(&self) -> StoreFuture<'_, Option<DurableState>>;
    /// Replaces the saved state; durable when it returns `Ok`.
    fn save_alert_state(&self, state: &DurableState) -> StoreFuture<'_, ()>;
    /// Every silence kept, in no particular order.
    fn silences(&self) -> StoreFuture<'_, Vec<Silence>>;
    /// Creates or replaces (by id) a silence; durable when it returns `Ok`.
    fn put_silence(&self, silence: &Silence) -> StoreFuture<'_, ()>;
    /// Deletes silences that ended before `before`; returns how many went.
    fn delete_silences_before(&self, before: SystemTime) -> StoreFuture<'_, usize>;
}

fn encode<T: serde::Serialize>(value: &T, path: &std::path::Path) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        what: format!("cannot encode alert state: {e}"),
    })
}

impl AlertStateStore for SqliteStore {
    fn load_alert_state(&self) -> StoreFuture<'_, Option<DurableState>> {
        Box::pin(self.read(|conn, path| {
            let text: Option<String> = conn
                .query_row("SELECT state FROM alert_state WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| StoreError::read(path, e))?;
            text.map(|t| {
                serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                    path: path.to_owned(),
                    what: format!("the saved alert state cannot be read: {e}"),
                })
            })
            .transpose()
        }))
    }

    fn save_alert_state(&self, state: &DurableState) -> StoreFuture<'_, ()> {
        let encoded = encode(state, self.path());
        let saved = to_ms(SystemTime::from(state.saved_at));
        Box::pin(async move {
            let params = vec![Value::Text(encoded?), Value::Integer(saved)];
            self.send(|reply| Command::Execute {
                sql: "INSERT INTO alert_state (id, state, saved_ms) VALUES (1, ?1, ?2) \
                      ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
                      saved_ms = excluded.saved_ms",
                params,
                reply,
            })
            .await
            .map(drop)
        })
    }

    fn silences(&self) -> StoreFuture<'_, Vec<Silence>> {
        Box::pin(self.read(|conn, path| {
            let read = |e| StoreError::read(path, e);
            let mut stmt = conn
                .prepare_cached("SELECT silence FROM silences ORDER BY id")
                .map_err(read)?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(read)?;
            let mut out = Vec::new();
            for text in rows {
                let text = text.map_err(read)?;
                out.push(
                    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                        path: path.to_owned(),
                        what: format!("a saved silence cannot be read: {e}"),
                    })?,
                );
            }
            Ok(out)
        }))
    }

    fn put_silence(&self, silence: &Silence) -> StoreFuture<'_, ()> {
        let encoded = encode(silence, self.path());
        let id = silence.id.clone();
        let ends = to_ms(SystemTime::from(silence.ends_at));
        Box::pin(async move {
            let params = vec![Value::Text(id), Value::Text(encoded?), Value::Integer(ends)];
            self.send(|reply| Command::Execute {
                sql: "INSERT INTO silences (id, silence, ends_ms) VALUES (?1, ?2, ?3) \
                      ON CONFLICT (id) DO UPDATE SET silence = excluded.silence, \
                      ends_ms = excluded.ends_ms",
                params,
                reply,
            })
            .await
            .map(drop)
        })
    }

    fn delete_silences_before(&self, before: SystemTime) -> StoreFuture<'_, usize> {
        let params = vec![Value::Integer(to_ms(before))];
        Box::pin(async move {
            self.send(|reply| Command::Execute {
                sql: "DELETE FROM silences WHERE ends_ms < ?1",
                params,
                reply,
            })
            .await
        })
    }
}
