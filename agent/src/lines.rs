//! Cutting a command's output into lines, a batch per read from its pipe.
//!
//! Output is read in chunks of up to [`READ_BYTES`]; every line a chunk finishes goes into
//! one [`LineBatch`], and the sink gets the batch, not each line: under a flood that is a
//! wake-up (and, on an agent, a frame) per 64 KiB instead of per line, while a single line
//! printed alone still goes on at once. A line longer than [`MAX_LINE_BYTES`] is passed on
//! in pieces of that size, so output without newlines cannot grow without bound.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest line passed on whole; a longer one is cut into pieces of this size.
pub const MAX_LINE_BYTES: usize = 32 * 1024;
/// The most read from a pipe at once (a Linux pipe's default capacity).
pub const READ_BYTES: usize = 64 * 1024;

/// Consecutive lines of one stream: each without its line end, joined by `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineBatch {
    text: String,
    lines: usize,
    longest: usize,
}

impl LineBatch {
    /// Appends one line.
    pub fn push(&mut self, line: &str) {
        debug_assert!(!line.contains('\n'));
        if self.lines > 0 {
            self.text.push('\n');
        }
        self.text.push_str(line);
        self.lines += 1;
        self.longest = self.longest.max(line.len());
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        self.push(&String::from_utf8_lossy(bytes));
    }

    /// The lines, in order.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        let text = (self.lines > 0).then_some(self.text.split('\n'));
        text.into_iter().flatten()
    }

    /// How many lines.
    pub fn len(&self) -> usize {
        self.lines
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The length of the longest line, in bytes.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// The lines joined by `\n`, as they travel.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// Cuts bytes into lines; keeps a line not yet ended for the next chunk.
#[derive(Debug, Default)]
pub struct LineCutter {
    partial: Vec<u8>,
}

impl LineCutter {
    /// Pushes every line `bytes` finishes into `batch` (and pieces of a long unfinished one).
    pub fn feed(&mut self, mut bytes: &[u8], batch: &mut LineBatch) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                push_line(&bytes[..end], batch);
            } else {
                self.partial.extend_from_slice(&bytes[..end]);
                push_line(&self.partial, batch);
                self.partial.clear();
            }
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        if self.partial.len() >= MAX_LINE_BYTES {
            let whole = self.partial.len() / MAX_LINE_BYTES * MAX_LINE_BYTES;
            for piece in self.partial[..whole].chunks(MAX_LINE_BYTES) {
                batch.push_bytes(piece);
            }
            self.partial.drain(..whole);
        }
    }

    /// Pushes the last line, if the output did not end with a line end.
    pub fn finish(&mut self, batch: &mut LineBatch) {
        if !self.partial.is_empty() {
            push_line(&self.partial, batch);
            self.partial.clear();
        }
    }
}

/// One ended line (its `\r` dropped), in pieces if it is too long.
fn push_line(line: &[u8], batch: &mut LineBatch) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() <= MAX_LINE_BYTES {
        return batch.push_bytes(line);
    }
    for piece in line.chunks(MAX_LINE_BYTES) {
        batch.push_bytes(piece);
    }
}

/// Reads `stream` to its end, handing each chunk's lines to `each` (awaited before the next
/// read, so a slow consumer slows the command down through its pipe).
pub async fn read_batches<F, Fut>(mut stream: impl AsyncRead + Unpin, mut each: F)
where
    F: FnMut(LineBatch) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut buffer = vec![0; READ_BYTES];
    let mut cutter = LineCutter::default();
    loop {
        let read = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let mut batch = LineBatch::default();
        cutter.feed(&buffer[..read], &mut batch);
        if !batch.is_empty() {
            each(batch).await;
        }
    }
    let mut batch = LineBatch::default();
    cutter.finish(&mut batch);
    if !batch.is_empty() {
        each(batch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `size` bytes; answers every line.
    fn cut(input: &[u8], size: usize) -> Vec<String> {
        let mut cutter = LineCutter::default();
        let mut batch = LineBatch::default();
        for chunk in input.chunks(size) {
            cutter.feed(chunk, &mut batch);
        }
        cutter.finish(&mut batch);
        batch.lines().map(str::to_string).collect()
    }

    #[test]
    fn lines_are_split_at_newlines_and_capped_whatever_the_chunks() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let input = format!("one\r\ntwo\n\n{long}\nlast");
        for size in [1, 7, 100, MAX_LINE_BYTES, READ_BYTES] {
            let lines = cut(input.as_bytes(), size);
            let lengths: Vec<usize> = lines.iter().map(String::len).collect();
            assert_eq!(lines[..3], ["one", "two", ""], "chunks of {size}");
            assert_eq!(lengths[3..], [MAX_LINE_BYTES, 10, 4], "chunks of {size}");
        }
    }

    #[test]
    fn a_batch_knows_its_lines_and_the_longest() {
        let mut batch = LineBatch::default();
        for line in ["a", "", "ccc"] {
            batch.push(line);
        }
        assert_eq!(batch.lines().collect::<Vec<_>>(), ["a", "", "ccc"]);
        assert_eq!((batch.len(), batch.longest()), (3, 3));
        assert_eq!(LineBatch::default().lines().count(), 0);
        let mut empty_line = LineBatch::default();
        empty_line.push("");
        assert_eq!(empty_line.lines().collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        assert_eq!(cut(b"a\xffb\n", 2), ["a\u{fffd}b"]);
    }

    #[tokio::test]
    async fn a_stream_is_read_in_batches_and_its_last_line_kept() {
        let input = b"1\n2\n3".to_vec();
        let mut seen = Vec::new();
        read_batches(&input[..], |batch| {
            seen.extend(batch.lines().map(str::to_string));
            async {}
        })
        .await;
        assert_eq!(seen, ["1", "2", "3"]);
    }
}
