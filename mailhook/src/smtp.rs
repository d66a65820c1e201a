//! The SMTP receiver (RFC 5321): accepts connections, runs one session per connection, and
//! hands each recipient check and each finished message to the [`Store`].
//!
//! One recipient per transaction: a second, different RCPT gets `452 4.5.3` and the sender
//! delivers it in a later transaction (RFC 5321 §3.3), so the reply after DATA is always one
//! recipient's stored-or-not. Bounded everywhere: sessions (semaphore), commands per session,
//! command and text line lengths, message size, and a timeout on every read.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::message;
use crate::smtp_command::{self, Command, Reply};
use crate::store::Store;

/// Longest command line (RFC 5321 §4.5.3.1.4 says 512; extensions may add parameters).
const MAX_COMMAND_LINE: usize = 1024;
/// Refused commands a session may send before it is closed.
const MAX_ERRORS: usize = 20;

/// The receiver's limits (from `config.rs`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub hostname: String,
    pub max_bytes: usize,
    pub max_line_bytes: usize,
    pub max_commands: usize,
    pub max_sessions: usize,
    pub timeout: Duration,
}

/// Serves SMTP on `listener` until `shutdown` turns true, then waits up to `grace` for open
/// sessions (they are told 421 at their next command).
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    store: Store,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = Arc::new(limits);
    let sessions = Arc::new(Semaphore::new(limits.max_sessions));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping(&mut shutdown) => break,
        };
        let (stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match sessions.clone().try_acquire_owned() {
            Ok(permit) => {
                let (limits, store, stop) = (limits.clone(), store.clone(), shutdown.clone());
                tokio::spawn(async move {
                    if let Err(e) = session(stream, &limits, &store, stop).await {
                        tracing::debug!(error = %e, "smtp session ended with an error");
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut stream = stream;
                    let busy = Reply::new(421, "4.3.2 too many sessions, try again later");
                    let _ = stream.write_all(busy.to_wire().as_bytes()).await;
                });
            }
        }
    }
    let all = u32::try_from(limits.max_sessions).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, sessions.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("smtp sessions still open after the shutdown grace period");
    }
}

/// Resolves once shutdown is asked for (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// What one line read produced.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line, its LF (and CR) included, in the buffer.
    Complete,
    /// Longer than the limit: it was read and thrown away up to its LF.
    TooLong,
    /// The connection closed (a partial last line is dropped).
    Closed,
}

