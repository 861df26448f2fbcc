//! What the RS receives for staged records, apart from the ledger and the network: each
//! record's body through `sink.map` (or as staged), and the requests the records are grouped
//! into — one record under its own key, or a batch under the hash of its UIDs.

use std::collections::HashMap;

use crate::delivery::Key;
use crate::mapping::Mapping;
use crate::model::Pending;
use crate::sink::{Outgoing, batch_key};

/// A staged record ready to go: as staged, and as the RS receives it.
#[derive(Debug)]
pub(super) struct Item {
    pub pending: Pending,
    pub outgoing: Outgoing,
}

/// One request's worth: its records and the key they go under.
#[derive(Debug)]
pub(super) struct Unit {
    pub items: Vec<Item>,
    pub key: Key,
    /// A new batch, never sent: its key is written with `sent_through` before it goes.
    pub fresh: bool,
}

/// The record as the RS receives it: its body through `map`, or as staged without one. The
/// error says why the mapping cannot fill it (the record is dead-lettered with it, never sent).
pub(super) fn outgoing(map: Option<&Mapping>, uid: &str, body: &str) -> Result<Outgoing, String> {
    let Some(mapping) = map else { return Ok(Outgoing { uid: uid.to_owned(), body: body.to_owned() }) };
    let value = serde_json::from_str(body).map_err(|e| format!("the staged record is not JSON: {e}"))?;
    let mapped = mapping.apply(&value).map_err(|why| why.to_string())?;
    Ok(Outgoing { uid: uid.to_owned(), body: mapped.to_string() })
}

/// The key of records about to go together for the first time: a batch's hash of its UIDs, or
/// a single record's own.
pub(super) fn key_of(items: &[Item]) -> Key {
    match items {
        [_] => Key::Own,
        _ => Key::Batch(batch_key(&items.iter().map(|i| i.outgoing.clone()).collect::<Vec<_>>())),
    }
}

/// Groups records into requests: one each unless batches hold more than one record; in
/// batches, records already sent go again in their batch (or alone, if they were sent alone),
/// and the others form new batches of up to `batch_size`, in order.
pub(super) fn form_units(items: Vec<Item>, batch_size: usize) -> Vec<Unit> {
    if batch_size <= 1 {
        return items.into_iter().map(|item| Unit { items: vec![item], key: Key::Own, fresh: false }).collect();
    }
    let mut units: Vec<Unit> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut run: Vec<Item> = Vec::new();
    for item in items {
        match item.pending.key.clone() {
            None => run.push(item),
            Some(key) => {
                new_batches(&mut run, batch_size, &mut units);
                match key {
                    Key::Batch(k) if by_key.contains_key(&k) => units[by_key[&k]].items.push(item),
                    Key::Batch(k) => {
                        by_key.insert(k.clone(), units.len());
                        units.push(Unit { items: vec![item], key: Key::Batch(k), fresh: false });
                    }
                    Key::Own => units.push(Unit { items: vec![item], key: Key::Own, fresh: false }),
                }
            }
        }
    }
    new_batches(&mut run, batch_size, &mut units);
    units
}

