//! The SMTP receiver's reads and writes, bounded: one line of at most a given length (never
//! buffering more), the DATA text up to CRLF `.` CRLF within the message limits and
//! deadlines, and replies.

use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::smtp::Limits;
use crate::smtp_command::Reply;

/// The buffered bytes a session reserves at a time while its message grows.
const RESERVE_CHUNK: usize = 64 * 1024;

/// What one line read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, its LF (and CR) included, in the buffer.
    Complete,
    /// Longer than the limit: it was read and thrown away up to its LF; `crlf` tells whether
    /// a CR came before that LF.
    TooLong { crlf: bool },
    /// The connection closed (a partial last line is dropped).
    Closed,
}

/// Reads one line of at most `max` bytes into `out` without ever buffering more than that.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<Line> {
    out.clear();
    let mut too_long = false;
    // The byte read last, over fills: whether a CR came before the LF of a dropped line.
    let mut last = 0u8;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Closed);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let crlf = if take >= 2 {
            buf[take - 2] == b'\r'
        } else {
            last == b'\r'
        };
        last = buf[take - 1];
        if !too_long {
            if out.len() + take > max {
                too_long = true;
                out.clear();
            } else {
                out.extend_from_slice(&buf[..take]);
            }
        }
        r.consume(take);
        if done {
            return Ok(if too_long {
                Line::TooLong { crlf }
            } else {
                Line::Complete
            });
        }
    }
}

/// What the DATA phase produced.
pub enum Data {
    /// The text, and its place in the bytes all sessions may buffer (held until it is stored).
    Message(Vec<u8>, Option<OwnedSemaphorePermit>),
    Refused(Reply),
    TimedOut,
    Closed,
}

/// Reads message text up to CRLF `.` CRLF, dot-unstuffing. Over the size or line limit, or
/// beyond the bytes all sessions may buffer (`buffered`), the rest is read and dropped (the
/// client is still sending) and the message refused (552, or 452 to try later). Only CRLF `.`
/// CRLF ends the text: a `.` CRLF line after a bare LF is text (no SMTP smuggling). The read
/// ends at `session_end` or at the DATA deadline, which grows with the bytes received at
/// the minimum rate, whichever comes first.
pub async fn data<R: AsyncBufRead + Unpin>(
    rd: &mut R,
    limits: &Limits,
    line: &mut Vec<u8>,
    (session_end, buffered): (Instant, &Arc<Semaphore>),
) -> std::io::Result<Data> {
    let mut raw = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut refusal: Option<Reply> = None;
    let start = Instant::now();
    let mut received = 0usize;
    // The text starts after the CRLF of the DATA command.
    let mut after_crlf = true;
    loop {
        let deadline = limits
            .bounds
            .data_deadline(start, received)
            .min(session_end);
        let read = tokio::time::timeout(limits.timeout, read_line(rd, limits.max_line_bytes, line));
        let read = match tokio::time::timeout_at(deadline, read).await {
            Ok(read) => read,
            Err(_) => return Ok(Data::TimedOut),
        };
        match read {
            Err(_) => return Ok(Data::TimedOut),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Line::Closed)) => return Ok(Data::Closed),
            Ok(Ok(Line::TooLong { crlf })) => {
                received = received.saturating_add(limits.max_line_bytes);
                after_crlf = crlf;
                refusal.get_or_insert_with(|| Reply::new(552, "5.3.4 message line too long"));
            }
            Ok(Ok(Line::Complete)) => {
                received = received.saturating_add(line.len());
                if after_crlf && line.as_slice() == b".\r\n" {
                    break;
                }
                after_crlf = line.ends_with(b"\r\n");
                if refusal.is_some() {
                    continue;
                }
                let text = line.strip_prefix(b".").unwrap_or(line);
                let size = raw.len() + text.len();
                if size > limits.max_bytes {
                    refusal = Some(Reply::new(
                        552,
                        "5.3.4 message size exceeds the fixed limit",
                    ));
                    (raw, held) = (Vec::new(), None);
                } else if !reserve(buffered, &mut held, size) {
                    refusal = Some(Reply::new(
                        452,
                        "4.3.1 insufficient system storage, try again later",
                    ));
                    (raw, held) = (Vec::new(), None);
                } else {
                    raw.extend_from_slice(text);
                }
            }
        }
    }
    Ok(match refusal {
        Some(reply) => Data::Refused(reply),
        None => Data::Message(raw, held),
    })
}