/// Reads one line of at most `max` bytes into `out` without ever buffering more than that.
async fn read_line<R: AsyncBufRead + Unpin>(
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

/// The envelope of the transaction in progress.
#[derive(Default)]
struct Envelope {
    mail: bool,
    rcpt: Option<String>,
}

/// One SMTP session, greeting to QUIT (or timeout, limit, shutdown, disconnect).
async fn session(
    stream: TcpStream,
    limits: &Limits,
    store: &Store,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut wr = BufWriter::new(wr);
    let mut line = Vec::with_capacity(256);
    let mut greeted = false;
    let mut env = Envelope::default();
    let (mut commands, mut errors) = (0usize, 0usize);

    send(
        &mut wr,
        &Reply::new(220, format!("{} ESMTP echovalue mailhook", limits.hostname)),
    )
    .await?;
    loop {
        // PIPELINING: replies to a batch of commands go out together, when its input is used up.
        if rd.buffer().is_empty() {
            wr.flush().await?;
        }
        let read = tokio::select! {
            r = tokio::time::timeout(limits.timeout, read_line(&mut rd, MAX_COMMAND_LINE, &mut line)) => r,
            _ = stopping(&mut shutdown) => {
                return close(&mut wr, Reply::new(421, "4.3.2 service shutting down")).await;
            }
        };
        let reply = match read {
            Err(_) => return close(&mut wr, Reply::new(421, "4.4.2 timeout, closing")).await,
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Line::Closed)) => return Ok(()),
            Ok(Ok(Line::TooLong)) => Err(Reply::new(500, "5.5.2 line too long")),
            Ok(Ok(Line::Complete)) => smtp_command::parse(&line),
        };
        commands += 1;
        if commands > limits.max_commands {
            return close(&mut wr, Reply::new(421, "4.7.0 too many commands, closing")).await;
        }
        let cmd = match reply {
            Ok(cmd) => cmd,
            Err(refusal) => {
                errors += 1;
                if errors > MAX_ERRORS {
                    return close(&mut wr, Reply::new(421, "4.7.0 too many errors, closing")).await;
                }
                send(&mut wr, &refusal).await?;
                continue;
            }
        };
        let reply = match cmd {
            Command::Ehlo(_) => {
                greeted = true;
                env = Envelope::default();
                Reply {
                    code: 250,
                    lines: vec![
                        limits.hostname.clone().into(),
                        format!("SIZE {}", limits.max_bytes).into(),
                        "8BITMIME".into(),
                        "PIPELINING".into(),
                        "ENHANCEDSTATUSCODES".into(),
                    ],
                }
            }
            Command::Helo(_) => {
                greeted = true;
                env = Envelope::default();
                Reply::new(250, limits.hostname.clone())
            }
            Command::Mail { size, .. } => {
                if !greeted {
                    Reply::new(503, "5.5.1 send EHLO or HELO first")
                } else if env.mail {
                    Reply::new(503, "5.5.1 nested MAIL command")
                } else if size.is_some_and(|s| s > limits.max_bytes as u64) {
                    Reply::new(552, "5.3.4 message size exceeds the fixed limit")
                } else {
                    env.mail = true;
                    Reply::new(250, "2.1.0 sender ok")
                }
            }
            Command::Rcpt { to } => {
                if !env.mail {
                    Reply::new(503, "5.5.1 need MAIL before RCPT")
                } else if let Some(first) = &env.rcpt {
                    if first.eq_ignore_ascii_case(&to) {
                        Reply::new(250, "2.1.5 recipient ok")
                    } else {
                        Reply::new(
                            452,
                            "4.5.3 one recipient per message; send again for the others",
                        )
                    }
                } else {
                    let reply = store.rcpt_check(&to).await;
                    if reply.is_ok() {
                        env.rcpt = Some(to);
                    }
                    reply
                }
            }
            Command::Data => {
                if !env.mail {
                    Reply::new(503, "5.5.1 need MAIL before DATA")
                } else if env.rcpt.is_none() {
                    Reply::new(554, "5.5.1 no valid recipients")
                } else {
                    send(&mut wr, &Reply::new(354, "end data with <CR><LF>.<CR><LF>")).await?;
                    wr.flush().await?;
                    let envelope = std::mem::take(&mut env);
                    match data(&mut rd, limits, &mut line).await? {
                        Data::Closed => return Ok(()),
                        Data::TimedOut => {
                            return close(&mut wr, Reply::new(421, "4.4.2 timeout, closing")).await;
                        }
                        Data::Refused(reply) => reply,
                        Data::Message(raw) => {
                            let parsed = message::parse(&raw);
                            let rcpt = envelope.rcpt.unwrap_or_default();
                            let reply = store.receive(&rcpt, &parsed).await;
                            tracing::info!(
                                code = reply.code,
                                bytes = raw.len(),
                                attachments = parsed.attachments.len(),
                                "message"
                            );
                            reply
                        }
                    }
                }
            }
            Command::Rset => {
                env = Envelope::default();
                Reply::new(250, "2.0.0 ok")
            }
            Command::Noop => Reply::new(250, "2.0.0 ok"),
            Command::Vrfy => Reply::new(252, "2.1.5 cannot VRFY user, but will accept message"),
            Command::Expn => Reply::new(502, "5.5.1 EXPN not available"),
            Command::Help => Reply::new(214, "2.0.0 see RFC 5321"),
            Command::NotImplemented => Reply::new(502, "5.5.1 command not implemented"),
            Command::Quit => return close(&mut wr, Reply::new(221, "2.0.0 bye")).await,
        };
        send(&mut wr, &reply).await?;
    }
}

/// What the DATA phase produced.
enum Data {
    Message(Vec<u8>),
    Refused(Reply),
    TimedOut,
    Closed,
}

/// Reads message text up to `.` CRLF, dot-unstuffing. Over the size or line limit the rest
/// is read and dropped (the client is still sending) and the message refused with 552. Only
/// CRLF `.` CRLF ends the text, never a bare LF form (no SMTP smuggling).
async fn data<R: AsyncBufRead + Unpin>(
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

async fn send<W: AsyncWriteExt + Unpin>(wr: &mut W, reply: &Reply) -> std::io::Result<()> {
    wr.write_all(reply.to_wire().as_bytes()).await
}

async fn close<W: AsyncWriteExt + Unpin>(wr: &mut W, reply: Reply) -> std::io::Result<()> {
    send(wr, &reply).await?;
    wr.flush().await?;
    wr.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

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
