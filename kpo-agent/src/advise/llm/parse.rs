//! Tolerant extraction of the model's advice from a reply's text. Models wrap JSON in code fences,
//! put prose around it, return one object instead of a list, or a `{"recommendations": [...]}`
//! object; all of these yield the list of items. What the items say is checked strictly by
//! [`super::validate`].
use serde_json::Value as Json;

/// Longest reply content parsed, in bytes. Parsing runs on the agent's thread after the HTTP
/// timeout no longer applies, so its cost must be bounded by this size, not by what a server
/// sends (up to 4 MiB). A fixed bound rather than one derived from `max_tokens`, which is not
/// bounded itself: real advice is far smaller (32 items with 500-character reasons are about
/// 24 KiB), and 64 KiB is some 16k tokens of text, room for a reasoning model's `<think>` at the
/// default `max_tokens` (1024) and well beyond. The client refuses longer content as
/// `invalid_body` before it gets here.
pub const MAX_CONTENT: usize = 64 << 10;

/// How many positions in the text are tried as the start of the JSON. Each try may parse to the
/// end of the text, so the prose scan parses at most `MAX_SCAN * MAX_CONTENT` bytes (4 MiB).
const MAX_SCAN: usize = 64;

/// How far after an opening fence its language tag (`json`) may end with a newline.
const MAX_TAG: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the reply holds no JSON")]
    NoJson,
    #[error("the reply's JSON is not a list of recommendations")]
    NotAdvice,
    #[error("the reply is {0} bytes, more than the {MAX_CONTENT} parsed")]
    TooLong(usize),
}

/// The advice items in `content` (each should be an object with `parameter`, `value`, ...).
/// Content longer than [`MAX_CONTENT`] is refused unread (the client refuses it first).
pub fn extract_items(content: &str) -> Result<Vec<Json>, ParseError> {
    if content.len() > MAX_CONTENT {
        return Err(ParseError::TooLong(content.len()));
    }
    let text = strip_think(content);
    let mut saw_json = false;
    let mut try_text = |s: &str| -> Option<Vec<Json>> {
        let v = first_value(s)?;
        saw_json = true;
        advice_items(v)
    };
    if let Some(items) = try_text(text.trim()) {
        return Ok(items);
    }
    for block in fenced_blocks(&text) {
        if let Some(items) = try_text(block) {
            return Ok(items);
        }
    }
    // Prose around the JSON: an empty list there (`[]` in a sentence) counts only if nothing
    // better follows.
    let mut empty = false;
    for (i, _) in text
        .char_indices()
        .filter(|(_, c)| *c == '[' || *c == '{')
        .take(MAX_SCAN)
    {
        match try_text(&text[i..]) {
            Some(items) if items.is_empty() => empty = true,
            Some(items) => return Ok(items),
            None => {}
        }
    }
    if empty {
        return Ok(Vec::new());
    }
    Err(if saw_json {
        ParseError::NotAdvice
    } else {
        ParseError::NoJson
    })
}

/// Reasoning models may think aloud in `<think>...</think>` before answering. One pass: each
/// span is skipped, never cut out of a copy (which would move the rest of the text each time).
/// An unclosed `<think>` and what follows it are kept.
fn strip_think(content: &str) -> String {
    const OPEN: &str = "<think>";
    const CLOSE: &str = "</think>";
    let mut out = String::with_capacity(content.len());
    let mut rest = content;
    while let Some(start) = rest.find(OPEN) {
        let Some(end) = rest[start..].find(CLOSE) else {
            break;
        };
        out.push_str(&rest[..start]);
        rest = &rest[start + end + CLOSE.len()..];
    }
    out.push_str(rest);
    out
}

/// The first JSON value at the start of `s` (after white space), ignoring what follows it.
fn first_value(s: &str) -> Option<Json> {
    let s = s.trim_start();
    if !(s.starts_with('[') || s.starts_with('{')) {
        return None;
    }
    serde_json::Deserializer::from_str(s)
        .into_iter::<Json>()
        .next()?
        .ok()
}

/// The contents of ``` fences (a language tag such as `json` after the opening fence is skipped).
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        // A tag longer than a word is not a tag: the JSON starts on the fence's line. The
        // newline is looked for only where a tag could end, so many fences on one long line
        // cost one pass, not one pass each.
        let tag_end = after.as_bytes()[..after.len().min(MAX_TAG)]
            .iter()
            .position(|&b| b == b'\n');
        let body = match tag_end {
            Some(i) if after[..i].trim().chars().all(|c| c.is_ascii_alphanumeric()) => {
                &after[i + 1..]
            }
            _ => after,
        };
        match body.find("```") {
            Some(close) => {
                blocks.push(&body[..close]);
                rest = &body[close + 3..];
            }
            None => {
                blocks.push(body);
                break;
            }
        }
    }
    blocks
}