/// Grows `held` to cover `size` bytes, a chunk at a time; false when the bytes all sessions
/// may buffer are taken.
fn reserve(
    buffered: &Arc<Semaphore>,
    held: &mut Option<OwnedSemaphorePermit>,
    size: usize,
) -> bool {
    let have = held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
    if size <= have {
        return true;
    }
    let want = (size - have).div_ceil(RESERVE_CHUNK) * RESERVE_CHUNK;
    let Ok(more) = buffered
        .clone()
        .try_acquire_many_owned(u32::try_from(want).unwrap_or(u32::MAX))
    else {
        return false;
    };
    match held {
        Some(permit) => permit.merge(more),
        None => *held = Some(more),
    }
    true
}

pub async fn send<W: AsyncWriteExt + Unpin>(wr: &mut W, reply: &Reply) -> std::io::Result<()> {
    wr.write_all(reply.to_wire().as_bytes()).await
}

pub async fn close<W: AsyncWriteExt + Unpin>(wr: &mut W, reply: Reply) -> std::io::Result<()> {
    send(wr, &reply).await?;
    wr.flush().await?;
    wr.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::BufReader;

    async fn lines(input: &[u8], max: usize) -> Vec<(Line, Vec<u8>)> {
        // A 4-byte buffer makes lines span several fills.
        let mut r = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        let mut got = Vec::new();
        loop {
            let l = read_line(&mut r, max, &mut out).await.unwrap();
            let done = l == Line::Closed;
            got.push((l, out.clone()));
            if done {
                return got;
            }
        }
    }

    #[tokio::test]
    async fn lines_are_bounded_and_stay_in_sync() {
        let got = lines(b"ab\r\n0123456789\r\nc\npartial", 6).await;
        assert_eq!(got[0], (Line::Complete, b"ab\r\n".to_vec()));
        assert_eq!(got[1].0, Line::TooLong { crlf: true });
        assert_eq!(got[2], (Line::Complete, b"c\n".to_vec()));
        assert_eq!(got[3].0, Line::Closed);
        assert_eq!(got.len(), 4);
    }

    fn limits(max_bytes: usize) -> Limits {
        Limits {
            hostname: "h".into(),
            max_bytes,
            max_line_bytes: 20,
            max_commands: 10,
            max_sessions: 1,
            timeout: Duration::from_secs(5),
            bounds: crate::bounds::Bounds::default(),
        }
    }

    fn budget(bytes: usize) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(bytes))
    }

    async fn run_data(input: &[u8], max_bytes: usize) -> (Data, Vec<u8>) {
        let mut r = BufReader::new(input);
        let mut line = Vec::new();
        let far = Instant::now() + Duration::from_secs(3600);
        let d = data(
            &mut r,
            &limits(max_bytes),
            &mut line,
            (far, &budget(1 << 20)),
        )
        .await
        .unwrap();
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut rest)
            .await
            .unwrap();
        (d, rest)
    }

    #[tokio::test]
    async fn data_unstuffs_and_ends_only_at_crlf_dot_crlf() {
        let (d, rest) = run_data(b"a\r\n..b\r\n.\n.x\r\n.\r\nQUIT\r\n", 100).await;
        let Data::Message(raw, _) = d else {
            panic!("not a message")
        };
        assert_eq!(raw, b"a\r\n.b\r\n\nx\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[tokio::test]
    async fn lf_dot_crlf_does_not_end_data() {
        // After a bare LF, `.` CRLF is text; only CRLF `.` CRLF ends it.
        let (d, rest) = run_data(b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n", 100).await;
        let Data::Message(raw, _) = d else {
            panic!("not a message")
        };
        assert_eq!(raw, b"a\n\r\nMAIL FROM:<x@y>\r\n");
        assert_eq!(rest, b"QUIT\r\n");
        // Also after a dropped over-long line that ended in a bare LF.
        let long = [&[b'x'; 30][..], b"\n.\r\nmore\r\n.\r\nNOOP\r\n"].concat();
        let (d, rest) = run_data(&long, 1000).await;
        assert!(matches!(d, Data::Refused(r) if r.code == 552));
        assert_eq!(rest, b"NOOP\r\n");
    }

    #[tokio::test]
    async fn buffered_bytes_are_shared_and_given_back() {
        let shared = budget(2 * RESERVE_CHUNK);
        let far = Instant::now() + Duration::from_secs(3600);
        let read = |input: &'static [u8], shared: Arc<Semaphore>| async move {
            let mut line = Vec::new();
            let mut r = BufReader::new(input);
            data(&mut r, &limits(1 << 20), &mut line, (far, &shared))
                .await
                .unwrap()
        };
        let first = read(b"hello\r\n.\r\n", shared.clone()).await;
        let Data::Message(_, Some(held)) = &first else {
            panic!("not a message")
        };
        assert_eq!(held.num_permits(), RESERVE_CHUNK);
        let second = read(b"hi\r\n.\r\n", shared.clone()).await;
        assert!(matches!(second, Data::Message(..)));
        // Both chunks are held: a third message must wait (452), until one is stored.
        let third = read(b"hey\r\n.\r\n", shared.clone()).await;
        assert!(matches!(third, Data::Refused(r) if r.code == 452));
        drop(first);
        assert!(matches!(
            read(b"hey\r\n.\r\n", shared.clone()).await,
            Data::Message(..)
        ));
        drop(second);
        assert_eq!(shared.available_permits(), 2 * RESERVE_CHUNK);
    }

    #[tokio::test(start_paused = true)]
    async fn data_slower_than_the_minimum_rate_times_out() {
        let mut l = limits(1 << 20);
        l.bounds.smtp_data_timeout_secs = 10;
        l.bounds.smtp_min_data_rate = 100;
        let (client, server) = tokio::io::duplex(64);
        let mut r = BufReader::new(server);
        let trickle = tokio::spawn(async move {
            let mut client = client;
            // 10 bytes a second: a tenth of the minimum rate, forever.
            loop {
                if client.write_all(b"012345678\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        let mut line = Vec::new();
        let d = data(&mut r, &l, &mut line, (far, &budget(1 << 20)))
            .await
            .unwrap();
        assert!(matches!(d, Data::TimedOut));
        // 10 s, plus 1 s per 100 bytes received (about 110 bytes by then)
        assert!(
            start.elapsed() >= Duration::from_secs(11),
            "{:?}",
            start.elapsed()
        );
        assert!(
            start.elapsed() <= Duration::from_secs(13),
            "{:?}",
            start.elapsed()
        );
        // and the session's own deadline comes first when it is sooner
        let (_silent, server) = tokio::io::duplex(64);
        let mut r = BufReader::new(server);
        let soon = Instant::now() + Duration::from_secs(2);
        let d = data(&mut r, &l, &mut line, (soon, &budget(1 << 20)))
            .await
            .unwrap();
        assert!(matches!(d, Data::TimedOut));
        assert_eq!(Instant::now(), soon);
        trickle.abort();
    }

    #[tokio::test]
    async fn data_over_limits_is_drained_and_refused() {
        let (d, rest) = run_data(b"0123456789\r\n0123456789\r\n.\r\nNOOP\r\n", 15).await;
        let Data::Refused(r) = d else {
            panic!("accepted")
        };
        assert_eq!(r.code, 552);
        assert_eq!(rest, b"NOOP\r\n");
        let long = [&[b'x'; 30][..], b"\r\n.\r\nNOOP\r\n"].concat();
        let (d, rest) = run_data(&long, 1000).await;
        let Data::Refused(r) = d else {
            panic!("accepted")
        };
        assert_eq!(r.code, 552);
        assert_eq!(rest, b"NOOP\r\n");
        let (d, _) = run_data(b"a\r\nno end", 1000).await;
        assert!(matches!(d, Data::Closed));
    }
}
