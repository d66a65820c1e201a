//! The custom webhook template (SPEC §12, format `custom`): a JSON value whose strings hold
//! `{{…}}` placeholders filled from a payload.
//!
//! A placeholder is one or more alternatives separated by `|`; the first that gives a
//! non-empty text wins, and a missing value is the empty string:
//!
//! ```text
//! placeholder := "{{" alt ( "|" alt )* "}}"          (spaces around each alt are ignored)
//! alt         := path | literal
//! path        := name ( "." name | "[" "-"? digits "]" )*     e.g. attachments[-1].filename
//! name        := [A-Za-z0-9_-]+
//! literal     := '"' ( any character but '"' and '\' | '\"' | '\\' )* '"'
//! ```
//!
//! A filled value is a string as it is, a number or boolean as its JSON text, an object or
//! array as its compact JSON; it is then part of a JSON string, so serialising the result
//! escapes it (no value can break out of its string). Written by hand: no maintained crate
//! has this grammar (handlebars and tera are text engines that neither JSON-escape into a
//! JSON value nor take `|` fallbacks), and it is small.
//!
//! Bounds: the template is at most [`MAX_BYTES`] bytes and [`MAX_DEPTH`] levels deep (checked
//! when it is configured, [`template_error`]); rendering fills at most [`FILL_BUDGET`] bytes
//! in all, so a template that repeats `{{text}}` cannot multiply a large mail.

use std::borrow::Cow;

use serde_json::Value;

/// Longest template, in bytes of its JSON text.
pub const MAX_BYTES: usize = 2048;
/// Deepest nesting of arrays and objects (a scalar is level 0, `{"a":1}` level 1).
pub const MAX_DEPTH: usize = 5;
/// Bytes of filled values one rendering may add; a value past it is cut (at a character).
pub const FILL_BUDGET: usize = 1 << 20;
/// Most steps in one path (`a.b[0]` is three).
const MAX_PATH_STEPS: usize = 16;

/// One alternative of a placeholder.
#[derive(Debug, Clone, PartialEq)]
enum Alt {
    Path(Vec<Step>),
    Literal(String),
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(i64),
}

/// A piece of a template string: text kept as written, or a placeholder.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Fill(Vec<Alt>),
}

/// The pieces of one template string, or why it does not parse.
fn pieces(s: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_owned()));
        }
        let (alts, after) = placeholder(&rest[open + 2..])?;
        out.push(Piece::Fill(alts));
        rest = after;
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    Ok(out)
}

/// Parses the alternatives after `{{` up to `}}`; returns them and the text after `}}`.
fn placeholder(s: &str) -> Result<(Vec<Alt>, &str), String> {
    let mut alts = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(' ');
        let alt;
        (alt, rest) = if let Some(lit) = rest.strip_prefix('"') {
            literal(lit)?
        } else {
            path(rest)?
        };
        alts.push(alt);
        rest = rest.trim_start_matches(' ');
        if let Some(after) = rest.strip_prefix("}}") {
            return Ok((alts, after));
        }
        rest = rest
            .strip_prefix('|')
            .ok_or("template placeholder must end with }} (or go on with |)")?;
    }
}

/// A quoted literal after its opening quote.
fn literal(s: &str) -> Result<(Alt, &str), String> {
    let mut text = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((Alt::Literal(text), &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => text.push(e),
                _ => return Err("template literal may only escape \" and \\".to_owned()),
            },
            c => text.push(c),
        }
    }
    Err("template literal is not closed".to_owned())
}

