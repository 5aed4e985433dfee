//! The request stream a client socket writes, as the kernel sees it: where each request starts,
//! and which command it is. The client does not pipeline, so a request starts at the first byte
//! written on a socket and right after the previous request's body (`Content-Length`; the
//! client never sends chunked bodies). A request is named by its path, `/cmd/<n>` (the harness
//! puts the command's number there, as well as in `X-Cmd` for the device), so it is known once
//! its request line is out: a request cut before that stays unnamed.

/// What one write did to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// A request's first byte.
    Start,
    /// The current request is command `n`.
    Named(u64),
}

/// The parser of one socket's outgoing bytes.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    /// In a request head (its bytes so far in `head`).
    in_head: bool,
    head: Vec<u8>,
    named: bool,
    /// Body bytes still due.
    body_left: usize,
}

impl Outgoing {
    /// Whether the next byte written starts a request.
    pub(crate) fn at_start(&self) -> bool {
        !self.in_head && self.body_left == 0
    }

    /// Follows `bytes` written; returns the starts and names they produced, in order.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Vec<Mark> {
        let mut marks = Vec::new();
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = bytes.len().min(self.body_left);
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            if !self.in_head {
                marks.push(Mark::Start);
                self.in_head = true;
                self.named = false;
                self.head.clear();
            }
            let scan = self.head.len().saturating_sub(3);
            self.head.extend_from_slice(bytes);
            if !self.named
                && let Some(n) = name(&self.head)
            {
                self.named = true;
                marks.push(Mark::Named(n));
            }
            let Some(end) = self.head[scan..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| scan + i + 4)
            else {
                break;
            };
            let over = self.head.len() - end;
            bytes = &bytes[bytes.len() - over..];
            self.head.truncate(end);
            self.body_left = content_length(&self.head);
            self.in_head = false;
        }
        marks
    }
}

/// The command number in a request line `METHOD /cmd/<n> ...`, once its digits are complete.
fn name(head: &[u8]) -> Option<u64> {
    let line = head.split(|&b| b == b'\n').next()?;
    let at = line.windows(5).position(|w| w == b"/cmd/")? + 5;
    let digits = &line[at..];
    let len = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_names_across_short_writes() {
        let req = b"POST /cmd/12 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /cmd/13 HTTP/1.1\r\n\r\n";
        for cut in 1..req.len() {
            let mut o = Outgoing::default();
            let mut marks = o.feed(&req[..cut]);
            marks.extend(o.feed(&req[cut..]));
            assert_eq!(marks, [Mark::Start, Mark::Named(12), Mark::Start, Mark::Named(13)], "cut {cut}");
            assert!(o.at_start());
        }
        let mut o = Outgoing::default();
        assert_eq!(o.feed(b"GET /cmd/1"), [Mark::Start], "digits may go on");
        assert!(!o.at_start());
    }
}
