//! The SMTP receiver (RFC 5321): accepts connections, runs one session per connection, and
//! hands each recipient check and each finished message to the [`Store`].
//!
//! One recipient per transaction: a second, different RCPT gets `452 4.5.3` and the sender
//! delivers it in a later transaction (RFC 5321 §3.3), so the reply after DATA is always one
//! recipient's stored-or-not. Bounded everywhere: sessions (in all and per address), commands
//! per session, command and text line lengths, message size, a timeout on every read, a
//! deadline for the session and for DATA (which grows only at a minimum rate), the bytes all
//! sessions buffer, and the parse of a message (its complexity, its time, one per core at
//! once, off the async runtime).

use std::sync::Arc;
use std::time::Duration;

use echovalue_common::admission::{Admission, Refused};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::bounds::Bounds;
use crate::message::{self, Caps, Parsed};
use crate::smtp_command::{self, Command, Reply};
use crate::smtp_io::{close, data, read_line, send, Data, Line};
use crate::store::Store;

/// Longest command line (RFC 5321 §4.5.3.1.4 says 512; extensions may add parameters).
const MAX_COMMAND_LINE: usize = 1024;
/// Refused commands a session may send before it is closed.
const MAX_ERRORS: usize = 20;
/// How long past its deadline a session may take to get its last reply out.
const WRITE_GRACE: Duration = Duration::from_secs(10);

fn session_over() -> Reply {
    Reply::new(421, "4.4.2 session time limit reached, closing")
}

/// The receiver's limits (from `config.rs`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub hostname: String,
    pub max_bytes: usize,
    pub max_line_bytes: usize,
    pub max_commands: usize,
    pub max_sessions: usize,
    pub timeout: Duration,
    pub bounds: Bounds,
}

impl Limits {
    fn caps(&self) -> Caps {
        Caps {
            parts: self.bounds.smtp_max_parts,
            multiparts: self.bounds.smtp_max_multiparts,
            attachments: self.bounds.smtp_max_attachments,
            depth: self.bounds.smtp_max_depth,
        }
    }
}

/// What every session shares: the limits, the store, the bytes all sessions may still buffer
/// in DATA (one permit a byte) and the parses that may run at once.
struct Shared {
    limits: Limits,
    store: Store,
    buffered: Arc<Semaphore>,
    parses: Arc<Semaphore>,
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
    let admission = Admission::new(
        limits.max_sessions,
        limits.bounds.smtp_max_sessions_per_address,
    );
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let shared = Arc::new(Shared {
        buffered: Arc::new(Semaphore::new(
            limits
                .bounds
                .smtp_max_buffered_bytes
                .min(Semaphore::MAX_PERMITS),
        )),
        parses: Arc::new(Semaphore::new(cores)),
        limits,
        store,
    });
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match admission.admit(peer.ip(), false) {
            Ok(permit) => {
                let (shared, stop) = (shared.clone(), shutdown.clone());
                tokio::spawn(async move {
                    // The session ends itself at its deadline, on reads; this bounds its writes
                    // too (a client that never reads its replies), with a little room for the 421.
                    let hard_end =
                        Instant::now() + shared.limits.bounds.session_timeout() + WRITE_GRACE;
                    match tokio::time::timeout_at(hard_end, session(stream, &shared, stop)).await {
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "smtp session ended with an error")
                        }
                        Err(_) => {
                            tracing::debug!("smtp session dropped at its deadline (writes blocked)")
                        }
                        Ok(Ok(())) => {}
                    }
                    drop(permit);
                });
            }
            Err(refused) => {
                let busy = match refused {
                    Refused::Total => "4.3.2 too many sessions, try again later",
                    Refused::Address => "4.7.0 too many sessions from your address",
                };
                tokio::spawn(async move {
                    let mut stream = stream;
                    let busy = Reply::new(421, busy);
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        stream.write_all(busy.to_wire().as_bytes()),
                    )
                    .await;
                });
            }
        }
    }
    if tokio::time::timeout(grace, admission.closed())
        .await
        .is_err()
    {
        tracing::warn!("smtp sessions still open after the shutdown grace period");
    }
}

/// Parses a message off the async runtime, within the caps and the parse timeout (counted
/// once it has its place), at most one per core at once. A parse still running at its deadline keeps its place until it ends, so
/// runaway parses never take more than those cores.
async fn parse(shared: &Shared, raw: Vec<u8>) -> Result<Parsed, Reply> {
    let timeout = shared.limits.bounds.parse_timeout();
    // Waiting for a place is the server's load, not the message's fault: 451, try later.
    let Ok(Ok(place)) = tokio::time::timeout(timeout, shared.parses.clone().acquire_owned()).await
    else {
        return Err(Reply::new(451, "4.3.2 busy, try again later"));
    };
    let deadline = Instant::now() + timeout;
    let caps = shared.limits.caps();
    let parsing = tokio::task::spawn_blocking(move || {
        let parsed = message::parse(&raw, &caps);
        drop(place);
        parsed
    });
    match tokio::time::timeout_at(deadline, parsing).await {
        Ok(Ok(Ok(parsed))) => Ok(parsed),
        Ok(Ok(Err(message::TooComplex(why)))) => Err(Reply::new(552, format!("5.3.4 {why}"))),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the parse of a message failed");
            Err(Reply::new(451, "4.3.0 temporary failure, try again later"))
        }
        Err(_) => Err(Reply::new(
            552,
            "5.3.4 message too complex to parse in time",
        )),
    }
}

/// Resolves once shutdown is asked for (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
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
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (limits, store) = (&shared.limits, &shared.store);
    let session_end = Instant::now() + limits.bounds.session_timeout();
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
            () = tokio::time::sleep_until(session_end) => {
                return close(&mut wr, session_over()).await;
            }
        };
        let reply = match read {
            Err(_) => return close(&mut wr, Reply::new(421, "4.4.2 timeout, closing")).await,
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Line::Closed)) => return Ok(()),
            Ok(Ok(Line::TooLong { .. })) => Err(Reply::new(500, "5.5.2 line too long")),
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
                    let budget = (session_end, &shared.buffered);
                    match data(&mut rd, limits, &mut line, budget).await? {
                        Data::Closed => return Ok(()),
                        Data::TimedOut => {
                            return close(&mut wr, Reply::new(421, "4.4.2 timeout, closing")).await;
                        }
                        Data::Refused(reply) => reply,
                        Data::Message(raw, held) => {
                            let bytes = raw.len();
                            let reply = match parse(shared, raw).await {
                                Ok(parsed) => {
                                    let rcpt = envelope.rcpt.unwrap_or_default();
                                    let reply = store.receive(&rcpt, &parsed).await;
                                    tracing::info!(
                                        code = reply.code,
                                        bytes,
                                        attachments = parsed.attachments.len(),
                                        "message"
                                    );
                                    reply
                                }
                                Err(refusal) => {
                                    tracing::info!(code = refusal.code, bytes, "message refused");
                                    refusal
                                }
                            };
                            drop(held);
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
