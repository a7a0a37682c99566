//! Bounded capture of command output that keeps the beginning and the end.

use std::collections::VecDeque;

/// Bytes kept from the start of the output by default.
pub const DEFAULT_HEAD_BYTES: usize = 15 * 1024;
/// Bytes kept from the end of the output by default.
pub const DEFAULT_TAIL_BYTES: usize = 15 * 1024;

/// Output capture with a fixed memory bound: the first `head` bytes, the last
/// `tail` bytes, and a count of what was dropped in between. The start of the
/// output usually says what ran, the end says how it ended.
#[derive(Debug, Clone)]
pub struct CappedOutput {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    total: usize,
}

impl Default for CappedOutput {
    fn default() -> Self {
        Self::new(DEFAULT_HEAD_BYTES, DEFAULT_TAIL_BYTES)
    }
}

impl CappedOutput {
    /// A capture keeping `head` leading and `tail` trailing bytes.
    pub fn new(head: usize, tail: usize) -> Self {
        CappedOutput {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_cap: head,
            tail_cap: tail,
            total: 0,
        }
    }

    /// Appends bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len();
        let room = self.head_cap.saturating_sub(self.head.len());
        if room > 0 {
            let take = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// Bytes seen in total.
    pub fn total_bytes(&self) -> usize {
        self.total
    }

    /// Bytes dropped from the middle.
    pub fn omitted_bytes(&self) -> usize {
        self.total - self.head.len() - self.tail.len()
    }

    /// The captured text (lossy UTF-8), with a note where bytes were omitted.
    pub fn render(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        let omitted = self.omitted_bytes();
        if omitted > 0 {
            out.push_str(&format!("\n[… {omitted} bytes omitted …]\n"));
        }
        let (a, b) = self.tail.as_slices();
        let mut tail = Vec::with_capacity(a.len() + b.len());
        tail.extend_from_slice(a);
        tail.extend_from_slice(b);
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = CappedOutput::new(4, 4);
        c.push(b"abc");
        c.push(b"def");
        c.push(b"gh");
        assert_eq!(c.render(), "abcdefgh");
        assert_eq!(c.omitted_bytes(), 0);
    }

    #[test]
    fn large_output_keeps_head_and_tail() {
        let mut c = CappedOutput::new(4, 4);
        for chunk in [&b"abc"[..], b"defghij", b"k", b"lmnop"] {
            c.push(chunk);
        }
        assert_eq!(c.total_bytes(), 16);
        assert_eq!(c.omitted_bytes(), 8);
        assert_eq!(c.render(), "abcd\n[… 8 bytes omitted …]\nmnop");
    }

    #[test]
    fn one_huge_push() {
        let mut c = CappedOutput::new(2, 3);
        c.push(b"0123456789");
        assert_eq!(c.render(), "01\n[… 5 bytes omitted …]\n789");
    }
}
