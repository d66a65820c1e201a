//! The token format: `ev_tok_sk_live_` + 32 base36 characters + a 6-character checksum
//! (CRC-32 of the first 47 characters, mod 36^6, base36, zero-padded). Of the 32 characters,
//! the first 8 are the wallet key, the wallet's id in base36, zero-padded, shared by every
//! token of the wallet; the other 24 are random (124 bits). The key lets a call name the shard
//! of its wallet without a lookup (SPEC section 18). Tokens made before extension 0.9.0 have
//! 32 random characters; echovalue.token_legacy maps them to their wallet. Mailbox addresses
//! carry the same key (`mailbox_wallet`).
//!
//! The checksum lets the proxy and the database refuse a mistyped token without a lookup,
//! and the fixed prefix lets secret scanners recognise leaked tokens.

use pgrx::prelude::*;
use sha2::{Digest, Sha256};

const PREFIX: &str = "ev_tok_sk_live_";
/// The wallet key and the random part.
const BODY_CHARS: usize = 32;
/// The wallet key: the first characters after the prefix.
const KEY_CHARS: usize = 8;
/// Wallet ids are below 36^8, so that every id fits the key.
const WALLET_ID_END: u64 = 36u64.pow(KEY_CHARS as u32);
const CHECKSUM_CHARS: usize = 6;
/// The random part of a mailbox's local part, after its wallet key: 12 bytes in hex.
const MAILBOX_RANDOM_HEX: usize = 24;
const TOKEN_LEN: usize = PREFIX.len() + BODY_CHARS + CHECKSUM_CHARS;
const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Largest multiple of 36 that fits a byte: bytes at or above it are redrawn so every
/// character is equally likely.
const UNBIASED_LIMIT: u8 = 252;

/// The 6-character checksum of a token body.
fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes()) % 36u32.pow(CHECKSUM_CHARS as u32);
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE36[(n % 36) as usize];
        n /= 36;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Whether `token` has the token format and a matching checksum (no database lookup).
pub fn is_well_formed(token: &str) -> bool {
    if token.len() != TOKEN_LEN || !token.is_ascii() || !token.starts_with(PREFIX) {
        return false;
    }
    let body = &token[..PREFIX.len() + BODY_CHARS];
    let random = &body[PREFIX.len()..];
    random.bytes().all(|b| BASE36.contains(&b)) && checksum(body) == token[body.len()..]
}

/// The wallet id a well-formed token names in its key (for a token made before 0.9.0, a
/// number that names no wallet of it: its key characters are random).
pub fn wallet_key(token: &str) -> Option<i64> {
    if !is_well_formed(token) {
        return None;
    }
    // is_well_formed checked the alphabet: every byte is a base36 digit
    Some(key_value(
        &token.as_bytes()[PREFIX.len()..PREFIX.len() + KEY_CHARS],
    ))
}

/// The wallet key of wallet `wallet`: its id in base36, zero-padded; None outside 0..36^8.
fn key_of(wallet: i64) -> Option<[u8; KEY_CHARS]> {
    let mut n = u64::try_from(wallet).ok().filter(|&n| n < WALLET_ID_END)?;
    let mut key = [b'0'; KEY_CHARS];
    for slot in key.iter_mut().rev() {
        *slot = BASE36[(n % 36) as usize];
        n /= 36;
    }
    Some(key)
}

/// The wallet id a key names; `key` is KEY_CHARS base36 digits (the caller checked).
fn key_value(key: &[u8]) -> i64 {
    // below 36^8, so it fits
    key.iter().fold(0i64, |n, &b| n * 36 + digit(b))
}

/// The wallet a mailbox's local part names (SPEC section 18): a mailbox made since extension
/// 0.11.0 is the wallet key and 24 random lowercase hex digits (96 bits); None for any other
/// text, among them the 24 hex digits of a mailbox made before, which
/// echovalue.mailbox_legacy maps to its wallet.
pub fn mailbox_wallet(local: &str) -> Option<i64> {
    let b = local.as_bytes();
    let well_formed = b.len() == KEY_CHARS + MAILBOX_RANDOM_HEX
        && b[..KEY_CHARS].iter().all(|c| BASE36.contains(c))
        && b[KEY_CHARS..]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    well_formed.then(|| key_value(&b[..KEY_CHARS]))
}

fn digit(b: u8) -> i64 {
    match b {
        b'0'..=b'9' => i64::from(b - b'0'),
        _ => i64::from(b - b'a') + 10,
    }
}

/// Appends `n` characters drawn uniformly from the base36 alphabet.
fn push_random(out: &mut String, n: usize) -> Result<(), getrandom::Error> {
    let end = out.len() + n;
    let mut pool = [0u8; 64];
    while out.len() < end {
        getrandom::fill(&mut pool)?;
        for &b in pool.iter().filter(|&&b| b < UNBIASED_LIMIT) {
            if out.len() == end {
                break;
            }
            out.push(BASE36[(b % 36) as usize] as char);
        }
    }
    Ok(())
}

