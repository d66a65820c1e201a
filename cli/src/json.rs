//! JSON for people: the body re-indented as it came, keys in the server's order and numbers
//! as written (a parse into `serde_json::Value` would sort the keys), and the few fields the
//! line-per-item outputs read.

use serde_json::Value;

/// `text` indented by two spaces per level, or `None` when it is not JSON.
pub fn pretty(text: &str) -> Option<String> {
    serde_json::from_str::<Value>(text).ok()?;
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    out.push(c);
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|&n| n == '}' || n == ']') {
                    out.extend(chars.next());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

/// A field as a cell of a line: strings bare, `null` or missing as `-`, anything else as JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_keeps_order_numbers_and_strings() {
        let text = r#"{"z":1,"a":[1.50,{"b":"x, {y}: \"q\" \\"}],"e":{},"f":[ ],"n":null}"#;
        let want = "{\n  \"z\": 1,\n  \"a\": [\n    1.50,\n    {\n      \"b\": \"x, {y}: \\\"q\\\" \\\\\"\n    }\n  ],\n  \"e\": {},\n  \"f\": [],\n  \"n\": null\n}";
        assert_eq!(pretty(text).as_deref(), Some(want));
        assert_eq!(pretty(" 42 ").as_deref(), Some("42"));
        assert_eq!(pretty("\"a b\"").as_deref(), Some("\"a b\""));
    }

    #[test]
    fn pretty_refuses_what_is_not_json() {
        assert_eq!(pretty("OK"), None);
        assert_eq!(pretty("{\"a\":"), None);
        assert_eq!(pretty(""), None);
    }

    #[test]
    fn cells() {
        let v: Value = serde_json::from_str(r#"{"s":"a b","n":3,"z":null,"o":{"k":1}}"#).unwrap();
        assert_eq!(cell(v.get("s")), "a b");
        assert_eq!(cell(v.get("n")), "3");
        assert_eq!(cell(v.get("z")), "-");
        assert_eq!(cell(v.get("missing")), "-");
        assert_eq!(cell(v.get("o")), r#"{"k":1}"#);
    }
}