/// A list, an object with a `recommendations` list, or a single recommendation object.
fn advice_items(v: Json) -> Option<Vec<Json>> {
    match v {
        // A list of advice has objects in it (`[3]` in a sentence is not advice).
        Json::Array(items) if items.is_empty() || items.iter().any(Json::is_object) => Some(items),
        Json::Object(mut map) => {
            for key in ["recommendations", "Recommendations", "changes"] {
                if let Some(Json::Array(items)) = map.remove(key) {
                    return Some(items);
                }
            }
            (map.contains_key("parameter") || map.contains_key("Parameter"))
                .then(|| vec![Json::Object(map)])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(content: &str) -> Vec<String> {
        extract_items(content)
            .unwrap()
            .iter()
            .map(|i| i["parameter"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn shapes_models_produce() {
        let one = r#"{"parameter": "net.core.somaxconn", "value": 8192}"#;
        assert_eq!(params(one), ["net.core.somaxconn"]);
        assert_eq!(params(&format!("[{one}]")), ["net.core.somaxconn"]);
        assert_eq!(
            params(&format!("{{\"recommendations\": [{one}, {one}]}}")),
            ["net.core.somaxconn", "net.core.somaxconn"]
        );
        // The seed's demo reply, which its Go client could not parse.
        let seed = "```json\n[{\n  \"parameter\": \"net.core.somaxconn\",\n  \"recommended_value\": 4096,\n  \"can_auto_apply\": true,\n  \"reason\": \"Recv-Q 0\"\n}]\n```";
        assert_eq!(params(seed), ["net.core.somaxconn"]);
        assert_eq!(params(&format!("```\n{one}\n```")), ["net.core.somaxconn"]);
        assert_eq!(params(&format!("```json {one}```")), ["net.core.somaxconn"]);
        let prose = format!(
            "Looking at window [3], the queue is full. Here is my advice:\n{one}\nLet me know [if] it helps."
        );
        assert_eq!(params(&prose), ["net.core.somaxconn"]);
        let think = format!("<think>maybe {{\"parameter\": \"x.y\"}}?</think>[{one}]");
        assert_eq!(params(&think), ["net.core.somaxconn"]);
        assert!(extract_items("[]").unwrap().is_empty());
        assert!(extract_items("Nothing to change: []").unwrap().is_empty());
        assert_eq!(
            params(&format!("see [] and then {one}")),
            ["net.core.somaxconn"]
        );
        assert!(extract_items("{\"recommendations\": []}")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn strip_think_is_one_pass() {
        // 4 MiB of empty thoughts: cutting each out of a copy would move megabytes 280k times.
        let advice = r#"[{"parameter": "net.core.somaxconn", "value": 8192}]"#;
        let content = format!("{}{advice}", "<think></think>".repeat(280_000));
        assert_eq!(strip_think(&content), advice);
        assert_eq!(
            strip_think("a<think>x</think>b<think>y</think>c<think>open [1]"),
            "abc<think>open [1]"
        );
        assert_eq!(
            strip_think("<think>a<think>b</think>c</think>"),
            "c</think>"
        );
    }

    #[test]
    fn the_work_is_bounded_by_the_content() {
        // 127 '[' then "1,1,...": every start position parses to the end and fails.
        let mut hostile = "[".repeat(127);
        while hostile.len() < MAX_CONTENT - 1 {
            hostile.push_str("1,");
        }
        assert!(hostile.len() <= MAX_CONTENT);
        assert_eq!(extract_items(&hostile), Err(ParseError::NoJson));
        // Past the bound, nothing is read.
        let big = format!("{hostile}{}", "1,".repeat(2 << 20));
        assert_eq!(extract_items(&big), Err(ParseError::TooLong(big.len())));
        // Fences on one long line: each newline search stops where a tag could end.
        let fences = "```a```".repeat(600_000);
        assert_eq!(fenced_blocks(&fences).len(), 600_000);
    }

    #[test]
    fn no_advice_is_an_error() {
        assert_eq!(
            extract_items("I cannot help with that."),
            Err(ParseError::NoJson)
        );
        assert_eq!(
            extract_items("[{\"parameter\": \"a\", "),
            Err(ParseError::NoJson)
        );
        assert_eq!(
            extract_items("{\"answer\": 42}"),
            Err(ParseError::NotAdvice)
        );
        assert_eq!(extract_items(""), Err(ParseError::NoJson));
    }
}
