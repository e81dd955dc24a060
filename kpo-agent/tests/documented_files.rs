//! Every TOML example in the docs loads: the policies as `kpo run --policy` would load them, the
//! agent configurations as `kpo run --config` would. The README's commands, flags and `kpo run`
//! defaults are the CLI's, and the event kinds the docs list are the schema's. Docs that drift
//! from the code fail here.
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

/// The long flags of a `kpo` subcommand (`["run"]`, `["optimize", "replay"]`), help left out.
fn flags_of(path: &[&str]) -> std::collections::BTreeSet<String> {
    use clap::CommandFactory;
    let mut command = kpo_agent::cli::Cli::command();
    for name in path {
        command = command
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("kpo has no subcommand {name}"))
            .clone();
    }
    command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "help")
        .map(|l| format!("--{l}"))
        .collect()
}

/// `--flag` names in a piece of text, in order, each once.
fn flags_in(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("--")
        .map(|(i, _)| {
            let name: String = text[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            format!("--{name}")
        })
        .filter(|f| f.len() > 2)
        .collect()
}

/// The README's command table and `kpo run`'s usage and flag table name the subcommands and
/// flags `kpo` has, each command row every flag of its own (`--policy`, `--state-dir` and
/// `--socket` are said once, for all: checked below), and the defaults the code takes.
#[test]
fn the_readme_names_the_commands_and_flags_kpo_has() {
    use std::collections::BTreeSet;
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let shared: BTreeSet<String> = ["--policy", "--state-dir", "--socket"]
        .map(String::from)
        .into();
    // The command table's rows of `kpo` commands: `| `kpo apply PARAM=VALUE [--netns ...]` | ...`.
    let mut rows = 0;
    for line in readme.lines().filter(|l| l.starts_with("| `kpo ")) {
        let cell = line.split(" | ").next().unwrap();
        for span in cell.split('`').skip(1).step_by(2) {
            let words: Vec<&str> = span
                .split_whitespace()
                .skip(1)
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase()))
                .collect();
            let flags = flags_of(&words);
            let named = flags_in(span);
            for flag in &named {
                assert!(
                    flags.contains(flag),
                    "README: `{span}`: kpo has no {flag} there"
                );
            }
            if words != ["optimize", "replay"] {
                let left: Vec<_> = flags
                    .difference(&named)
                    .filter(|f| !shared.contains(*f))
                    .collect();
                assert!(left.is_empty(), "README: `{span}` leaves out {left:?}");
            }
            rows += 1;
        }
    }
    use clap::CommandFactory;
    let subcommands = kpo_agent::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !["run", "help"].contains(&c.get_name()))
        .count();
    // `run` has a section of its own.
    assert_eq!(rows, subcommands, "README: a row for each command but run");

    // `run` and the operator commands take the shared flags; `check` --policy alone; replay none.
    for name in [
        "run", "apply", "revert", "journal", "status", "pause", "resume", "pending", "approve",
        "reject", "explain",
    ] {
        assert!(flags_of(&[name]).is_superset(&shared), "kpo {name}");
    }
    // docs/optimizer.md's table of `kpo optimize replay`'s flags.
    let optimizer =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/optimizer.md"))
            .unwrap();
    let replay_table: BTreeSet<String> = optimizer
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .flat_map(|l| flags_in(l.split(" | ").next().unwrap()))
        .collect();
    assert_eq!(
        replay_table,
        flags_of(&["optimize", "replay"]),
        "docs/optimizer.md: replay's flags"
    );
    let check = flags_of(&["check"]);
    assert!(
        check.contains("--policy") && !check.contains("--state-dir") && !check.contains("--socket")
    );
    assert!(flags_of(&["optimize", "replay"]).is_disjoint(&shared));

    // `kpo run`: its usage block and its flag table, against clap and the defaults in the code.
    let section = &readme[readme.find("## `kpo run`").unwrap()..];
    let usage = &section[..section.find("| flag |").unwrap()];
    assert_eq!(
        flags_in(usage),
        flags_of(&["run"]),
        "README: kpo run's usage"
    );
    let table: Vec<(String, String)> = section
        .lines()
        .skip_while(|l| !l.starts_with("| flag |"))
        .skip(2)
        .take_while(|l| l.starts_with("| `--"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let flag = flags_in(cells[0]).into_iter().next().unwrap();
            (flag, cells[1].trim_matches('`').to_string())
        })
        .collect();
    let in_table: BTreeSet<String> = table.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(in_table, flags_of(&["run"]), "README: kpo run's flag table");
    let config = Config::default();
    let path = |p: &Path| p.display().to_string();
    for (flag, default) in &table {
        let code = match flag.as_str() {
            "--policy" => kpo_agent::policy::DEFAULT_PATH.to_string(),
            "--state-dir" => kpo_agent::journal::DEFAULT_STATE_DIR.to_string(),
            "--socket" => kpo_agent::api::DEFAULT_SOCKET.to_string(),
            "--tick" | "--window" => {
                let given = humantime::parse_duration(default).unwrap();
                let code = if flag == "--tick" {
                    config.tick
                } else {
                    config.window
                };
                assert_eq!(given, code, "README: the default of {flag}");
                continue;
            }
            "--events" => path(&config.events),
            "--duty-fraction" => config.duty_fraction.to_string(),
            "--btf" => path(&config.btf),
            "--proc-root" => path(&config.proc_root),
            "--sysfs-root" => path(&config.sysfs_root),
            "--config" | "--disable-sensor" => {
                assert!(config.disabled_sensors.is_empty());
                "none".into()
            }
            "--recommend-only" => "off".into(),
            "--metrics" => {
                assert!(config.metrics.is_none());
                "off".into()
            }
            other => panic!("README: a default for {other} this test does not know"),
        };
        assert_eq!(*default, code, "README: the default of {flag}");
    }
}

/// The event kinds README lists, docs/events.md's `kind` row and sections, and the schema's enum
/// are the same.
#[test]
fn the_docs_list_the_event_kinds_the_schema_has() {
    use std::collections::BTreeSet;
    let read = |doc: &str| {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(doc)).unwrap()
    };
    let spans = |text: &str| -> BTreeSet<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    };
    let schema: serde_json::Value = serde_json::from_str(&read("docs/events.schema.json")).unwrap();
    let kinds: BTreeSet<String> = schema["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let readme = read("README.md");
    let listed = &readme[readme.find("\nKinds: ").unwrap()..];
    assert_eq!(
        spans(&listed[..listed.find(". Every kind").unwrap()]),
        kinds,
        "README's kinds"
    );
    let events = read("docs/events.md");
    let row = events
        .lines()
        .find(|l| l.starts_with("| `kind` |"))
        .unwrap();
    let row = row.split(" | ").nth(2).unwrap();
    assert_eq!(spans(row), kinds, "docs/events.md's kind row");
    let sections: BTreeSet<String> = events
        .lines()
        .filter(|l| l.starts_with("## `"))
        .flat_map(spans)
        .collect();
    assert_eq!(sections, kinds, "docs/events.md's sections");
}
