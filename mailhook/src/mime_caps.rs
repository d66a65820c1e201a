//! The bounds of a message's MIME structure (see [`crate::message`]): a linear scan of the raw
//! text before mail-parser runs, and a check of the parsed tree after.

use mail_parser::{Message, PartType};

/// How complex a message may be (the `ECHOVALUE_SMTP_MAX_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub parts: usize,
    pub multiparts: usize,
    pub attachments: usize,
    pub depth: usize,
}

/// A message over a cap: the text of its `552 5.3.4` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooComplex(pub &'static str);

/// One pass over the raw lines: Content-Type headers (a name compared as mail-parser reads
/// it: any case, blanks before the colon) and those declaring a multipart, folded or not; and
/// attached messages in base64 or quoted-printable, which RFC 2046 §5.2.1 forbids and which
/// mail-parser would decode and parse unseen by this scan (a digest's parts without a
/// Content-Type are messages too). Header blocks are the runs of lines between empty lines.
pub(crate) fn scan(raw: &[u8], caps: &Caps) -> Result<(), TooComplex> {
    let (mut parts, mut multiparts) = (0usize, 0usize);
    // The header being read, for its folded lines.
    let mut current = Header::Other;
    let mut block = Block::default();
    let mut digest = false;
    for line in raw.split(|&b| b == b'\n') {
        if line.is_empty() || line == b"\r" {
            block.check(digest)?;
            block = Block::default();
            current = Header::Other;
            continue;
        }
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        let value = if folded {
            line
        } else {
            current = Header::Other;
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = line[..colon].trim_ascii_end();
            if name.eq_ignore_ascii_case(b"content-type") {
                parts += 1;
                if parts > caps.parts {
                    return Err(TooComplex("too many MIME parts"));
                }
                block.typed = true;
                current = Header::ContentType { multipart: false };
            } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
                current = Header::Encoding;
            }
            &line[colon + 1..]
        };
        match &mut current {
            Header::ContentType { multipart } => {
                if !*multipart && contains_ignore_case(value, b"multipart") {
                    *multipart = true;
                    multiparts += 1;
                    if multiparts > caps.multiparts {
                        return Err(TooComplex("too many multipart parts"));
                    }
                }
                digest |= contains_ignore_case(value, b"multipart/digest");
                block.message |= contains_ignore_case(value, b"message/rfc822")
                    || contains_ignore_case(value, b"message/global");
            }
            Header::Encoding => {
                block.encoded |= contains_ignore_case(value, b"base64")
                    || contains_ignore_case(value, b"quoted-printable");
            }
            Header::Other => {}
        }
    }
    block.check(digest)
}

enum Header {
    ContentType { multipart: bool },
    Encoding,
    Other,
}

/// What one header block declared.
#[derive(Default)]
struct Block {
    typed: bool,
    message: bool,
    encoded: bool,
}

impl Block {
    fn check(&self, digest: bool) -> Result<(), TooComplex> {
        if self.encoded && (self.message || (digest && !self.typed)) {
            return Err(TooComplex(
                "an attached message in base64 or quoted-printable (RFC 2046 5.2.1)",
            ));
        }
        Ok(())
    }
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The parsed tree within the caps: parts and attachments counted into attached messages,
/// depth without recursion (an attached message is one level deeper).
pub(crate) fn check_tree(msg: &Message<'_>, caps: &Caps) -> Result<(), TooComplex> {
    let (mut parts, mut attachments) = (0usize, 0usize);
    let mut stack: Vec<(&Message<'_>, u32, usize)> = vec![(msg, 0, 1)];
    while let Some((m, id, depth)) = stack.pop() {
        if depth > caps.depth {
            return Err(TooComplex("MIME parts nested too deep"));
        }
        let Some(part) = m.parts.get(id as usize) else {
            continue;
        };
        parts += 1;
        if parts > caps.parts {
            return Err(TooComplex("too many MIME parts"));
        }
        match &part.body {
            PartType::Multipart(children) => {
                // A part is never its own descendant in mail-parser's tree: children come after.
                stack.extend(
                    children
                        .iter()
                        .filter(|&&c| c > id)
                        .map(|&c| (m, c, depth + 1)),
                );
            }
            PartType::Message(nested) => stack.push((nested, 0, depth + 1)),
            _ => {}
        }
        if id == 0 {
            attachments += m.attachments.len();
            if attachments > caps.attachments {
                return Err(TooComplex("too many attachments"));
            }
        }
    }
    Ok(())
}
