//! The SMTP receiver's reads and writes, bounded: one line of at most a given length (never
//! buffering more), the DATA text up to `.` CRLF within the message limits, and replies.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt};

use crate::smtp::Limits;
use crate::smtp_command::Reply;

/// What one line read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, its LF (and CR) included, in the buffer.
    Complete,
    /// Longer than the limit: it was read and thrown away up to its LF.
    TooLong,
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
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Closed);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
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
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// What the DATA phase produced.
pub enum Data {
    Message(Vec<u8>),
    Refused(Reply),
    TimedOut,
    Closed,
}

/// Reads message text up to `.` CRLF, dot-unstuffing. Over the size or line limit the rest
/// is read and dropped (the client is still sending) and the message refused with 552. Only
/// CRLF `.` CRLF ends the text, never a bare LF form (no SMTP smuggling).
pub async fn data<R: AsyncBufRead + Unpin>(
    rd: &mut R,
    limits: &Limits,
    line: &mut Vec<u8>,
) -> std::io::Result<Data> {
    let mut raw = Vec::new();
    let mut refusal: Option<Reply> = None;
    loop {
        let read =
            tokio::time::timeout(limits.timeout, read_line(rd, limits.max_line_bytes, line)).await;
        match read {
            Err(_) => return Ok(Data::TimedOut),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Line::Closed)) => return Ok(Data::Closed),
            Ok(Ok(Line::TooLong)) => {
                refusal.get_or_insert_with(|| Reply::new(552, "5.3.4 message line too long"));
            }
            Ok(Ok(Line::Complete)) => {
                if line.as_slice() == b".\r\n" {
                    break;
                }
                if refusal.is_some() {
                    continue;
                }
                let text = line.strip_prefix(b".").unwrap_or(line);
                if raw.len() + text.len() > limits.max_bytes {
                    refusal = Some(Reply::new(
                        552,
                        "5.3.4 message size exceeds the fixed limit",
                    ));
                    raw = Vec::new();
                } else {
                    raw.extend_from_slice(text);
                }
            }
        }
    }
    Ok(match refusal {
        Some(reply) => Data::Refused(reply),
        None => Data::Message(raw),
    })
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
        assert_eq!(got[1].0, Line::TooLong);
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
        }
    }

    async fn run_data(input: &[u8], max_bytes: usize) -> (Data, Vec<u8>) {
        let mut r = BufReader::new(input);
        let mut line = Vec::new();
        let d = data(&mut r, &limits(max_bytes), &mut line).await.unwrap();
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut rest)
            .await
            .unwrap();
        (d, rest)
    }

    #[tokio::test]
    async fn data_unstuffs_and_ends_only_at_crlf_dot_crlf() {
        let (d, rest) = run_data(b"a\r\n..b\r\n.\n.x\r\n.\r\nQUIT\r\n", 100).await;
        let Data::Message(raw) = d else {
            panic!("not a message")
        };
        assert_eq!(raw, b"a\r\n.b\r\n\nx\r\n");
        assert_eq!(rest, b"QUIT\r\n");
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