/// A path: a name, then `.name` and `[index]` steps.
fn path(s: &str) -> Result<(Alt, &str), String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let name_end = |t: &str| t.find(|c: char| !is_name(c)).unwrap_or(t.len());
    let bad = || "template placeholder must be a path like from.email or a \"literal\"".to_owned();
    let end = name_end(s);
    if end == 0 {
        return Err(bad());
    }
    let mut steps = vec![Step::Key(s[..end].to_owned())];
    let mut rest = &s[end..];
    loop {
        if let Some(after) = rest.strip_prefix('.') {
            let end = name_end(after);
            if end == 0 {
                return Err(bad());
            }
            steps.push(Step::Key(after[..end].to_owned()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']').ok_or_else(bad)?;
            let digits = &after[..close];
            let valid = digits.strip_prefix('-').unwrap_or(digits);
            if valid.is_empty() || valid.len() > 9 || !valid.bytes().all(|b| b.is_ascii_digit()) {
                return Err("template index must be an integer like [0] or [-1]".to_owned());
            }
            steps.push(Step::Index(digits.parse().map_err(|_| bad())?));
            rest = &after[close + 1..];
        } else {
            break;
        }
        if steps.len() > MAX_PATH_STEPS {
            return Err(format!(
                "template path must have at most {MAX_PATH_STEPS} steps"
            ));
        }
    }
    Ok((Alt::Path(steps), rest))
}

/// Nesting depth of arrays and objects.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Why a template (its JSON text) is refused, or `None`: not JSON, too large, too deep, or a
/// string whose placeholders do not parse. The text is the rule, without `Bad Request: `.
pub fn template_error(text: &str) -> Option<String> {
    if text.len() > MAX_BYTES {
        return Some(format!("template must be at most {MAX_BYTES} bytes"));
    }
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Some("template must be a JSON value".to_owned());
    };
    if depth(&value) > MAX_DEPTH {
        return Some(format!("template must be at most {MAX_DEPTH} levels deep"));
    }
    strings_error(&value)
}

fn strings_error(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => pieces(s).err(),
        Value::Array(a) => a.iter().find_map(strings_error),
        Value::Object(o) => o.values().find_map(strings_error),
        _ => None,
    }
}

/// The value a path names in `data`, if any.
fn lookup<'a>(data: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    steps.iter().try_fold(data, |v, step| match *step {
        Step::Key(ref k) => v.as_object()?.get(k),
        Step::Index(i) => {
            let a = v.as_array()?;
            let at = if i < 0 {
                a.len()
                    .checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
            } else {
                usize::try_from(i).ok()?
            };
            a.get(at)
        }
    })
}

/// A filled value's text (a string is not copied).
fn text_of(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Null => Cow::Borrowed(""),
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// Fills one string's placeholders, spending at most `budget` bytes of filled text.
fn fill(s: &str, data: &Value, budget: &mut usize) -> String {
    // A string that does not parse was refused at configuration; keep it as written.
    let Ok(pieces) = pieces(s) else {
        return s.to_owned();
    };
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            // once the budget is spent, later placeholders are not even looked up
            Piece::Fill(_) if *budget == 0 => {}
            Piece::Fill(alts) => {
                let value = alts
                    .iter()
                    .map(|alt| match alt {
                        Alt::Literal(l) => Cow::Borrowed(l.as_str()),
                        Alt::Path(p) => lookup(data, p).map_or(Cow::Borrowed(""), text_of),
                    })
                    .find(|t| !t.is_empty())
                    .unwrap_or_default();
                let cut = floor_char_boundary(&value, *budget);
                *budget -= cut;
                out.push_str(&value[..cut]);
            }
        }
    }
    out
}

/// The largest index at most `at` that is a character boundary of `s`.
pub fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

/// The template with every string's placeholders filled from `data` (keys are kept as written).
pub fn render(template: &Value, data: &Value) -> Value {
    let mut budget = FILL_BUDGET;
    render_with(template, data, &mut budget)
}

