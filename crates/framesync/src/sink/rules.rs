//! Answer rules (`[[sink.answers]]`): what an RS answer means, by its status, a substring of
//! its body, or a value at a JSON pointer in it. The first rule that matches decides; when
//! none does, the statuses decide as [`super::classify`] says.

use serde_json::Value;

use super::{Answer, Verdict};
use crate::config::{Means, Rule};
use crate::http;

impl Rule {
    fn matches(&self, answer: &Answer, json: Option<&Value>) -> bool {
        // A redirect is never a delivery, whatever a rule says.
        if self.means.acknowledges() && (300..=399).contains(&answer.status) {
            return false;
        }
        let status = self.status.is_empty() || self.status.iter().any(|s| s.matches(answer.status));
        let contains = self.body_contains.as_deref().is_none_or(|text| answer.body.contains(text));
        let pointed = self.pointer.as_deref().is_none_or(|pointer| match json.and_then(|json| json.pointer(pointer)) {
            None => false,
            Some(found) => self.equals.as_ref().is_none_or(|want| found == want),
        });
        status && contains && pointed
    }

    fn verdict(&self, n: usize, answer: &Answer) -> Verdict {
        let status = answer.status;
        let why = format!("HTTP {status}, sink.answers[{n}] ({})", self.means.name());
        match self.means {
            Means::Acknowledged | Means::AlreadyThere => Verdict::Acknowledged,
            Means::Retry => Verdict::RetryLater {
                reason: format!("{why}{}: {}", http::retry_note(answer.retry_after), http::excerpt(answer.body)),
                retry_after: answer.retry_after,
                status: Some(status),
            },
            Means::Reject => Verdict::Rejected { status, response: http::excerpt(answer.body) },
            Means::Broken => Verdict::Broken {
                reason: format!("{why}: the RS or the config is wrong: {}", http::excerpt(answer.body)),
            },
        }
    }
}

/// The verdict of the first rule that matches `answer`, if one does.
pub fn judge(rules: &[Rule], answer: &Answer) -> Option<Verdict> {
    let json: Option<Value> =
        if rules.iter().any(|r| r.pointer.is_some()) { serde_json::from_str(answer.body).ok() } else { None };
    let (n, rule) = rules.iter().enumerate().find(|(_, rule)| rule.matches(answer, json.as_ref()))?;
    Some(rule.verdict(n, answer))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::StatusMatch;

    fn rule(means: Means) -> Rule {
        Rule { status: vec![], body_contains: None, pointer: None, equals: None, means }
    }

    fn answer(status: u16, body: &str) -> Answer<'_> {
        Answer { status, body, retry_after: None, location: None, batch: true }
    }

    fn kind(verdict: Option<Verdict>) -> &'static str {
        match verdict {
            None => "none",
            Some(Verdict::Acknowledged) => "ack",
            Some(Verdict::RetryLater { .. }) => "retry",
            Some(Verdict::Rejected { .. }) => "reject",
            Some(Verdict::Broken { .. }) => "broken",
            Some(_) => "other",
        }
    }

    #[test]
    fn a_status_rule_matches_its_codes_and_classes() {
        let rules = [Rule { status: vec![StatusMatch::Code(500), StatusMatch::Class(4)], ..rule(Means::Broken) }];
        assert_eq!(kind(judge(&rules, &answer(500, ""))), "broken");
        assert_eq!(kind(judge(&rules, &answer(404, ""))), "broken");
        assert_eq!(kind(judge(&rules, &answer(502, ""))), "none");
        assert_eq!(kind(judge(&rules, &answer(200, ""))), "none");
    }

    #[test]
    fn a_clickhouse_parse_error_is_a_rejected_record_not_a_retry() {
        let rules = [Rule {
            status: vec![StatusMatch::Code(500)],
            body_contains: Some("Code: 27".into()),
            ..rule(Means::Reject)
        }];
        let body = "Code: 27. DB::Exception: Cannot parse input: expected '\"' before: 'x': (at row 1)";
        assert_eq!(judge(&rules, &answer(500, body)), Some(Verdict::Rejected { status: 500, response: body.into() }));
        assert_eq!(kind(judge(&rules, &answer(500, "Code: 241. Memory limit exceeded"))), "none");
        assert_eq!(kind(judge(&rules, &answer(400, body))), "none", "both conditions must hold");
    }

    #[test]
    fn a_pointer_rule_matches_a_present_value_or_an_equal_one() {
        let present = [Rule { pointer: Some("/error/type".into()), ..rule(Means::Reject) }];
        let equal = [Rule {
            pointer: Some("/error/type".into()),
            equals: Some(json!("version_conflict_engine_exception")),
            ..rule(Means::AlreadyThere)
        }];
        let conflict = r#"{"error":{"type":"version_conflict_engine_exception"}}"#;
        let other = r#"{"error":{"type":"mapper_parsing_exception"}}"#;
        assert_eq!(kind(judge(&present, &answer(400, other))), "reject");
        assert_eq!(kind(judge(&present, &answer(400, r#"{"ok":true}"#))), "none");
        assert_eq!(kind(judge(&present, &answer(400, "not json"))), "none");
        assert_eq!(kind(judge(&equal, &answer(409, conflict))), "ack");
        assert_eq!(kind(judge(&equal, &answer(409, other))), "none");
        let number = [Rule { pointer: Some("/n".into()), equals: Some(json!(0)), ..rule(Means::Retry) }];
        assert_eq!(kind(judge(&number, &answer(200, r#"{"n":0}"#))), "retry");
        assert_eq!(kind(judge(&number, &answer(200, r#"{"n":1}"#))), "none");
    }

    #[test]
    fn rules_are_tried_in_order_and_the_first_match_decides() {
        let rules = [
            Rule { body_contains: Some("Code: 27".into()), ..rule(Means::Reject) },
            Rule { status: vec![StatusMatch::Class(5)], ..rule(Means::Broken) },
        ];
        assert_eq!(kind(judge(&rules, &answer(500, "Code: 27. bad"))), "reject");
        assert_eq!(kind(judge(&rules, &answer(500, "Code: 241"))), "broken");
        let swapped = [rules[1].clone(), rules[0].clone()];
        assert_eq!(kind(judge(&swapped, &answer(500, "Code: 27. bad"))), "broken");
    }

    #[test]
    fn a_rule_overrides_a_built_in_status_but_never_acknowledges_a_redirect() {
        let statuses = super::super::Statuses { already_there: &[409], reject: &[400, 422] };
        let rules = [Rule { status: vec![StatusMatch::Code(404)], ..rule(Means::AlreadyThere) }];
        let gone = answer(404, "");
        assert!(matches!(super::super::classify(&gone, statuses), Verdict::Broken { .. }), "built in");
        assert_eq!(judge(&rules, &gone), Some(Verdict::Acknowledged), "the rule first");
        let anything = [Rule { body_contains: Some("ok".into()), ..rule(Means::Acknowledged) }];
        assert_eq!(kind(judge(&anything, &answer(302, "ok"))), "none");
        assert_eq!(kind(judge(&anything, &answer(200, "ok"))), "ack");
        let Some(Verdict::Broken { reason }) =
            judge(&[Rule { status: vec![StatusMatch::Code(200)], ..rule(Means::Broken) }], &answer(200, "x"))
        else {
            unreachable!()
        };
        assert!(reason.contains("sink.answers[0] (broken)"), "{reason}");
    }
}
