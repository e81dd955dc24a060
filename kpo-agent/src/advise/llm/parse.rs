//! Tolerant extraction of the model's advice from a reply's text. Models wrap JSON in code fences,
//! put prose around it, return one object instead of a list, or a `{"recommendations": [...]}`
//! object; all of these yield the list of items. What the items say is checked strictly by
//! [`super::validate`].
//!
//! Tolerance must not turn what the model merely mentions into what it recommends: only a JSON
//! value that stands at the top level of the text counts (never one nested in another value,
//! parsed or broken), the model's last answer wins over what it wrote before it, and advice that
//! is not the whole reply (or its only fenced block) is never applied without a person.
use serde_json::Value as Json;

/// Longest reply content parsed, in bytes. Parsing runs on the agent's thread after the HTTP
/// timeout no longer applies, so its cost must be bounded by this size, not by what a server
/// sends (up to 4 MiB). A fixed bound rather than one derived from `max_tokens`, which is not
/// bounded itself: real advice is far smaller (32 items with 500-character reasons are about
/// 24 KiB), and 64 KiB is some 16k tokens of text, room for a reasoning model's `<think>` at the
/// default `max_tokens` (1024) and well beyond. The client refuses longer content as
/// `invalid_body` before it gets here.
pub const MAX_CONTENT: usize = 64 << 10;

/// How many values that do not parse the prose scan tries. Each failed try may parse to the end
/// of the text, so the scan parses at most `MAX_SCAN * MAX_CONTENT` bytes (4 MiB) in vain; a
/// value that parses is passed over, so those cost one pass in all and are not counted. A scan
/// that reaches the cap finds no answer: the last one may lie beyond it.
const MAX_SCAN: usize = 64;

/// How far after an opening fence its language tag (`json`) may end with a newline.
const MAX_TAG: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the reply holds no JSON that parses")]
    NoJson,
    #[error("the reply's JSON is not a list of recommendations")]
    NotAdvice,
    #[error("the reply is {0} bytes, more than the {MAX_CONTENT} parsed")]
    TooLong(usize),
    /// A top-level object names a key twice: which one counts is anybody's guess.
    #[error(
        "the reply's JSON has an object that repeats the key {0:?}; which one counts is unclear"
    )]
    DuplicateKey(String),
    /// A top-level object gives its list under two keys (`recommendations`, `changes`).
    #[error(
        "the reply's JSON has an object with both {0:?} and {1:?}; which one counts is unclear"
    )]
    TwoLists(String, String),
}

/// Where in the reply the advice was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The whole text is the JSON answer.
    Whole,
    /// The whole of a fenced block, the only one in the reply that holds advice.
    Fence,
    /// The last of several fenced blocks holding advice: an example, a rejected alternative or
    /// the answer, which the text around them only tells a reader.
    LastFence,
    /// A JSON value in prose.
    Prose,
}

impl Found {
    /// Whether advice found here may be applied without a person (the model and the policy must
    /// allow it too). Only where the reply is unambiguously the answer: prose and a choice
    /// between fences may quote an example, an alternative the model rejected, or the current
    /// values, which a person can tell apart and the parser cannot.
    pub fn may_auto_apply(self) -> bool {
        matches!(self, Found::Whole | Found::Fence)
    }
}

/// The advice items of a reply (each should be an object with `parameter`, `value`, ...), where
/// they were found, and the answer's `suggestions` as the model wrote them (checked by
/// [`super::validate::suggestions`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    pub items: Vec<Json>,
    pub found: Found,
    /// The `suggestions` of the object that is the answer, whatever it holds; `None` when the
    /// answer has none (a bare list or a single item has no place for them).
    pub suggestions: Option<Json>,
}

