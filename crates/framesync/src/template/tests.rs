use super::*;

const ALL: &[Var] = &[Var::From, Var::To, Var::Last, Var::Uid, Var::Uids];

fn render(text: &str, vars: &Vars) -> String {
    Template::parse(text, ALL).unwrap().render(vars)
}

fn uid(uid: &str) -> Vars<'_> {
    Vars { uid, ..Vars::default() }
}

#[test]
fn placeholders_are_filled_and_other_braces_pass_through() {
    let vars = Vars { from: "2026-11-01T00:00:00Z", to: "2026-11-01T00:01:00Z", ..Vars::default() };
    assert_eq!(
        render("SELECT * FROM t WHERE ts >= '{from}' AND ts < '{to}' FORMAT JSONEachRow", &vars),
        "SELECT * FROM t WHERE ts >= '2026-11-01T00:00:00Z' AND ts < '2026-11-01T00:01:00Z' FORMAT JSONEachRow"
    );
    assert_eq!(
        render(r#"{"range": {"t": {"gte": "{from}"}}}"#, &vars),
        r#"{"range": {"t": {"gte": "2026-11-01T00:00:00Z"}}}"#
    );
    assert_eq!(render("WHERE id = {id:String}", &vars), "WHERE id = {id:String}", "a server's own parameter");
    assert_eq!(render("${TOKEN}", &vars), "${TOKEN}", "an environment variable is the config's to expand");
    assert_eq!(render("{ unclosed", &vars), "{ unclosed");
}

#[test]
fn filters_render_for_the_language_the_value_lands_in() {
    assert_eq!(render("unhex('{uid:hex}')", &uid("a'b")), "unhex('612762')");
    assert_eq!(render("{uid:json}", &uid("a\"b\\\n")), r#""a\"b\\\n""#);
    assert_eq!(render("{uid}", &uid("a'b")), "a'b");
    let uids = ["a", "b,c", "d'"];
    let vars = Vars { uids: &uids, ..Vars::default() };
    assert_eq!(render("{uids:json}", &vars), r#"["a","b,c","d'"]"#);
    assert_eq!(render("{uids:hex}", &vars), "61,622c63,6427");
    assert_eq!(render("{uids:hex}", &Vars::default()), "");
}

#[test]
fn a_bare_uid_between_quotes_is_refused_with_the_safe_form() {
    for text in ["WHERE uid = '{uid}'", "WHERE uid = \"{uid}\"", "IN ('{uids:hex}')x{uids}'"] {
        let err = Template::parse(text, ALL).unwrap_err();
        assert!(err.contains("between quotes") || err.contains("needs a filter"), "{text}: {err}");
    }
    let err = Template::parse("WHERE uid = '{uid}'", ALL).unwrap_err();
    assert!(err.contains("unhex('{uid:hex}')"), "{err}");
    assert!(Template::parse("WHERE uid = unhex('{uid:hex}')", ALL).is_ok());
    assert!(Template::parse("ts >= '{from}'", ALL).is_ok(), "frame bounds are framesync's own text");
}

#[test]
fn unknown_names_filters_and_places_are_errors_naming_what_is_allowed() {
    let err = Template::parse("{form}", &[Var::From, Var::To]).unwrap_err();
    assert!(err.contains("unknown placeholder {form}") && err.contains("{from}, {to}"), "{err}");
    let err = Template::parse("{uid}", &[Var::From]).unwrap_err();
    assert!(err.contains("cannot be used here"), "{err}");
    let err = Template::parse("{uid:base64}", ALL).unwrap_err();
    assert!(err.contains("unknown filter"), "{err}");
    let err = Template::parse("{uids}", ALL).unwrap_err();
    assert!(err.contains("{uids:json}"), "{err}");
}

#[test]
fn query_parameters_are_percent_encoded_whole() {
    let query = Query::new(vec![
        ("query".into(), Template::parse("SELECT count() FROM t WHERE uid = unhex('{uid:hex}')", ALL).unwrap()),
        ("match[]".into(), Template::parse("{uid}", ALL).unwrap()),
    ]);
    let url = query.apply("http://h:8123/?database=db", &uid("x&y=1 %\n"));
    assert_eq!(
        url,
        "http://h:8123/?database=db&query=SELECT%20count%28%29%20FROM%20t%20WHERE%20uid%20%3D%20unhex%28%277826793d3120250a%27%29&match%5B%5D=x%26y%3D1%20%25%0A"
    );
    assert_eq!(Query::default().apply("http://h/x", &Vars::default()), "http://h/x");
    assert!(query.uses(Var::Uid) && !query.uses(Var::From));
}

#[test]
fn environment_text_is_expanded_after_parsing() {
    let template = Template::parse("key=${KEY}&uid={uid}", ALL).unwrap();
    let template = template.map_text(|t| Ok::<_, ()>(t.replace("${KEY}", "{uid}"))).unwrap();
    assert_eq!(template.render(&uid("u1")), "key={uid}&uid=u1", "a secret holding braces stays text");
}
