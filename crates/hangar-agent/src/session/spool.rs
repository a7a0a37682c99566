//! The append-only, fsync'd event spool: one JSON [`SessionEvent`] per line.

use hangar_protocol::session::SessionEvent;
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The spool file of one execution.
#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
    file: tokio::fs::File,
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
                file,
            },
            events,
        ))
    }

    /// Appends one event and waits until it is on disk.
    pub async fn append(&mut self, event: &SessionEvent) -> io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line).await?;
        self.file.sync_data().await
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
        spool.append(&event(1)).await.unwrap();
        spool.append(&event(2)).await.unwrap();
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
        spool.append(&event(3)).await.unwrap();
        drop(spool);
        let (_, old) = Spool::open(&path).await.unwrap();
        assert_eq!(old, vec![event(1), event(2), event(3)]);
    }
}