/// The advice in `content`, tried in this order (docs/llm.md, "Parsing"):
/// 0. the whole reply as one JSON value, before anything is cut from it: then it alone decides,
///    whatever its strings say (`"note": "nginx </think> fine"` is no end of thinking);
/// 1. the whole text (without the `<think>` blocks it starts with, and what comes before the
///    thinking's end) as one JSON value;
/// 2. each fenced block's whole contents as one JSON value: the last that holds advice;
/// 3. the JSON values at the top level of the text (prose around them): the last that is a list
///    or a `recommendations` object, else the last single recommendation object.
///
/// An object with only `suggestions` is the answer (one that changes nothing) only where it is
/// the whole reply, or where no fence or value holds recommendations. Beside such a fence or
/// value it only brings its suggestions to the answer, if that has none of its own: models that
/// cannot give JSON alone write their recommendations and their suggestions as two blocks, and
/// taking the second as the answer would lose the first without a word. (It still counts as a
/// fence holding advice, so recommendations beside it wait for a person.)
///
/// Content longer than [`MAX_CONTENT`] is refused unread (the client refuses it first).
pub fn extract_items(content: &str) -> Result<Advice, ParseError> {
    if content.len() > MAX_CONTENT {
        return Err(ParseError::TooLong(content.len()));
    }
    if let Some(v) = whole_value(content) {
        return match advice_shape(v)? {
            Some(shape) => Ok(shape.found(Found::Whole)),
            None => Err(ParseError::NotAdvice),
        };
    }
    let text = strip_think(content);
    // Failed tries of the scans below, together: the cap bounds the whole reply's parsing.
    let mut failed = 0;
    // Some servers put the opening `<think>` in the prompt's template: the reply then holds only
    // the closing tag, and what comes before it is thinking too.
    let text = &text[thinking_end(text, &mut failed)..];
    let mut saw_json = false;
    if let Some(v) = whole_value(text) {
        saw_json = true;
        if let Some(shape) = advice_shape(v)? {
            return Ok(shape.found(Found::Whole));
        }
    }
    // The last fence, as the last value in prose: models show what they looked at, or an
    // example, before they answer.
    let mut fenced = None;
    let mut fenced_suggestions = None;
    let mut fences_with_advice = 0;
    let blocks = fenced_blocks(text);
    for &block in &blocks {
        if let Some(v) = whole_value(without_tag(block)) {
            saw_json = true;
            match advice_shape(v)? {
                Some(Shape::Suggestions(s)) => {
                    fences_with_advice += 1;
                    fenced_suggestions = Some(s);
                }
                Some(shape) => {
                    fences_with_advice += 1;
                    fenced = Some(shape);
                }
                None => {}
            }
        }
    }
    if let Some(shape) = fenced.or_else(|| fenced_suggestions.take().map(Shape::Suggestions)) {
        let shape = shape.with_suggestions(fenced_suggestions);
        // The only fence is the answer only where nothing outside it could be one: JSON there
        // (an answer after an example in the fence, or a value the fence sits inside) makes
        // the fence one of two things the model wrote, for a person to tell apart.
        let alone = fences_with_advice == 1 && !holds_a_value(&outside_fences(text, &blocks));
        return Ok(shape.found(if alone {
            Found::Fence
        } else {
            Found::LastFence
        }));
    }
    // Prose: a list or a `recommendations` object is an answer, explicit even when empty, and
    // outranks a lone item object, which prose often holds as a mention ("I considered {...}").
    let mut answer = None;
    let mut single = None;
    let mut suggestions = None;
    let (values, complete) = top_level_values(text, &mut failed);
    if !complete {
        return Err(ParseError::NotAdvice);
    }
    for v in values {
        saw_json = true;
        match advice_shape(v)? {
            Some(list @ Shape::List(..)) => answer = Some(list),
            Some(item @ Shape::Item(_)) => single = Some(item),
            Some(Shape::Suggestions(s)) => suggestions = Some(s),
            None => {}
        }
    }
    if let Some(shape) = answer
        .or(single)
        .or_else(|| suggestions.take().map(Shape::Suggestions))
    {
        return Ok(shape.with_suggestions(suggestions).found(Found::Prose));
    }
    Err(if saw_json {
        ParseError::NotAdvice
    } else {
        ParseError::NoJson
    })
}

/// Reasoning models think aloud in `<think>...</think>` before answering: the blocks at the start
/// of the content (white space before and between them) are skipped, each to its first
/// `</think>`. An unclosed `<think>` and what follows it are kept.
///
/// Only there: a `<think>` anywhere else may be text inside a JSON string (a process is free to
/// call itself `<think>`, and the model to quote it), and cutting from it to a `</think>` in a
/// later string would join two values into one, turning an item the model mentioned and an
/// empty answer after it into a whole reply holding that item. What is kept is always a suffix
/// of the content, which can never be one value where the content was two.
fn strip_think(content: &str) -> &str {
    const OPEN: &str = "<think>";
    const CLOSE: &str = "</think>";
    let mut rest = content;
    while let Some(thinking) = rest.trim_start().strip_prefix(OPEN) {
        let Some(end) = thinking.find(CLOSE) else {
            break;
        };
        rest = &thinking[end + CLOSE.len()..];
    }
    rest
}

/// Where the answer starts in `text` whose thinking opened in the prompt's template (the reply
/// holds only its `</think>`): just after the last `</think>` that lies outside every top-level
/// JSON value, 0 if there is none. One inside a value that parses, or inside a broken one up to
/// its closing bracket, is the value's text (`"note": "nginx </think> fine"`): cut there, the
/// rest of the value (a `rejected` list after the note) would be read as the answer. One the scan
/// could not place (after a broken value that never closes, or past the cap of failed tries) is
/// not known to be outside, and is not taken either. `failed` counts the scan's failed tries.
fn thinking_end(text: &str, failed: &mut usize) -> usize {
    const CLOSE: &str = "</think>";
    let Some(last) = text.rfind(CLOSE) else {
        return 0;
    };
    let scan = scan(text, failed, last);
    // Thinking that opens a bracket in passing and never closes it (`the answer looks like {
    // parameter: ...`) stops the scan before the tag. The last tag still ends the thinking when
    // no string of that value is open at it and one whole JSON value follows it: the reply's
    // answer, as a reasoning model writes it. (`"note": "a"b" </think> [...]` has a string open
    // at the tag: it stays unplaced.)
    if let Some(stop) = scan.stopped.filter(|_| !scan.capped) {
        let after = last + CLOSE.len();
        if stop < last
            && !ends_in_a_string(&text[stop..last])
            && whole_value(&text[after..]).is_some()
        {
            return after;
        }
    }
    let known = scan.stopped.unwrap_or(text.len());
    // Apart from each other (a value ends before the next is looked for), in text order.
    let mut spans: Vec<&std::ops::Range<usize>> = scan
        .values
        .iter()
        .map(|(r, _)| r)
        .chain(&scan.broken)
        .collect();
    spans.sort_by_key(|r| r.start);
    let inside = |i: usize| {
        let k = spans.partition_point(|r| r.end <= i);
        spans.get(k).is_some_and(|r| r.start <= i)
    };
    text.match_indices(CLOSE)
        .map(|(i, _)| i)
        .filter(|&i| i < known && !inside(i))
        .last()
        .map_or(0, |i| i + CLOSE.len())
}