/// A new token of wallet `wallet` (0 <= wallet < 36^8) from the operating system's random
/// source; None for a wallet id outside the key's range.
pub fn generate(wallet: i64) -> Result<Option<String>, getrandom::Error> {
    let Some(key) = key_of(wallet) else {
        return Ok(None);
    };
    let mut body = String::with_capacity(TOKEN_LEN);
    body.push_str(PREFIX);
    body.extend(key.iter().map(|&b| b as char));
    push_random(&mut body, BODY_CHARS - KEY_CHARS)?;
    let sum = checksum(&body);
    body.push_str(&sum);
    Ok(Some(body))
}

/// A new random wallet id, 1 <= id < 36^8 (token_new retries on the rare collision).
pub fn new_wallet_id() -> Result<i64, getrandom::Error> {
    let mut bytes = [0u8; 8];
    loop {
        getrandom::fill(&mut bytes)?;
        // 42 random bits, redrawn above the range: every id is equally likely
        let n = u64::from_le_bytes(bytes) >> 22;
        if (1..WALLET_ID_END).contains(&n) {
            return Ok(n as i64);
        }
    }
}

/// A token as versions before 0.9.0 made them: 32 random characters, no wallet key.
pub fn generate_keyless() -> Result<String, getrandom::Error> {
    let mut body = String::with_capacity(TOKEN_LEN);
    body.push_str(PREFIX);
    push_random(&mut body, BODY_CHARS)?;
    let sum = checksum(&body);
    body.push_str(&sum);
    Ok(body)
}

pub fn random_failed(e: getrandom::Error) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        format!("echovalue: operating system random source failed: {e}")
    );
}

/// Whether a token is well formed (prefix, length, alphabet, checksum).
#[pg_extern(immutable, strict, parallel_safe)]
fn token_format_ok(token: &str) -> bool {
    is_well_formed(token)
}

/// `echovalue._token_hash(token)`: the SHA-256 a token is stored and looked up by, or NULL
/// for a malformed token, which then matches no token. (`_wallet_resolve` runs it on every
/// request; as SQL, the format check, `convert_to` and `sha256` were an expression set up
/// again in every transaction.)
#[pg_extern(immutable, strict, parallel_safe, name = "_token_hash")]
fn token_hash(token: &str) -> Option<Vec<u8>> {
    is_well_formed(token).then(|| Sha256::digest(token.as_bytes()).to_vec())
}

/// `echovalue.token_wallet(token)`: the wallet id a token's key names, or NULL for a
/// malformed token. Immutable, so a call's shard is known from its arguments alone: Postgres
/// folds a call on a constant to its value, which is what Citus needs to route an API call by
/// its `wallet` argument (the proxy passes `wallet => echovalue.token_wallet($1)`). Public: the
/// id is no secret, every token of the wallet spells it.
#[pg_extern(immutable, strict, parallel_safe)]
fn token_wallet(token: &str) -> Option<i64> {
    wallet_key(token)
}

/// `echovalue.recipient_wallet(recipient)`: the wallet an envelope recipient's local part
/// names (compared ignoring ASCII case, as mail routing does): a token's key, or a mailbox's
/// first 8 characters; NULL for anything else, such as a mailbox made before 0.11.0.
/// Immutable for the same reason as token_wallet: the mailhook passes `wallet =>
/// echovalue.recipient_wallet($1)`, and `_mail_route` reads the wallet from the address the
/// same way, never from that argument.
#[pg_extern(immutable, strict, parallel_safe)]
fn recipient_wallet(recipient: &str) -> Option<i64> {
    let local = recipient.rsplit_once('@')?.0.to_ascii_lowercase();
    wallet_key(&local).or_else(|| mailbox_wallet(&local))
}

/// `echovalue._wallet_key(wallet)`: the 8 characters that name the wallet in its tokens and
/// mailbox addresses.
#[pg_extern(immutable, strict, parallel_safe, name = "_wallet_key")]
fn wallet_key_text(p_wallet: i64) -> String {
    match key_of(p_wallet) {
        Some(key) => key.iter().map(|&b| b as char).collect(),
        None => out_of_range(p_wallet),
    }
}

fn out_of_range(wallet: i64) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        format!("echovalue: wallet id {wallet} does not fit a wallet key")
    );
}

/// A new token of wallet p_wallet; the caller stores only its SHA-256.
/// (Not `token_generate`: that is the symbol of 0.8.0's `_token_generate()`, compat.rs.)
#[pg_extern(volatile, strict, parallel_safe, name = "_token_generate")]
fn wallet_token_generate(p_wallet: i64) -> String {
    match generate(p_wallet) {
        Ok(Some(token)) => token,
        Ok(None) => out_of_range(p_wallet),
        Err(e) => random_failed(e),
    }
}

