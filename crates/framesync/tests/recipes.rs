//! The recipes for real servers (examples/recipes/, run by scripts/recipes) are configs framesync
//! accepts: each parses with framesync's own config parser once the script's @PLACEHOLDER@s are
//! filled in, so a renamed or removed key fails here rather than in a user's hands.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What scripts/recipes puts in place of each placeholder (values of the same shape).
fn placeholder(name: &str, dir: &Path) -> String {
    match name {
        "LEDGER" => dir.join("ledger.db").to_str().unwrap().to_owned(),
        "START" => "2026-11-30T06:00:00Z".into(),
        "CH_PORT" => "8123".into(),
        "SOURCE" => "http://127.0.0.1:8428".into(),
        "TARGET" => "http://127.0.0.1:8429".into(),
        "SS" => "127.0.0.1:3000".into(),
        "RS" => "127.0.0.1:3001".into(),
        other => panic!("@{other}@ is a placeholder this test (and perhaps scripts/recipes) does not fill in"),
    }
}

/// `text` with every `@NAME@` (NAME of capitals, digits and `_`) filled in, and the names seen.
fn fill(text: &str, dir: &Path) -> (String, BTreeSet<String>) {
    let (mut out, mut names, mut rest) = (String::new(), BTreeSet::new(), text);
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let name_len = after.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
        match name_len {
            Some(n) if n > 0 && after[n..].starts_with('@') => {
                out.push_str(&placeholder(&after[..n], dir));
                names.insert(after[..n].to_owned());
                rest = &after[n + 1..];
            }
            _ => {
                out.push('@');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    (out, names)
}

/// The recipes: every folder of examples/recipes/ holding a framesync.toml.
fn recipes() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("examples/recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("framesync.toml").is_file())
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_recipe_config_parses_once_the_scripts_placeholders_are_filled_in() {
    let recipes = recipes();
    assert!(recipes.len() >= 4, "{recipes:?}");
    let script = read(&root().join("scripts/recipes"));
    let dir = tempfile::tempdir().unwrap();
    let env = |name: &str| (name == "CH_PASSWORD").then(|| "a-password".to_owned());
    for name in &recipes {
        let path = root().join("examples/recipes").join(name).join("framesync.toml");
        let text = read(&path);
        assert!(!text.starts_with("# DRAFT"), "{name}: still a draft");
        let (filled, placeholders) = fill(&text, dir.path());
        let config = framesync::config::Config::parse(&filled, dir.path(), &env)
            .unwrap_or_else(|e| panic!("examples/recipes/{name}/framesync.toml: {e:#}"));
        // The script runs this recipe, and fills in each of its placeholders.
        assert!(script.contains(&format!("recipe_{name}()")), "scripts/recipes has no recipe_{name}");
        for p in placeholders.iter().filter(|p| *p != "START") {
            assert!(script.contains(&format!("\"{p}=")), "{name}: scripts/recipes never fills in @{p}@");
        }
        // A recipe whose line in scripts/recipes counts duplicates as a failure has a lookup.
        let with_lookup = ["clickhouse-record", "clickhouse-batch", "rest-offset"].contains(&name.as_str());
        assert_eq!(config.sink.lookup.is_some(), with_lookup, "{name}: lookup");
    }
}

#[test]
fn the_batched_clickhouse_recipe_asks_for_many_uids_per_lookup_and_logs_in_with_the_environments_password() {
    let dir = tempfile::tempdir().unwrap();
    let env = |name: &str| (name == "CH_PASSWORD").then(|| "a-password".to_owned());
    let parse = |name: &str| {
        let text = read(&root().join("examples/recipes").join(name).join("framesync.toml"));
        framesync::config::Config::parse(&fill(&text, dir.path()).0, dir.path(), &env).unwrap()
    };
    let batch = parse("clickhouse-batch");
    let lookup = batch.sink.lookup.as_ref().unwrap();
    assert!(lookup.is_batched() && lookup.batch_size > 1, "{lookup:?}");
    for config in [batch, parse("clickhouse-record")] {
        assert!(!config.secrets.scrub("user framesync, a-password").contains("a-password"), "the password is a secret");
    }
}
