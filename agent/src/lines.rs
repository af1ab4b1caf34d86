//! Cutting a command's output into lines, a batch per read from its pipe.
//!
//! Output is read in chunks of up to [`READ_BYTES`]; every line a chunk finishes goes into
//! one [`LineBatch`], and the sink gets the batch, not each line: under a flood that is a
//! wake-up (and, on an agent, a frame) per 64 KiB instead of per line, while a single line
//! printed alone still goes on at once. A line longer than [`MAX_LINE_BYTES`] is passed on
//! in pieces of that size, so output without newlines cannot grow without bound.
//!
//! The common chunk (valid UTF-8, no `\r`, no overlong line) is already the batch's text up
//! to its last line end: it is checked with one pass each and copied once, not line by line.

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

    /// Appends the lines of a block that [`plain_block`] accepted.
    fn push_block(&mut self, block: &str, lines: usize, longest: usize) {
        if self.lines > 0 {
            self.text.push('\n');
        }
        self.text.push_str(block);
        self.lines += lines;
        self.longest = self.longest.max(longest);
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
        if !self.partial.is_empty() {
            let Some(end) = memchr::memchr(b'\n', bytes) else {
                return self.keep(bytes, batch);
            };
            self.partial.extend_from_slice(&bytes[..end]);
            push_line(&self.partial, batch);
            self.partial.clear();
            bytes = &bytes[end + 1..];
        }
        if let Some(last) = memchr::memrchr(b'\n', bytes) {
            push_lines(&bytes[..last], batch);
            bytes = &bytes[last + 1..];
        }
        self.keep(bytes, batch);
    }

    /// Keeps `bytes`, the start of a line, passing on whole pieces once it grows too long.
    fn keep(&mut self, bytes: &[u8], batch: &mut LineBatch) {
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

/// Ended lines, joined by `\n` (the last one's end not included).
fn push_lines(block: &[u8], batch: &mut LineBatch) {
    match plain_block(block) {
        Some((text, lines, longest)) => batch.push_block(text, lines, longest),
        None => block
            .split(|&b| b == b'\n')
            .for_each(|line| push_line(line, batch)),
    }
}

/// The block as text with its line count and longest line, when it can travel as it is:
/// valid UTF-8, no `\r` to drop, no line to cut.
fn plain_block(block: &[u8]) -> Option<(&str, usize, usize)> {
    if memchr::memchr(b'\r', block).is_some() {
        return None;
    }
    let text = std::str::from_utf8(block).ok()?;
    let (mut lines, mut longest, mut start) = (1, 0, 0);
    for end in memchr::memchr_iter(b'\n', block) {
        longest = longest.max(end - start);
        (lines, start) = (lines + 1, end + 1);
    }
    longest = longest.max(block.len() - start);
    (longest <= MAX_LINE_BYTES).then_some((text, lines, longest))
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

    /// The cutter before its plain-block path: line by line, each checked on its own.
    fn one_by_one(input: &[u8], size: usize) -> LineBatch {
        let (mut partial, mut batch) = (Vec::new(), LineBatch::default());
        for mut bytes in input.chunks(size) {
            while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
                partial.extend_from_slice(&bytes[..end]);
                push_line(&partial, &mut batch);
                partial.clear();
                bytes = &bytes[end + 1..];
            }
            partial.extend_from_slice(bytes);
            while partial.len() >= MAX_LINE_BYTES {
                batch.push_bytes(&partial[..MAX_LINE_BYTES]);
                partial.drain(..MAX_LINE_BYTES);
            }
        }
        if !partial.is_empty() {
            push_line(&partial, &mut batch);
        }
        batch
    }

    /// Random output (plain lines, `\r\n`, bad bytes, empty and overlong lines) cut in
    /// random chunks gives the same batch as cutting it line by line.
    #[test]
    fn plain_blocks_change_nothing() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for round in 0..300 {
            let mut input = Vec::new();
            for _ in 0..next(60) {
                let len = [0, 1, 80, 4000, MAX_LINE_BYTES - 1, MAX_LINE_BYTES + 5][next(6)];
                input.extend((0..len).map(|i| b'a' + (i % 26) as u8));
                match next(10) {
                    0 => input.push(b'\r'),
                    1 => input.push(0xff),
                    2 => input.extend("é".as_bytes()),
                    _ => {}
                }
                input.push(b'\n');
            }
            input.extend(b"tail".iter().take(next(5)));
            let size = [1, 3, 100, 4096, READ_BYTES][round % 5] + next(50);
            let mut cutter = LineCutter::default();
            let mut batch = LineBatch::default();
            for chunk in input.chunks(size) {
                cutter.feed(chunk, &mut batch);
            }
            cutter.finish(&mut batch);
            assert_eq!(
                batch,
                one_by_one(&input, size),
                "round {round}, chunks of {size}"
            );
        }
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
