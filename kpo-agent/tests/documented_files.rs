//! Every TOML example in the docs loads: the policies as `kpo run --policy` would load them, the
//! agent configurations as `kpo run --config` would. Docs that drift from the parser fail here.
use std::path::Path;

use kpo_agent::{config::Config, policy::Policy};

/// The ```toml blocks of a markdown file, with their first line number; a block indented inside
/// a list item loses its indentation.
fn toml_blocks(doc: &str) -> Vec<(String, usize)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<(usize, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None if trimmed.starts_with("```toml") => {
                open = Some((i + 2, line.len() - trimmed.len(), String::new()));
            }
            Some((first, _, body)) if trimmed.starts_with("```") => {
                blocks.push((std::mem::take(body), *first));
                open = None;
            }
            Some((_, indent, body)) => {
                body.push_str(line.get(*indent..).unwrap_or(line.trim_start()));
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn the_documented_policies_load() {
    let mut checked = 0;
    for doc in ["docs/policy.md", "docs/approvals.md", "docs/scenario.md"] {
        for (block, line) in toml_blocks(doc) {
            if let Err(e) = Policy::parse(&block, &format!("{doc}:{line}")) {
                panic!("{doc}, the block from line {line}: {e}\n{block}");
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked, 5,
        "policy.md has 3 examples, approvals.md and scenario.md one each"
    );
}

#[test]
fn the_documented_agent_configurations_load() {
    let mut checked = 0;
    for doc in ["README.md", "docs/llm.md", "docs/optimizer.md"] {
        for (block, line) in toml_blocks(doc) {
            let origin = format!("{doc}:{line}");
            let loaded = Config::from_toml(&block, &origin).and_then(|c| c.validate(&origin));
            if let Err(e) = loaded {
                panic!("{doc}, the block from line {line}: {e}\n{block}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "one example in each");
}