/// A new random wallet id (1 to 36^8 - 1), the key its tokens carry.
#[pg_extern(volatile, parallel_safe, name = "_wallet_id_new")]
fn wallet_id_new() -> i64 {
    new_wallet_id().unwrap_or_else(|e| random_failed(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = generate(42).unwrap().unwrap();
        let b = generate(42).unwrap().unwrap();
        assert_eq!(a.len(), 53);
        assert!(is_well_formed(&a), "{a}");
        assert!(is_well_formed(&b), "{b}");
        assert_ne!(a, b);
        // the wallet key is shared, the rest differs
        assert_eq!(&a[..23], "ev_tok_sk_live_00000016");
        assert_eq!(&a[..23], &b[..23]);
        assert_ne!(&a[23..47], &b[23..47]);
    }

    #[test]
    fn the_wallet_key_names_its_wallet() {
        for wallet in [0, 1, 35, 36, 1_234_567_890, WALLET_ID_END as i64 - 1] {
            let token = generate(wallet).unwrap().unwrap();
            assert_eq!(wallet_key(&token), Some(wallet), "{token}");
        }
        assert_eq!(generate(WALLET_ID_END as i64).unwrap(), None);
        assert_eq!(generate(-1).unwrap(), None);
        let last = generate(WALLET_ID_END as i64 - 1).unwrap().unwrap();
        assert_eq!(&last[15..23], "zzzzzzzz");
        assert_eq!(wallet_key("ev_tok_sk_live_x"), None);
        let mut typo = last.into_bytes();
        typo[16] = b'y';
        assert_eq!(wallet_key(&String::from_utf8(typo).unwrap()), None);
    }

    #[test]
    fn a_recipient_names_its_wallet_by_token_or_mailbox() {
        let token = generate(1_234_567).unwrap().unwrap();
        assert_eq!(
            recipient_wallet(&format!("{token}@mail.test")),
            Some(1_234_567)
        );
        assert_eq!(
            recipient_wallet(&format!("{}@X@mail.test", token.to_uppercase())),
            None
        );
        let key: String = key_of(1_234_567)
            .unwrap()
            .iter()
            .map(|&b| b as char)
            .collect();
        let mailbox = format!("{key}0123456789abcdef01234567");
        assert_eq!(mailbox_wallet(&mailbox), Some(1_234_567));
        assert_eq!(
            recipient_wallet(&format!("{}@Mail.Test", mailbox.to_uppercase())),
            Some(1_234_567)
        );
        // a mailbox made before 0.11.0, a wrong length, a non-hex random part, no domain
        assert_eq!(recipient_wallet("0123456789abcdef01234567@mail.test"), None);
        assert_eq!(recipient_wallet(&format!("{mailbox}0@mail.test")), None);
        assert_eq!(
            recipient_wallet(&format!("{key}0123456789abcdef0123456g@mail.test")),
            None
        );
        assert_eq!(recipient_wallet(&mailbox), None);
        // multi-byte text of the right byte length must not panic on slicing
        assert_eq!(mailbox_wallet(&format!("é{}", &mailbox[2..])), None);
        assert_eq!(
            mailbox_wallet(&format!("zzzzzzzz{}", "f".repeat(24))),
            Some(WALLET_ID_END as i64 - 1)
        );
    }

    #[test]
    fn keyless_tokens_are_well_formed() {
        let a = generate_keyless().unwrap();
        assert!(is_well_formed(&a), "{a}");
        assert_ne!(a, generate_keyless().unwrap());
    }

    #[test]
    fn new_wallet_ids_are_in_range_and_spread() {
        let ids: Vec<i64> = (0..200).map(|_| new_wallet_id().unwrap()).collect();
        assert!(ids.iter().all(|&n| (1..WALLET_ID_END as i64).contains(&n)));
        // 200 draws from 2.8e12 values: a repeat or a low range means a broken draw
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 200);
        assert!(ids.iter().any(|&n| n > WALLET_ID_END as i64 / 2));
    }

    #[test]
    fn checksum_is_zero_padded_base36_of_crc32() {
        let body = format!("{PREFIX}{}", "0".repeat(32));
        let n = crc32fast::hash(body.as_bytes()) % 2_176_782_336;
        let sum = checksum(&body);
        assert_eq!(sum.len(), 6);
        assert_eq!(u32::from_str_radix(&sum, 36).unwrap(), n);
    }

    #[test]
    fn rejects_bad_tokens() {
        let good = generate(7).unwrap().unwrap();
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&good[..52]));
        assert!(!is_well_formed(&format!("{good}x")));
        assert!(!is_well_formed(&good.replacen("ev_tok", "ev_tik", 1)));
        assert!(!is_well_formed(&good.to_uppercase()));
        // One changed random character breaks the checksum.
        let mut chars: Vec<char> = good.chars().collect();
        chars[20] = if chars[20] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(!is_well_formed(&typo));
        // Multi-byte input of the right byte length must not panic on slicing.
        assert!(!is_well_formed(&format!(
            "{PREFIX}{}é{}",
            "a".repeat(30),
            "b".repeat(5)
        )));
    }
}
