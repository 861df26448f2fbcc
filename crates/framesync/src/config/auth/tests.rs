use std::path::Path;

use super::{AuthConfig, AuthStyle};
use crate::config::Config;

fn env(name: &str) -> Option<String> {
    match name {
        "TOKEN" => Some("tok-abc-123".into()),
        "PASS" => Some("p@ss word".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn config(sink: &str) -> anyhow::Result<Config> {
    let text = format!(
        "ledger = \"l.db\"\n[frames]\nstart = \"2026-11-01T00:00:00Z\"\n[source]\nurl = \"http://h:1/e?from={{from}}&to={{to}}\"\nuid = \"/id\"\n[sink]\nurl = \"http://h:1/rs\"\n{sink}\n"
    );
    Config::parse(&text, Path::new("."), &env)
}

fn error(sink: &str) -> String {
    format!("{:#}", config(sink).expect_err("the config should be refused"))
}

#[test]
fn each_kind_reads_its_keys_and_registers_its_secrets() {
    let basic = config("[sink.auth]\nkind = \"basic\"\nuser = \"me\"\npassword = \"${PASS}\"").unwrap();
    assert!(matches!(basic.sink.auth, Some(AuthConfig::Basic { .. })));
    // base64("me:p@ss word") and the percent-encoded form are scrubbed as well as the value.
    let scrubbed = basic.secrets.scrub("bWU6cEBzcyB3b3Jk p@ss word p%40ss%20word");
    assert_eq!(scrubbed, "*** *** ***");
    let query = config("[sink.auth]\nkind = \"query\"\nparam = \"api_key\"\nkey = \"${TOKEN}\"").unwrap();
    assert!(matches!(query.sink.auth, Some(AuthConfig::Query { .. })));
    let oauth = config(
        "[sink.auth]\nkind = \"oauth2\"\ntoken_url = \"http://h:1/token\"\nclient_id = \"fs\"\nclient_secret = \"${TOKEN}\"\nscope = \"write\"",
    )
    .unwrap();
    let Some(AuthConfig::OAuth2(o)) = &oauth.sink.auth else { panic!("{:?}", oauth.sink.auth) };
    assert_eq!((o.auth_style, o.scope.as_deref(), o.section), (AuthStyle::Basic, Some("write"), "sink.auth"));
    assert!(!format!("{:?}", oauth.sink).contains("tok-abc-123"), "Debug never shows a secret");
    assert!(config("").unwrap().sink.auth.is_none(), "no table, no auth: today's behaviour");
}

#[test]
fn bad_auth_tables_are_refused_naming_the_key() {
    let cases = [
        ("[sink.auth]\ntoken = \"${TOKEN}\"", "sink.auth.kind: missing"),
        ("[sink.auth]\nkind = \"digest\"", "sink.auth.kind"),
        ("[sink.auth]\nkind = \"bearer\"", "sink.auth.token: missing"),
        ("[sink.auth]\nkind = \"bearer\"\ntoken = \"tok-literal\"", "sink.auth.token: a secret cannot be written"),
        ("[sink.auth]\nkind = \"bearer\"\ntoken = \"Bearer ${TOKEN}\"", "sink.auth.token: a secret cannot"),
        ("[sink.auth]\nkind = \"bearer\"\ntoken = \"${NOPE}\"", "NOPE is not set"),
        (
            "[sink.auth]\nkind = \"bearer\"\ntoken = \"${EMPTY}\"",
            "sink.auth.token: the environment variable EMPTY is empty",
        ),
        (
            "[sink.auth]\nkind = \"bearer\"\ntoken = \"${TOKEN}\"\nuser = \"me\"",
            "sink.auth.user: not a key of kind = \"bearer\"",
        ),
        ("[sink.auth]\nkind = \"basic\"\npassword = \"${PASS}\"", "sink.auth.user: missing"),
        ("[sink.auth]\nkind = \"basic\"\nuser = \"me\"\npassword = \"hunter2\"", "sink.auth.password: a secret cannot"),
        ("[sink.auth]\nkind = \"basic\"\nuser = \"a:b\"\npassword = \"${PASS}\"", "sink.auth.user: holds a ':'"),
        ("[sink.auth]\nkind = \"query\"\nkey = \"${TOKEN}\"", "sink.auth.param: missing"),
        ("[sink.auth]\nkind = \"query\"\nparam = \"k\"\nkey = \"abc\"", "sink.auth.key: a secret cannot"),
        (
            "[sink.auth]\nkind = \"oauth2\"\nclient_id = \"a\"\nclient_secret = \"${TOKEN}\"",
            "sink.auth.token_url: missing",
        ),
        (
            "[sink.auth]\nkind = \"oauth2\"\ntoken_url = \"ftp://h/t\"\nclient_id = \"a\"\nclient_secret = \"${TOKEN}\"",
            "sink.auth.token_url: must start with http",
        ),
        (
            "[sink.auth]\nkind = \"oauth2\"\ntoken_url = \"http://h/t\"\nclient_secret = \"${TOKEN}\"",
            "sink.auth.client_id: missing",
        ),
        (
            "[sink.auth]\nkind = \"oauth2\"\ntoken_url = \"http://h/t\"\nclient_id = \"a\"",
            "sink.auth.client_secret: missing",
        ),
        (
            "[sink.auth]\nkind = \"oauth2\"\ntoken_url = \"http://h/t\"\nclient_id = \"a\"\nclient_secret = \"s3cret\"",
            "sink.auth.client_secret: a secret cannot",
        ),
        (
            "[sink.auth]\nkind = \"oauth2\"\ntoken_url = \"http://h/t\"\nclient_id = \"a\"\nclient_secret = \"${TOKEN}\"\nauth_style = \"header\"",
            "sink.auth.auth_style",
        ),
        ("[sink.auth]\nkind = \"bearer\"\ntoken = \"${TOKEN}\"\ncolor = \"red\"", "color"),
    ];
    for (table, expected) in cases {
        let e = error(table);
        assert!(e.contains(expected), "{table:?}: {e}");
        assert!(!e.contains("tok-abc-123") && !e.contains("hunter2") && !e.contains("s3cret"), "{e}");
    }
}

/// Each `[sink.auth]` and `[source.auth]` block the example config shows, uncommented, parses.
#[test]
fn every_auth_example_in_the_example_config_parses() {
    let env = |name: &str| {
        name.ends_with("_TOKEN") || name.contains("SECRET") || name.contains("PASSWORD") || name.contains("KEY")
    };
    let blocks: Vec<String> = crate::config::EXAMPLE
        .split("# [")
        .filter(|b| b.starts_with("sink.auth]") || b.starts_with("source.auth]"))
        .map(|b| {
            b.lines()
                .take_while(|l| l.starts_with("# ") || l.ends_with(']'))
                .map(|l| l.trim_start_matches("# "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert_eq!(blocks.len(), 5, "{blocks:#?}");
    for block in blocks {
        let table = format!("[{}", block.replace("source.auth]", "sink.auth]"));
        let text = format!(
            "ledger = \"l.db\"\n[frames]\nstart = \"2026-11-01T00:00:00Z\"\n[source]\nurl = \"http://h:1/e?from={{from}}&to={{to}}\"\nuid = \"/id\"\n[sink]\nurl = \"http://h:1/rs\"\n{table}\n"
        );
        let parsed = Config::parse(&text, Path::new("."), &|n| env(n).then(|| format!("v-{n}")));
        assert!(parsed.as_ref().is_ok_and(|c| c.sink.auth.is_some()), "{table}: {:?}", parsed.err());
    }
}

#[test]
fn an_auth_kind_and_an_authorization_header_are_two_sources_of_truth() {
    let e = error(
        "headers = { authorization = \"Bearer ${TOKEN}\" }\n[sink.auth]\nkind = \"bearer\"\ntoken = \"${TOKEN}\"",
    );
    assert!(e.contains("sink.auth: an Authorization header is also set in sink.headers"), "{e}");
    let other = config("headers = { X-Tenant = \"t1\" }\n[sink.auth]\nkind = \"bearer\"\ntoken = \"${TOKEN}\"");
    assert!(other.is_ok(), "other headers stay");
}
