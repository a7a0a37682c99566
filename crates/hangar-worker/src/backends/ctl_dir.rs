//! Files in a directory a task can write to (the Docker backend's control
//! directory, mounted into the container): the worker reads and writes them
//! only through a descriptor of the directory, never following a symlink and
//! never opening anything but a regular file, so a task that swaps a control
//! file for a symlink (to `/root/.bashrc`, say) or a FIFO cannot make the
//! worker write, read or block on a host file (issue 11, item 4).

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// An open control directory.
#[derive(Debug)]
pub(crate) struct CtlDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn io(e: nix::Error) -> std::io::Error {
    std::io::Error::from(e)
}

impl CtlDir {
    /// Opens `path`, which must be a directory and not a symlink.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        Ok(CtlDir {
            fd,
            path: path.to_owned(),
        })
    }

    /// Where the directory is, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces `name` (whatever it is: a file, a symlink) with a new regular
    /// file holding `bytes`. `O_CREAT | O_EXCL | O_NOFOLLOW`: if the task puts
    /// something back in between, the open fails instead of following it.
    pub(crate) fn replace(&self, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(io(e)),
        }
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(io)?;
        // The umask may have narrowed the mode; set it as asked.
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(io)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)
    }

    /// Reads `name` if it is a regular file (not a symlink, FIFO or device),
    /// up to `limit` bytes.
    pub(crate) fn read(&self, name: &str, limit: u64) -> std::io::Result<String> {
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        let stat = fstat(&fd).map_err(io)?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file",
                self.path.join(name).display()
            )));
        }
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(limit)
            .read_to_string(&mut text)?;
        Ok(text)
    }

    /// Whether `name` exists as a regular file (a symlink does not count).
    pub(crate) fn has_file(&self, name: &str) -> bool {
        nix::sys::stat::fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let ctl = tmp.path().join("ctl");
        std::fs::create_dir(&ctl).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "host file\n").unwrap();
        std::os::unix::fs::symlink(&victim, ctl.join("execution")).unwrap();
        let dir = CtlDir::open(&ctl).unwrap();
        // Reading through the symlink is refused.
        assert!(dir.read("execution", 1024).is_err());
        assert!(!dir.has_file("execution"));
        // Writing replaces the symlink, the target is untouched.
        dir.replace("execution", b"exec-2", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file\n");
        assert_eq!(dir.read("execution", 1024).unwrap(), "exec-2");
        assert!(dir.has_file("execution"));
        // The directory itself may not be a symlink either.
        let link = tmp.path().join("ctl-link");
        std::os::unix::fs::symlink(&ctl, &link).unwrap();
        assert!(CtlDir::open(&link).is_err());
        // A FIFO is not read (the worker would block on it).
        nix::unistd::mkfifo(&ctl.join("setup-failed"), Mode::from_bits_truncate(0o644)).unwrap();
        assert!(dir.read("setup-failed", 1024).is_err());
    }
}
