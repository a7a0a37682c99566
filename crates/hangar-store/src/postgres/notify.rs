//! [`Notifier`] on PostgreSQL: `LISTEN/NOTIFY`.
//!
//! The signals are sent by triggers (see `migrations/postgres/0001_init.sql`
//! and, for session grants, `0004_shares.sql`)
//! with a JSON payload naming the schema, the writer's `application_name`
//! (its origin) and the run and execution. A listener ignores signals from
//! other schemas, so deployments sharing one database do not wake each other.

use super::PostgresStore;
use crate::StoreResult;
use crate::notify::{
    CANCEL_CHANNEL, DISPATCH_CHANNEL, FOLLOWUP_CHANNEL, Notifier, SHARES_CHANNEL, Signal,
    SignalListener,
};
use async_trait::async_trait;
use hangar_protocol::{ExecutionId, RunId};
use serde::Deserialize;
use sqlx::postgres::{PgListener, PgNotification};

/// The JSON payload the triggers send.
#[derive(Debug, Deserialize)]
struct Payload {
    schema: Option<String>,
    origin: Option<String>,
    run_id: Option<String>,
    execution_id: Option<String>,
}

/// Listens to one schema's signals; see [`Notifier::listen`].
pub struct PgSignalListener {
    listener: PgListener,
    schema: String,
    origin: String,
    /// Set when the connection dropped: the next `recv` reports a resync.
    lost: bool,
}

impl std::fmt::Debug for PgSignalListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSignalListener")
            .field("schema", &self.schema)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl PgSignalListener {
    /// Decodes a notification; `None` for another schema's signals or junk.
    fn decode(&self, n: &PgNotification) -> Option<Signal> {
        let payload: Payload = match serde_json::from_str(n.payload()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(channel = n.channel(), error = %e, "ignoring malformed signal");
                return None;
            }
        };
        if payload.schema.as_deref() != Some(self.schema.as_str()) {
            return None;
        }
        let local = payload.origin.as_deref() == Some(self.origin.as_str());
        let execution_id = payload.execution_id.map(ExecutionId);
        match n.channel() {
            DISPATCH_CHANNEL => Some(Signal::Dispatch {
                run_id: payload.run_id.map(RunId),
                execution_id,
                local,
            }),
            CANCEL_CHANNEL => Some(Signal::Cancel {
                run_id: RunId(payload.run_id?),
                execution_id,
                local,
            }),
            SHARES_CHANNEL => Some(Signal::SharesChanged {
                run_id: RunId(payload.run_id?),
                local,
            }),
            FOLLOWUP_CHANNEL => Some(Signal::Followup {
                run_id: RunId(payload.run_id?),
                execution_id: execution_id?,
                local,
            }),
            _ => None,
        }
    }
}

#[async_trait]
impl SignalListener for PgSignalListener {
    async fn recv(&mut self) -> StoreResult<Signal> {
        loop {
            if std::mem::take(&mut self.lost) {
                return Ok(Signal::Resync);
            }
            match self.listener.try_recv().await? {
                Some(n) => {
                    if let Some(signal) = self.decode(&n) {
                        return Ok(signal);
                    }
                }
                // The connection dropped; it reconnects (and re-listens) on the
                // next call, but signals sent meanwhile are lost.
                None => self.lost = true,
            }
        }
    }
}

impl PostgresStore {
    /// Starts listening to this schema's signals (a concrete
    /// [`Notifier::listen`]).
    pub async fn signal_listener(&self) -> StoreResult<PgSignalListener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([
                DISPATCH_CHANNEL,
                CANCEL_CHANNEL,
                SHARES_CHANNEL,
                FOLLOWUP_CHANNEL,
            ])
            .await?;
        Ok(PgSignalListener {
            listener,
            schema: self.schema.clone(),
            origin: self.origin.clone(),
            lost: false,
        })
    }
}

#[async_trait]
impl Notifier for PostgresStore {
    async fn notify_dispatch(&self, run_id: Option<&RunId>) -> StoreResult<()> {
        sqlx::query("SELECT hangar_signal($1, $2, NULL)")
            .bind(DISPATCH_CHANNEL)
            .bind(run_id.map(RunId::as_str))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn notify_cancel(&self, run_id: &RunId, execution_id: &ExecutionId) -> StoreResult<()> {
        sqlx::query("SELECT hangar_signal($1, $2, $3)")
            .bind(CANCEL_CHANNEL)
            .bind(run_id.as_str())
            .bind(execution_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(&self) -> StoreResult<Box<dyn SignalListener>> {
        Ok(Box::new(self.signal_listener().await?))
    }
}
