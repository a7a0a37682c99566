//! How the group writer's batches become durable: the sync thread that
//! `fdatasync`s the write-ahead log beside the next batch, and the count of
//! settled batches behind [`super::GroupWriter::settled`].

use super::{Outcome, Published};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, mpsc};
use tokio::sync::watch;

/// See [`GroupWriter::settled`].
#[derive(Debug)]
pub(super) struct Settling {
    pub(super) begun: AtomicU64,
    pub(super) settled: watch::Sender<u64>,
}

impl Settling {
    pub(super) fn settle(&self, batch: u64) {
        self.settled.send_if_modified(|settled| {
            let newer = batch > *settled;
            *settled = (*settled).max(batch);
            newer
        });
    }
}

/// Makes what the writer's connection committed durable.
pub(crate) type SyncFn = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// How a committed batch becomes durable.
pub(crate) enum Durability {
    /// At its COMMIT (`synchronous=FULL`, or a database in memory).
    AtCommit,
    /// By `sync`, on the [`Syncer`]'s thread, after its COMMIT.
    Synced(SyncFn),
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::AtCommit => "AtCommit",
            Durability::Synced(_) => "Synced",
        })
    }
}

/// Syncs the write-ahead log `wal` of a database in `dir`: `fdatasync` of the
/// log, and of the directory too the first time a log file is seen (a log
/// SQLite has just created is otherwise not certain to have a name after a
/// power loss).
pub(crate) fn wal_sync(wal: PathBuf) -> SyncFn {
    let seen = std::sync::Mutex::new(None::<u64>);
    Arc::new(move || {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open(&wal)?;
        file.sync_data()?;
        let inode = file.metadata()?.ino();
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen != Some(inode) {
            if let Some(dir) = wal.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            *seen = Some(inode);
        }
        Ok(())
    })
}

/// The thread that syncs committed batches, several at a time: each sync
/// covers every batch whose COMMIT returned before it began.
pub(super) struct Syncer {
    /// A batch whose COMMIT returned (its number and where its writes wait),
    /// or failed (no one waits; its number only has to settle in order).
    pub(super) queue: mpsc::Sender<(u64, Option<Published>)>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Syncer")
    }
}

impl Syncer {
    /// Starts the thread; it ends once the writer is dropped.
    pub(super) fn start(
        sync: SyncFn,
        broken: Arc<OnceLock<String>>,
        settling: Arc<Settling>,
    ) -> std::io::Result<Self> {
        let (queue, committed) = mpsc::channel::<(u64, Option<Published>)>();
        std::thread::Builder::new()
            .name("hangar-wal-sync".into())
            .spawn(move || {
                while let Ok(first) = committed.recv() {
                    let batches: Vec<(u64, Option<Published>)> =
                        std::iter::once(first).chain(committed.try_iter()).collect();
                    let last = batches.iter().map(|(n, _)| *n).max().unwrap_or(0);
                    let waiting: Vec<Published> =
                        batches.into_iter().filter_map(|(_, w)| w).collect();
                    if waiting.is_empty() {
                        settling.settle(last);
                        continue;
                    }
                    let outcome = match broken.get() {
                        Some(why) => Outcome::broken(why),
                        None => match sync() {
                            Ok(()) => Outcome::Committed,
                            Err(e) => {
                                let why = format!(
                                    "the database's write-ahead log could not be synced to disk ({e}); \
                                     writes are refused until the server is restarted, since what was \
                                     written before the failure may not be on disk"
                                );
                                tracing::error!("{why}");
                                Outcome::broken(broken.get_or_init(|| why))
                            }
                        },
                    };
                    settling.settle(last);
                    for batch in waiting {
                        batch.send_replace(Some(outcome.clone()));
                    }
                }
            })?;
        Ok(Syncer { queue })
    }
}
