//! Opening a store from a database URL.

use crate::postgres::config_error;
use crate::{Notifier, PostgresStore, SqliteStore, Store, StoreResult};
use std::path::Path;
use std::sync::Arc;

/// A store and, when the database can carry them, cross-replica signals.
#[derive(Clone)]
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Signals between replicas: `Some` on PostgreSQL, `None` on SQLite (one
    /// replica only; in-process wakeups are enough).
    pub notifier: Option<Arc<dyn Notifier>>,
}

impl std::fmt::Debug for OpenedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedStore")
            .field("notifier", &self.notifier.is_some())
            .finish_non_exhaustive()
    }
}

/// Where a database URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation<'a> {
    /// `postgres://…` or `postgresql://…`.
    Postgres(&'a str),
    /// `sqlite:PATH`, `sqlite://PATH` or a plain path.
    SqliteFile(&'a Path),
    /// `sqlite::memory:`.
    SqliteMemory,
}

impl<'a> DatabaseLocation<'a> {
    /// Classifies `url`; an unknown scheme or an empty path is an error that
    /// says what is accepted.
    pub fn parse(url: &'a str) -> StoreResult<Self> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseLocation::Postgres(url));
        }
        let path = if let Some(rest) = url.strip_prefix("sqlite:") {
            if rest == ":memory:" || rest == "//:memory:" {
                return Ok(DatabaseLocation::SqliteMemory);
            }
            rest.strip_prefix("//").unwrap_or(rest)
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(config_error(format!(
                "unsupported database URL scheme `{scheme}://`: use postgres://USER:PASSWORD@HOST/DB, \
                 sqlite:PATH or a plain file path"
            )));
        } else {
            url
        };
        if path.is_empty() {
            return Err(config_error(
                "empty database location: use postgres://USER:PASSWORD@HOST/DB, sqlite:PATH \
                 or a plain file path"
                    .to_owned(),
            ));
        }
        Ok(DatabaseLocation::SqliteFile(Path::new(path)))
    }
}

/// Opens the store at `url`: `postgres://…` (or `postgresql://…`) is
/// PostgreSQL; `sqlite:PATH`, `sqlite::memory:` or a plain path is SQLite.
/// Runs migrations.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    Ok(open_with_notifier(url).await?.store)
}

/// Like [`open`], plus the cross-replica [`Notifier`] when the database has one.
pub async fn open_with_notifier(url: &str) -> StoreResult<OpenedStore> {
    Ok(match DatabaseLocation::parse(url)? {
        DatabaseLocation::Postgres(url) => {
            let store = Arc::new(PostgresStore::connect(url).await?);
            OpenedStore {
                store: store.clone(),
                notifier: Some(store),
            }
        }
        DatabaseLocation::SqliteFile(path) => OpenedStore {
            store: Arc::new(SqliteStore::open(path).await?),
            notifier: None,
        },
        DatabaseLocation::SqliteMemory => OpenedStore {
            store: Arc::new(SqliteStore::in_memory().await?),
            notifier: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_classified() {
        assert_eq!(
            DatabaseLocation::parse("postgres://u:p@h/db").unwrap(),
            DatabaseLocation::Postgres("postgres://u:p@h/db")
        );
        assert_eq!(
            DatabaseLocation::parse("postgresql://h/db").unwrap(),
            DatabaseLocation::Postgres("postgresql://h/db")
        );
        assert_eq!(
            DatabaseLocation::parse("sqlite:/var/lib/hangar/hangar.db").unwrap(),
            DatabaseLocation::SqliteFile(Path::new("/var/lib/hangar/hangar.db"))
        );
        assert_eq!(
            DatabaseLocation::parse("sqlite://data/hangar.db").unwrap(),
            DatabaseLocation::SqliteFile(Path::new("data/hangar.db"))
        );
        assert_eq!(
            DatabaseLocation::parse("./hangar.db").unwrap(),
            DatabaseLocation::SqliteFile(Path::new("./hangar.db"))
        );
        assert_eq!(
            DatabaseLocation::parse("sqlite::memory:").unwrap(),
            DatabaseLocation::SqliteMemory
        );
    }

    #[test]
    fn unknown_schemes_are_refused_with_the_accepted_forms() {
        let err = DatabaseLocation::parse("mysql://h/db")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mysql://") && err.contains("postgres://"),
            "{err}"
        );
        let err = DatabaseLocation::parse("").unwrap_err().to_string();
        assert!(err.contains("sqlite:PATH"), "{err}");
        assert!(DatabaseLocation::parse("sqlite:").is_err());
    }
}