/// `s` as one JSON list or object, with nothing but white space around it.
fn whole_value(s: &str) -> Option<Json> {
    let s = s.trim();
    if !(s.starts_with('[') || s.starts_with('{')) {
        return None;
    }
    serde_json::from_str::<Strict>(s).ok().map(|v| v.0)
}

/// A fenced block without a language tag on the JSON's line (```` ```json {...}``` ````).
fn without_tag(block: &str) -> &str {
    let b = block.trim();
    match b.find(|c: char| !c.is_ascii_alphanumeric()) {
        Some(i) if i > 0 && i <= MAX_TAG && b[i..].starts_with(char::is_whitespace) => {
            let rest = b[i..].trim_start();
            if rest.starts_with('[') || rest.starts_with('{') {
                rest
            } else {
                b
            }
        }
        _ => b,
    }
}

/// The JSON values at the top level of `text`, in order: each `[` or `{` that can start a value
/// is parsed, and the scan goes on after the value, never inside it. A value that does not parse
/// (a model's broken JSON: an unescaped quote) is skipped to its closing bracket, found by
/// counting brackets outside strings; if it never closes, nothing after it is looked at. So a
/// nested object, of a value that parsed or of one that did not, is never taken for an answer.
/// A bracket in a sentence (`[if]`, `:-[`) is not followed by what starts a value, and is
/// passed over alone.
/// The second element is false when the scan stopped at [`MAX_SCAN`] failed tries, counted in
/// `failed` together with the tries made before (to find the end of thinking).
fn top_level_values(text: &str, failed: &mut usize) -> (Vec<Json>, bool) {
    let scan = scan(text, failed, text.len());
    (
        scan.values.into_iter().map(|(_, v)| v).collect(),
        !scan.capped,
    )
}

/// What [`scan`] found, with where in the text.
struct Scan {
    /// The values that parsed.
    values: Vec<(std::ops::Range<usize>, Json)>,
    /// The values that did not parse, to their closing bracket.
    broken: Vec<std::ops::Range<usize>>,
    /// Where the scan stopped short of the end: a broken value that never closes starts there, or
    /// the cap of failed tries was reached there.
    stopped: Option<usize>,
    /// The scan reached [`MAX_SCAN`] failed tries.
    capped: bool,
}

/// The top-level scan of [`top_level_values`], of the values that start at or before `until`;
/// `failed` counts the failed tries, and the scan stops when it reaches [`MAX_SCAN`].
fn scan(text: &str, failed: &mut usize, until: usize) -> Scan {
    let mut out = Scan {
        values: Vec::new(),
        broken: Vec::new(),
        stopped: None,
        capped: false,
    };
    let mut at = 0;
    loop {
        if *failed >= MAX_SCAN {
            out.stopped = Some(at);
            out.capped = true;
            return out;
        }
        let Some(offset) = text[at..].find(['[', '{']) else {
            break;
        };
        let start = at + offset;
        if start > until {
            break;
        }
        let rest = &text[start..];
        if !opens_value(&rest[1..]) {
            at = start + 1;
            continue;
        }
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Strict>();
        match stream.next() {
            Some(Ok(Strict(v))) => {
                at = start + stream.byte_offset();
                out.values.push((start..at, v));
            }
            _ => {
                *failed += 1;
                match bracketed_len(rest) {
                    Some(len) => {
                        at = start + len;
                        out.broken.push(start..at);
                    }
                    None => {
                        out.stopped = Some(start);
                        break;
                    }
                }
            }
        }
    }
    out
}

/// `text` without the contents of the fenced `blocks` (slices of it, in order).
fn outside_fences(text: &str, blocks: &[&str]) -> String {
    let base = text.as_ptr() as usize;
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for block in blocks {
        let start = block.as_ptr() as usize - base;
        out.push_str(&text[at..start]);
        at = start + block.len();
    }
    out.push_str(&text[at..]);
    out
}

/// Whether `s` has a bracket that could start a JSON value, parsed or not.
fn holds_a_value(s: &str) -> bool {
    s.match_indices(['[', '{'])
        .any(|(i, _)| opens_value(&s[i + 1..]))
}