fn render_with(v: &Value, data: &Value, budget: &mut usize) -> Value {
    match v {
        Value::String(s) => Value::String(fill(s, data, budget)),
        Value::Array(a) => Value::Array(a.iter().map(|x| render_with(x, data, budget)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), render_with(x, data, budget)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> Value {
        json!({"from": {"email": "a@example.com", "name": ""}, "subject": "Hi \"there\"",
               "text": "", "html": "<p>x</p>", "n": 3, "ok": true,
               "attachments": [{"filename": "one.pdf"}, {"filename": "two.png"}]})
    }

    fn r(t: Value) -> Value {
        render(&t, &data())
    }

    #[test]
    fn paths_indexes_fallbacks_and_literals() {
        assert_eq!(r(json!("{{from.email}}")), json!("a@example.com"));
        assert_eq!(r(json!("{{attachments[0].filename}}")), json!("one.pdf"));
        assert_eq!(r(json!("{{attachments[-1].filename}}")), json!("two.png"));
        assert_eq!(r(json!("{{attachments[-3].filename}}")), json!(""));
        assert_eq!(r(json!("{{attachments[7].filename}}")), json!(""));
        assert_eq!(r(json!("{{text|html}}")), json!("<p>x</p>"));
        assert_eq!(r(json!("{{ from.name | \"unknown\" }}")), json!("unknown"));
        assert_eq!(r(json!("{{missing.deep[2]}}")), json!(""));
        assert_eq!(r(json!("n={{n}} ok={{ok}}")), json!("n=3 ok=true"));
        assert_eq!(
            r(json!("{{from}}")),
            json!("{\"email\":\"a@example.com\",\"name\":\"\"}")
        );
        assert_eq!(r(json!("{{\"a \\\"q\\\" \\\\\"}}")), json!("a \"q\" \\"));
        assert_eq!(
            r(json!({"k": ["{{subject}}", 1, null, {"x": "-{{n}}-"}]})),
            json!({"k": ["Hi \"there\"", 1, null, {"x": "-3-"}]})
        );
    }

    #[test]
    fn keys_keep_their_order_and_are_not_filled() {
        let out = r(json!({"z": "{{n}}", "{{n}}": 1, "a": 2}));
        assert_eq!(out.to_string(), r#"{"z":"3","{{n}}":1,"a":2}"#);
    }

    #[test]
    fn refused_templates() {
        let refused = |t: &str| template_error(t).unwrap_or_default();
        assert_eq!(template_error(r#"{"a":"{{from.email}}"}"#), None);
        assert_eq!(refused("{"), "template must be a JSON value");
        assert_eq!(
            refused(&format!("\"{}\"", "x".repeat(2047))),
            "template must be at most 2048 bytes"
        );
        assert_eq!(template_error(&format!("\"{}\"", "x".repeat(2046))), None);
        assert_eq!(template_error(r#"[[[[[1]]]]]"#), None);
        assert_eq!(
            refused(r#"[[[[[[1]]]]]]"#),
            "template must be at most 5 levels deep"
        );
        assert!(refused(r#""{{from.email""#).contains("must end with }}"));
        assert!(refused(r#""{{}}""#).contains("must be a path"));
        assert!(refused(r#""{{a..b}}""#).contains("must be a path"));
        assert!(refused(r#""{{a[x]}}""#).contains("index must be an integer"));
        assert!(refused(r#""{{a[1234567890]}}""#).contains("index must be an integer"));
        assert!(refused(r#""{{\"open}}""#).contains("not closed"));
        assert!(refused(r#""{{\"\\n\"}}""#).contains("may only escape"));
        let long = format!("\"{{{{{}}}}}\"", vec!["a"; 17].join("."));
        assert!(refused(&long).contains("at most 16 steps"));
    }

    #[test]
    fn filled_text_is_bounded() {
        let big = json!({"text": "é".repeat(FILL_BUDGET)});
        let out = render(&json!(["{{text}}", "{{text}}"]), &big);
        let total: usize = out
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().len())
            .sum();
        assert_eq!(total, FILL_BUDGET);
        assert_eq!(floor_char_boundary("aé", 2), 1);
    }
}
