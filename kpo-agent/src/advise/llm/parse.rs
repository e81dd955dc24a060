//! Tolerant extraction of the model's advice from a reply's text. Models wrap JSON in code fences,
//! put prose around it, return one object instead of a list, or a `{"recommendations": [...]}`
//! object; all of these yield the list of items. What the items say is checked strictly by
//! [`super::validate`].
use serde_json::Value as Json;

/// How many positions in the text are tried as the start of the JSON.
const MAX_SCAN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the reply holds no JSON")]
    NoJson,
    #[error("the reply's JSON is not a list of recommendations")]
    NotAdvice,
}

/// The advice items in `content` (each should be an object with `parameter`, `value`, ...).
pub fn extract_items(content: &str) -> Result<Vec<Json>, ParseError> {
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

/// Reasoning models may think aloud in `<think>...</think>` before answering.
fn strip_think(content: &str) -> String {
    let mut out = content.to_string();
    while let Some(start) = out.find("<think>") {
        match out[start..].find("</think>") {
            Some(end) => out.replace_range(start..start + end + "</think>".len(), ""),
            None => break,
        }
    }
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
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        // A tag longer than a word is not a tag: the JSON starts on the fence's line.
        let tag = &after[..body_start];
        let body = if tag.trim().chars().all(|c| c.is_ascii_alphanumeric()) {
            &after[body_start..]
        } else {
            after
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