/// Whether what follows an opening bracket can continue a JSON value.
fn opens_value(after: &str) -> bool {
    let a = after.trim_start();
    a.starts_with(['"', '{', '[', ']', '}', '-'])
        || a.starts_with(|c: char| c.is_ascii_digit())
        || ["true", "false", "null"].iter().any(|w| a.starts_with(w))
}

/// The length of the bracketed span `s` starts with, counting brackets outside strings (a `"`
/// opens and closes them, a `\` escapes the next character), or `None` if it does not close.
fn bracketed_len(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether a string is still open at the end of `s`, JSON's way (`"` opens and closes, `\` escapes
/// inside one).
fn ends_in_a_string(s: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for b in s.bytes() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            _ => {}
        }
    }
    in_string
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

/// What a JSON value holds as advice.
enum Shape {
    /// A list of items, or an object with a `recommendations` list: an answer, even when empty;
    /// with the object's `suggestions`, if it has that key.
    List(Vec<Json>, Option<Json>),
    /// A single recommendation object.
    Item(Json),
    /// An object with `suggestions` and no list of changes: an answer that changes nothing when
    /// nothing else is one, else only these suggestions ([`extract_items`]).
    Suggestions(Json),
}

impl Shape {
    /// With `other`'s suggestions (a suggestions-only object beside it) when it has none of its
    /// own.
    fn with_suggestions(self, other: Option<Json>) -> Shape {
        match self {
            Shape::List(items, None) => Shape::List(items, other),
            Shape::Item(item) if other.is_some() => Shape::List(vec![item], other),
            shape => shape,
        }
    }

    fn found(self, found: Found) -> Advice {
        let (items, suggestions) = match self {
            Shape::List(items, suggestions) => (items, suggestions),
            Shape::Item(item) => (vec![item], None),
            Shape::Suggestions(s) => (Vec::new(), Some(s)),
        };
        Advice {
            items,
            found,
            suggestions,
        }
    }
}

/// The key of an answer object's parameters for the operator to look at (never changed).
const SUGGESTIONS: &str = "suggestions";

/// The keys under which an object may give its list of advice, one of them at most.
const LIST_KEYS: [&str; 3] = ["recommendations", "Recommendations", "changes"];

/// A list, an object with a `recommendations` list, or a single recommendation object. A
/// top-level object that repeats a key, or gives its list under two of [`LIST_KEYS`], is no
/// answer at all, whatever it holds (`Err`): read
/// last-wins, `{"recommendations": [...], "recommendations": []}` would be no advice, and an item
/// with `"can_auto_apply": false, ..., "can_auto_apply": true` automatic.
fn advice_shape(v: Json) -> Result<Option<Shape>, ParseError> {
    if let Some(key) = repeated_key(&v) {
        // The model's key, which can be as long as the reply: the `llm` event quotes it.
        const MAX_KEY_CHARS: usize = 120;
        let mut shown: String = key.chars().take(MAX_KEY_CHARS).collect();
        if shown.len() < key.len() {
            shown.push('…');
        }
        return Err(ParseError::DuplicateKey(shown));
    }
    Ok(match v {
        // A list of advice has objects in it (`[3]` in a sentence is not advice).
        Json::Array(items) if items.is_empty() || items.iter().any(Json::is_object) => {
            Some(Shape::List(items, None))
        }
        Json::Object(mut map) => {
            // Two of these are the ambiguity of a repeated key, whatever they hold: taking the
            // first that is a list would let `"changes": [...]` outrank `"recommendations":
            // "none"`, or drop a second list unread.
            let lists: Vec<&str> = LIST_KEYS
                .into_iter()
                .filter(|k| map.contains_key(*k))
                .collect();
            if let [first, second, ..] = lists[..] {
                return Err(ParseError::TwoLists(first.to_string(), second.to_string()));
            }
            let suggestions = map.remove(SUGGESTIONS);
            if let Some(Json::Array(items)) = lists.first().and_then(|k| map.remove(*k)) {
                return Ok(Some(Shape::List(items, suggestions)));
            }
            let item = map.contains_key("parameter") || map.contains_key("Parameter");
            if item {
                return Ok(Some(Shape::Item(Json::Object(map))));
            }
            // Only `suggestions`, no list of changes. A `recommendations` that is not a list
            // stays no answer.
            match (lists.is_empty(), suggestions) {
                (true, Some(s)) => Some(Shape::Suggestions(s)),
                _ => None,
            }
        }
        _ => None,
    })
}

/// The key under which [`Strict`] marks an object that repeated a key: its value is that key.
/// Not a key a model means (a NUL starts it); one that sends it anyway only gets its object
/// refused.
pub(super) const REPEATED_KEY: &str = "\u{0}kpo: repeated key";

/// The key `v`, an object, repeated (marked by [`Strict`]), if it did.
pub(super) fn repeated_key(v: &Json) -> Option<&str> {
    v.get(REPEATED_KEY).map(|k| k.as_str().unwrap_or(""))
}

