//! The append-only, fsync'd event spool: one JSON [`SessionEvent`] per line.
//!
//! Group commit: [`Spool::append`] writes the line (into the page cache, so it
//! survives a crash of the agent process) and [`Spool::sync`] makes every
//! line written so far durable with one `fdatasync`. The stream task syncs
//! before it sends anything to the server, so the server never holds an event
//! the spool could lose; the agent loop never waits for the disk.

use hangar_protocol::session::SessionEvent;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The spool file of one execution.
#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
    file: Arc<std::fs::File>,
    /// Lines written since the last [`Spool::sync`].
    dirty: bool,
    /// Reused line buffer.
    line: Vec<u8>,
}

impl Spool {
    /// Opens (creating if needed) the spool at `path` and returns the events it
    /// already holds, so a restarted agent continues the sequence. A torn last
    /// line (a crash mid-append) is cut off.
    pub async fn open(path: &Path) -> io::Result<(Spool, Vec<SessionEvent>)> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
            // The default spool lives inside the workspace; keep it out of commits.
            let ignore = dir.join(".gitignore");
            if dir.file_name().is_some_and(|n| n == ".hangar")
                && !tokio::fs::try_exists(&ignore).await?
            {
                tokio::fs::write(&ignore, "*\n").await?;
            }
        }
        let existing = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let complete = existing
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let mut events = Vec::new();
        for line in existing[..complete]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let event = serde_json::from_slice::<SessionEvent>(line)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            events.push(event);
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        if complete < existing.len() {
            file.set_len(complete as u64).await?;
        }
        Ok((
            Spool {
                path: path.to_path_buf(),
                file: Arc::new(file.into_std().await),
                dirty: false,
                line: Vec::with_capacity(1024),
            },
            events,
        ))
    }

    /// Appends one event: one `write(2)` of the whole line to the page cache
    /// (microseconds; it survives a crash of this process). Durable against a
    /// host crash after the next [`Spool::sync`].
    pub fn append(&mut self, event: &SessionEvent) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, event).map_err(io::Error::other)?;
        self.line.push(b'\n');
        (&*self.file).write_all(&self.line)?;
        self.dirty = true;
        Ok(())
    }

    /// The file handle, for a group-committing `fdatasync` elsewhere.
    pub fn file(&self) -> Arc<std::fs::File> {
        self.file.clone()
    }

    /// Makes every appended line durable (one `fdatasync` for all of them,
    /// off the async threads). A no-op when nothing was appended since.
    #[cfg(test)]
    pub async fn sync(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(io::Error::other)??;
        self.dirty = false;
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_protocol::Timestamp;
    use hangar_protocol::session::EventBody;

    fn event(seq: u64) -> SessionEvent {
        SessionEvent {
            seq,
            at: Timestamp::from_unix_millis(seq as i64),
            body: EventBody::AssistantMessage {
                text: format!("m{seq}"),
            },
        }
    }

    #[tokio::test]
    async fn reopening_returns_what_was_appended_and_drops_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".hangar/session-e1.ndjson");
        let (mut spool, old) = Spool::open(&path).await.unwrap();
        assert!(old.is_empty());
        spool.append(&event(1)).unwrap();
        spool.append(&event(2)).unwrap();
        spool.sync().await.unwrap();
        drop(spool);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".hangar/.gitignore")).unwrap(),
            "*\n"
        );

        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, br#"{"seq":3,"at":"#).unwrap();
        drop(f);

        let (mut spool, old) = Spool::open(&path).await.unwrap();
        assert_eq!(old, vec![event(1), event(2)]);
        spool.append(&event(3)).unwrap();
        drop(spool);
        let (_, old) = Spool::open(&path).await.unwrap();
        assert_eq!(old, vec![event(1), event(2), event(3)]);
    }
}