/// Turns a run of never-sent records into new batches of up to `size`.
fn new_batches(run: &mut Vec<Item>, size: usize, units: &mut Vec<Unit>) {
    let mut rest = std::mem::take(run).into_iter().peekable();
    while rest.peek().is_some() {
        let items: Vec<Item> = rest.by_ref().take(size).collect();
        let key = key_of(&items);
        units.push(Unit { items, key, fresh: true });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::header_key;

    fn mapping(text: &str) -> Mapping {
        toml::from_str(text).unwrap()
    }

    fn item(seq: i64, uid: &str, key: Option<Key>) -> Item {
        let body = format!(r#"{{"id":"{uid}"}}"#);
        let pending = Pending {
            seq,
            uid: uid.into(),
            body: body.clone(),
            key,
            attempts: 0,
            unknown: false,
            failed_before: false,
        };
        Item { pending, outgoing: Outgoing { uid: uid.into(), body } }
    }

    fn batch(key: &str) -> Option<Key> {
        Some(Key::Batch(key.into()))
    }

    #[test]
    fn a_staged_record_goes_as_it_is_or_through_sink_map() {
        let staged = r#"{"id":"ev-1","amount":3,"at":"1970-01-01T00:00:01Z"}"#;
        for (map, body, want) in [
            (None, staged, Ok(staged.to_owned())),
            (None, "not json", Ok("not json".to_owned())),
            (Some(r#"event_id = "/id""#), staged, Ok(r#"{"event_id":"ev-1"}"#.to_owned())),
            (Some(r#"id = "/id""#), staged, Ok(r#"{"id":"ev-1"}"#.to_owned())),
            (Some(r#"source = { const = "orders" }"#), staged, Ok(r#"{"source":"orders"}"#.to_owned())),
            (Some(r#"ms = { from = "/at", time = "epoch_ms" }"#), staged, Ok(r#"{"ms":1000}"#.to_owned())),
            (Some(r#"n = { from = "/n", optional = true }"#), staged, Ok("{}".to_owned())),
            (
                Some(r#"total = "/payload/amount""#),
                staged,
                Err("field total: the record has nothing at /payload/amount".to_owned()),
            ),
            (
                Some(r#"id = "/id""#),
                "not json",
                Err("the staged record is not JSON: expected ident at line 1 column 2".to_owned()),
            ),
        ] {
            let map = map.map(mapping);
            let got = outgoing(map.as_ref(), "ev-1", body).map(|o| o.body);
            assert_eq!(got, want, "{map:?} on {body}");
        }
        let sent = outgoing(Some(&mapping(r#"event_id = "/id""#)), "ev-1", staged).unwrap();
        assert_eq!(sent.uid, "ev-1", "the UID stays the staged record's");
    }

    #[test]
    fn a_batch_key_is_the_same_for_the_same_uids_in_the_same_order() {
        let ab = key_of(&[item(1, "a", None), item(2, "b", None)]);
        let mut other_bodies = [item(7, "a", None), item(8, "b", None)];
        other_bodies[0].outgoing.body = r#"{"mapped":true}"#.into();
        assert!(ab.is_batch());
        assert_eq!(ab, key_of(&other_bodies), "the key depends on the UIDs alone");
        assert_ne!(ab, key_of(&[item(1, "b", None), item(2, "a", None)]));
        assert_eq!(key_of(&[item(1, "a", None)]), Key::Own, "one record goes under its own key");
        let outgoing: Vec<Outgoing> = other_bodies.iter().map(|i| i.outgoing.clone()).collect();
        assert_eq!(header_key(&outgoing, &ab), ab.to_sql(), "a batch's Idempotency-Key is its key");
        assert_eq!(header_key(&outgoing[..1], &Key::Own), "a", "a record's is its UID");
    }

    #[test]
    fn records_are_grouped_into_requests_keeping_the_keys_they_were_sent_under() {
        fn shape(units: &[Unit]) -> Vec<(Vec<&str>, bool, bool)> {
            units
                .iter()
                .map(|u| (u.items.iter().map(|i| i.pending.uid.as_str()).collect(), u.key.is_batch(), u.fresh))
                .collect()
        }
        let fresh = || vec![item(1, "a", None), item(2, "b", None), item(3, "c", None)];
        let alone = vec![(vec!["a"], false, false), (vec!["b"], false, false), (vec!["c"], false, false)];
        assert_eq!(shape(&form_units(fresh(), 1)), alone, "one at a time");
        assert_eq!(shape(&form_units(fresh(), 0)), alone);
        let units = form_units(fresh(), 2);
        assert_eq!(shape(&units), [(vec!["a", "b"], true, true), (vec!["c"], false, true)]);
        assert_eq!(units[0].key, key_of(&units[0].items));

        let sent = vec![
            item(1, "a", batch("batch-x")),
            item(2, "b", None),
            item(3, "c", batch("batch-x")),
            item(4, "d", Some(Key::Own)),
            item(5, "e", None),
            item(6, "f", None),
        ];
        let units = form_units(sent, 3);
        assert_eq!(
            shape(&units),
            [
                (vec!["a", "c"], true, false),
                (vec!["b"], false, true),
                (vec!["d"], false, false),
                (vec!["e", "f"], true, true),
            ],
            "a batch goes again whole under its key; the new records between form their own"
        );
        assert_eq!(units[0].key, Key::Batch("batch-x".into()));
        let once_batched = vec![item(1, "a", batch("batch-x")), item(2, "b", batch("batch-x"))];
        assert_eq!(shape(&form_units(once_batched, 1)), [(vec!["a"], false, false), (vec!["b"], false, false)]);
    }
}