/// A JSON value read as `serde_json::Value` is, except that an object that repeats a key is
/// marked (under [`REPEATED_KEY`], naming the key). `Value` keeps the last of the repeats and
/// forgets there were any, so which one the model meant would be decided silently; serde has no
/// option to refuse them, and once read into a `Value` the repeat is gone, so it is seen here, as
/// the text is read. Marked rather than refused: a repeat inside one item costs that item (it is
/// dropped as `malformed`, `validate.rs`), a repeat in a top-level object the whole answer
/// ([`advice_shape`]). Depth is bounded by serde_json's recursion limit, as for `Value`.
struct Strict(Json);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = serde_json::Map::new();
        let mut repeated = None;
        while let Some((key, Strict(v))) = map.next_entry::<String, Strict>()? {
            if out.contains_key(&key) && repeated.is_none() {
                repeated = Some(key.clone());
            }
            out.insert(key, v);
        }
        if let Some(key) = repeated {
            out.insert(REPEATED_KEY.to_string(), Json::String(key));
        }
        Ok(Json::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(content: &str) -> Vec<String> {
        extract_items(content)
            .unwrap()
            .items
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
        assert!(extract_items("[]").unwrap().items.is_empty());
        assert!(extract_items("Nothing to change: []")
            .unwrap()
            .items
            .is_empty());
        // This asserted the opposite before: an empty list in prose counted only when nothing
        // "better" followed, so a lone object the model mentioned beat its explicit empty answer.
        assert!(extract_items(&format!("see [] and then {one}"))
            .unwrap()
            .items
            .is_empty());
        assert!(extract_items("{\"recommendations\": []}")
            .unwrap()
            .items
            .is_empty());
    }

    fn found(content: &str) -> (Vec<Json>, Found) {
        let a = extract_items(content).unwrap();
        (a.items, a.found)
    }

    const ITEM: &str =
        r#"{"parameter": "net.core.somaxconn", "value": 8192, "can_auto_apply": true}"#;

    #[test]
    fn only_the_whole_text_or_its_only_fence_may_be_applied() {
        assert_eq!(found(ITEM).1, Found::Whole);
        assert_eq!(found(&format!(" \n[{ITEM}]\n")).1, Found::Whole);
        assert_eq!(found(&format!("<think>hm</think>[{ITEM}]")).1, Found::Whole);
        assert_eq!(
            found(&format!("Advice:\n```json\n[{ITEM}]\n```\n")).1,
            Found::Fence
        );
        assert_eq!(found(&format!("```json [{ITEM}]```")).1, Found::Fence);
        // A fence that holds no advice does not make the one that does ambiguous.
        let (items, at) = found(&format!("```\n$ sysctl -a\n```\n```json\n[{ITEM}]\n```"));
        assert_eq!((items.len(), at), (1, Found::Fence));
        // Two fences with advice: the last is taken, for approval.
        let (items, at) = found(&format!(
            "Example:\n```json\n[{ITEM}]\n```\nAnswer:\n```json\n[]\n```"
        ));
        assert_eq!((items.len(), at), (0, Found::LastFence));
        for prose in [
            format!("Here: {ITEM}"),
            format!("[{ITEM}] is my advice."),
            // Trailing text makes the text more than one value.
            format!("{ITEM} {{\"note\": 1}}"),
        ] {
            let (items, at) = found(&prose);
            assert_eq!((items.len(), at), (1, Found::Prose), "{prose}");
            assert!(!at.may_auto_apply());
        }
        assert!(Found::Whole.may_auto_apply() && Found::Fence.may_auto_apply());
        assert!(!Found::LastFence.may_auto_apply());
    }

    /// A recommendation the model only mentions before its (empty) answer is not taken.
    #[test]
    fn the_last_answer_in_prose_stands_even_when_empty() {
        let content = format!(
            "I considered {ITEM} but the queue never filled, so nothing needs to change. \
             {{\"recommendations\": []}}"
        );
        assert_eq!(found(&content), (vec![], Found::Prose));
        let content = format!("Nothing to change: []. I did consider {ITEM}.");
        assert_eq!(found(&content), (vec![], Found::Prose));
        let content = format!("Draft: [{ITEM}]. On reflection, nothing needs to change: []");
        assert_eq!(found(&content), (vec![], Found::Prose));
        // Of two answers, the last; a lone item only when there is no list.
        let other = ITEM.replace("8192", "1024");
        let (items, _) = found(&format!("Before: [{ITEM}]. Now: [{other}]."));
        assert_eq!(items[0]["value"], 1024);
        let (items, _) = found(&format!("First {ITEM}, then {other}."));
        assert_eq!(items[0]["value"], 1024);
    }

    /// Objects nested in the reply's JSON are never taken for the answer, whether the JSON
    /// around them parses or not.
    #[test]
    fn nested_values_are_never_the_answer() {
        let nested =
            r#"{"parameter": "net.core.somaxconn", "value": 65535, "can_auto_apply": true}"#;
        // The outer item's reason has an unescaped quote: the whole reply is broken.
        let broken = format!(
            r#"{{"recommendations": [{{"parameter": "net.core.somaxconn", "value": 4096, "reason": "keep "as is"", "rejected_alternative": {nested}}}]}}"#
        );
        assert_eq!(extract_items(&broken), Err(ParseError::NoJson));
        assert_eq!(
            extract_items(&format!("My advice:\n{broken}\nThanks.")),
            Err(ParseError::NoJson)
        );
        // An odd number of stray quotes: the brackets never close, nothing after is read.
        let unclosed = format!(r#"[{{"parameter": "a", "reason": "6" wide", "alt": {nested}}}]"#);
        assert_eq!(extract_items(&unclosed), Err(ParseError::NoJson));
        // A value that parses is passed over whole: its nested object is not a second value.
        let wrapped = format!(r#"Result: {{"result": {{"recommendations": [{nested}]}}}} done"#);
        assert_eq!(extract_items(&wrapped), Err(ParseError::NotAdvice));
        let with_alt = format!(
            r#"Result: [{{"parameter": "net.core.somaxconn", "value": 4096, "alt": {nested}}}]"#
        );
        let (items, _) = found(&with_alt);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["value"], 4096);
        // After a broken value, a later top-level answer is still found.
        let (items, at) = found(&format!("Draft: {broken}\nFixed: [{ITEM}]"));
        assert_eq!(
            (items[0]["value"].clone(), at),
            (Json::from(8192), Found::Prose)
        );
    }

    #[test]
    fn top_level_values_skip_what_they_tried() {
        let (values, complete) = top_level_values(
            r#"a [1, [2]] b {"x": {"y": 1}} c [if] :-[ d ["s]"] e"#,
            &mut 0,
        );
        assert!(complete);
        assert_eq!(
            values,
            [
                serde_json::json!([1, [2]]),
                serde_json::json!({"x": {"y": 1}}),
                serde_json::json!(["s]"])
            ]
        );
        assert_eq!(bracketed_len(r#"{"a": "}\"}", "b": [1]} x"#), Some(23));
        assert_eq!(bracketed_len("[1, [2]"), None);
    }

    #[test]
    fn strip_think_is_one_pass() {
        // 4 MiB of empty thoughts: cutting each out of a copy would move megabytes 280k times.
        let advice = r#"[{"parameter": "net.core.somaxconn", "value": 8192}]"#;
        let content = format!("{}{advice}", "<think></think>".repeat(280_000));
        assert_eq!(strip_think(&content), advice);
        assert_eq!(
            strip_think(" <think>x</think>\n<think>y</think>c<think>open [1]"),
            "c<think>open [1]"
        );
        assert_eq!(strip_think("<think>open [1]"), "<think>open [1]");
        // Not at the start: text, kept whole.
        assert_eq!(strip_think("a<think>x</think>b"), "a<think>x</think>b");
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

    /// A fence is the answer only where nothing outside it could be one: a draft or an example
    /// in a fence, followed by the answer in prose, or a fence inside a broken value, waits for
    /// a person; thinking before an orphan `</think>` is no answer at all.
    #[test]
    fn a_fence_with_json_outside_it_is_held() {
        let answer_after_draft = format!(
            "Let me draft:\n```json\n[{ITEM}]\n```\n...no change.\n</think>\n\n{{\"recommendations\": []}}"
        );
        let a = extract_items(&answer_after_draft).unwrap();
        assert!(
            a.items.is_empty(),
            "the answer after </think> stands: {a:?}"
        );
        let example =
            format!("Do not do this:\n```json\n[{ITEM}]\n```\nNothing needs to change: []");
        assert_eq!(found(&example).1, Found::LastFence);
        let inside = format!(
            "{{\"recommendations\": [], \"note\": \"I considered ```json {ITEM}``` but \"no\"}}"
        );
        assert!(!found(&inside).1.may_auto_apply());
        // A fence with prose only around it is still the answer.
        let alone =
            format!("Here it is:\n```json\n[{ITEM}]\n```\nThat should help [if load stays].");
        assert_eq!(found(&alone).1, Found::Fence);
    }

    /// A `</think>` inside the reply's JSON is text, not the end of thinking: the reply is not cut
    /// there, and what follows it in the value (an alternative the model rejected) is no advice.
    #[test]
    fn a_think_tag_inside_json_is_not_the_end_of_thinking() {
        let reply = r#"{"recommendations": [], "note": "nginx </think> fine", "rejected": [{"parameter":"net.core.somaxconn","value":65535,"can_auto_apply":true}]}"#;
        assert_eq!(found(reply), (vec![], Found::Whole));
        // The same after real thinking: the thinking's end is the first tag, the second is text.
        let (items, at) = found(&format!("checking the queues...</think>\n{reply}"));
        assert_eq!((items.len(), at), (0, Found::Whole));
        // In a broken value (an unescaped quote), up to its closing bracket: not the end either.
        let broken = r#"{"recommendations": [], "note": "say "hi" </think> ok", "rejected": [{"parameter":"net.core.somaxconn","value":65535}]}"#;
        assert_eq!(extract_items(broken), Err(ParseError::NoJson));
        // After a value that never closes, a tag cannot be placed: nothing is taken from after it.
        let unclosed = format!(r#"{{"note": "a"b" </think> [{ITEM}]"#);
        assert!(extract_items(&unclosed).is_err());
        // Thinking that opens a bracket and never closes it still ends at its last tag when one
        // whole value follows; prose after the tag is not placed.
        let thinking = r#"I could send {"parameter": "net.core.somaxconn", "value": 4096 but the
            queues first."#;
        let (items, at) = found(&format!("{thinking}\n</think>\n[{ITEM}]"));
        assert_eq!((items.len(), at), (1, Found::Whole));
        let prose = format!("{thinking}\n</think>\nRaise it: [{ITEM}] then.");
        assert!(extract_items(&prose).is_err());
        // Thinking that holds JSON of its own, closed, still ends at its tag.
        let (items, at) = found(&format!(
            "Maybe {{\"parameter\": \"x.y\"}} or [1, 2]?\n</think>\n[{ITEM}]"
        ));
        assert_eq!((items.len(), at), (1, Found::Whole));
    }

    /// A `<think>` and a `</think>` in two JSON values' strings (a process may be named either,
    /// and the model quote it) are no thinking: cut from one to the other, an item the model
    /// rejected and the empty answer after it became one value, the whole reply, applied.
    #[test]
    fn think_tags_in_two_values_do_not_join_them() {
        let rejected = r#"{"parameter":"net.core.somaxconn","value":65535,"can_auto_apply":true,"reason":"listener <think> drops"} would be too aggressive; {"recommendations": [], "reason": "listener </think> is fine"}"#;
        assert_eq!(found(rejected), (vec![], Found::Prose));
        let prose = r#"I considered {"parameter":"net.core.somaxconn","value":65535,"can_auto_apply":true,"comm":"<think>"} but no. {"recommendations": [], "note": "</think>"}"#;
        assert_eq!(found(prose), (vec![], Found::Prose));
        // Real thinking at the start is still skipped, with tags quoted in the answer after it.
        let (items, at) = found(&format!(
            "<think>the queue of <think> is full</think>\n{{\"recommendations\": [{ITEM}], \"note\": \"</think>\"}}"
        ));
        assert_eq!((items.len(), at), (1, Found::Whole));
    }

    /// An object that gives its list under two keys is refused, as one that repeats a key: the
    /// first list found no longer outranks a `recommendations` that says otherwise.
    #[test]
    fn a_list_under_two_keys_is_no_answer() {
        let item = r#"{"parameter": "net.core.somaxconn", "value": 65535, "can_auto_apply": true}"#;
        for (reply, first, second) in [
            (
                format!(r#"{{"recommendations": "none", "changes": [{item}]}}"#),
                "recommendations",
                "changes",
            ),
            (
                format!(r#"{{"recommendations": [], "Recommendations": [{item}]}}"#),
                "recommendations",
                "Recommendations",
            ),
            (
                format!("Answer:\n```json\n{{\"Recommendations\": [{item}], \"changes\": 0}}\n```"),
                "Recommendations",
                "changes",
            ),
        ] {
            assert_eq!(
                extract_items(&reply),
                Err(ParseError::TwoLists(first.into(), second.into())),
                "{reply}"
            );
        }
        assert_eq!(
            found(&format!(r#"{{"changes": [{item}], "note": "x"}}"#)),
            (vec![serde_json::from_str(item).unwrap()], Found::Whole)
        );
    }

    /// [`Strict`] reads what `Value` reads, the same way, and marks only objects that repeat a
    /// key, wherever they are.
    #[test]
    fn strict_reads_as_value_does_and_marks_repeated_keys() {
        for text in [
            r#"{"a": [1, -2, 3.5, 18446744073709551615, "s\u00e9", true, null, {}], "b": {"c": []}}"#,
            "[]",
            r#""x""#,
            "-0",
            "[1e400]",
        ] {
            let strict = serde_json::from_str::<Strict>(text).map(|s| s.0).ok();
            let value = serde_json::from_str::<Json>(text).ok();
            assert_eq!(strict, value, "{text}");
            assert_eq!(strict.is_some(), !text.contains("1e400"), "{text}");
        }
        let v = serde_json::from_str::<Strict>(r#"[{"a": 1, "b": {"c": 1, "c": 2}, "a": 3}]"#)
            .unwrap()
            .0;
        assert_eq!(repeated_key(&v[0]), Some("a"));
        assert_eq!(repeated_key(&v[0]["b"]), Some("c"));
        assert_eq!(v[0]["a"], 3);
        assert_eq!(repeated_key(&v), None);
        let nested = r#"Result: {"result": {"recommendations": [], "recommendations": []}} done"#;
        assert_eq!(
            extract_items(nested),
            Err(ParseError::NotAdvice),
            "not a top-level object"
        );
    }

    /// The answer object's `suggestions` come with its items, as the model wrote them; an
    /// object with only `suggestions` is an answer that changes nothing when nothing else is; a
    /// bare list or a lone item has none. Mutations that fail it: `suggestions` not taken from
    /// the object in `advice_shape`; the suggestions-only object left as no answer.
    #[test]
    fn the_answers_suggestions_come_with_it() {
        let s = r#"[{"parameter": "net.ipv4.tcp_fin_timeout", "reason": "FIN_WAIT2"}]"#;
        let a = extract_items(&format!(
            r#"{{"recommendations": [{ITEM}], "suggestions": {s}}}"#
        ))
        .unwrap();
        assert_eq!(a.items.len(), 1);
        assert_eq!(a.found, Found::Whole);
        assert_eq!(a.suggestions, Some(serde_json::from_str(s).unwrap()));
        // Malformed, as given: validation says why.
        let a =
            extract_items(r#"{"recommendations": [], "suggestions": "tcp_fin_timeout"}"#).unwrap();
        assert_eq!(a.suggestions, Some(Json::from("tcp_fin_timeout")));
        // Only suggestions: nothing to change.
        let a = extract_items(&format!(r#"Also: {{"suggestions": {s}}}"#)).unwrap();
        assert_eq!((a.items.len(), a.found), (0, Found::Prose));
        assert!(a.suggestions.is_some());
        for none in [
            format!("[{ITEM}]"),
            ITEM.to_string(),
            "{\"recommendations\": []}".into(),
        ] {
            assert_eq!(extract_items(&none).unwrap().suggestions, None, "{none}");
        }
        // A `recommendations` that is not a list is still no answer, suggestions or not.
        assert_eq!(
            extract_items(&format!(
                r#"{{"recommendations": "none", "suggestions": {s}}}"#
            )),
            Err(ParseError::NotAdvice)
        );
        // Repeated at the top, as any key: no answer.
        assert_eq!(
            extract_items(r#"{"recommendations": [], "suggestions": [], "suggestions": []}"#),
            Err(ParseError::DuplicateKey("suggestions".into()))
        );
    }

    /// A suggestions-only object beside recommendations (two fences, or two values in prose, as
    /// a model without structured output writes them) only brings its suggestions: the
    /// recommendations stay the answer, held for a person as any choice between fences is. The
    /// answer's own suggestions, if any, are the ones taken. Mutation that fails it: the fence
    /// scan (or the prose scan) taking the suggestions-only object as the answer.
    #[test]
    fn a_suggestions_only_block_does_not_hide_the_recommendations() {
        let s = r#"[{"parameter": "net.ipv4.tcp_fin_timeout", "reason": "FIN_WAIT2"}]"#;
        let list = format!(r#"{{"recommendations": [{ITEM}]}}"#);
        let only = format!(r#"{{"suggestions": {s}}}"#);
        let fences =
            format!("Recommendations:\n```json\n{list}\n```\nSuggestions:\n```json\n{only}\n```\n");
        let a = extract_items(&fences).unwrap();
        assert_eq!(a.items, vec![serde_json::from_str::<Json>(ITEM).unwrap()]);
        assert_eq!(a.found, Found::LastFence);
        assert_eq!(a.suggestions, Some(serde_json::from_str(s).unwrap()));
        // In the other order too.
        let a = extract_items(&format!("```\n{only}\n```\n```\n{list}\n```")).unwrap();
        assert_eq!((a.items.len(), a.found), (1, Found::LastFence));
        assert_eq!(a.suggestions, Some(serde_json::from_str(s).unwrap()));
        // Prose: a list, or a lone item, before it.
        for prose in [
            format!("{list} and also {only}"),
            format!("I considered [{ITEM}]. {only}"),
            format!("Change {ITEM}. {only}"),
        ] {
            let a = extract_items(&prose).unwrap();
            assert_eq!((a.items.len(), a.found), (1, Found::Prose), "{prose}");
            assert_eq!(
                a.suggestions,
                Some(serde_json::from_str(s).unwrap()),
                "{prose}"
            );
        }
        // The answer's own suggestions are its answer's.
        let own = r#"{"recommendations": [], "suggestions": []}"#;
        let a = extract_items(&format!("```\n{own}\n```\n```\n{only}\n```")).unwrap();
        assert_eq!(a.suggestions, Some(Json::Array(Vec::new())));
        // Alone in a fence it is the answer, as in the whole reply.
        let a = extract_items(&format!("Here:\n```json\n{only}\n```")).unwrap();
        assert_eq!((a.items.len(), a.found), (0, Found::Fence));
        assert!(a.suggestions.is_some());
    }

    /// Values that parse do not use up the scan: the last answer after many of them stands.
    #[test]
    fn the_last_answer_after_many_values_stands() {
        let many = "[0] ".repeat(MAX_SCAN + 10);
        let (items, at) = found(&format!("Draft: [{ITEM}] {many} Final: []"));
        assert!(items.is_empty());
        assert_eq!(at, Found::Prose);
        let (items, _) = found(&format!("{many} Final: [{ITEM}]"));
        assert_eq!(items.len(), 1);
        // Failed tries do: past the cap, no answer is taken.
        let broken = r#"{"a": x} "#.repeat(MAX_SCAN);
        assert_eq!(
            extract_items(&format!("{broken} [{ITEM}]")),
            Err(ParseError::NotAdvice)
        );
    }
}
