//! Conversions between the schema-11 JSON that `applyChanges` carries
//! (notetypes, decks, deck presets) and the schema-18 rows we store.
//!
//! Keys this code does not name travel in the protobuf `other` field as a
//! JSON object, and come back out on the way to the client, so add-on data
//! and keys from newer clients survive a round trip.

use prost::Message;
use serde_json::{json, Map, Value};

mod deck_config;
mod decks;
mod notetypes;

pub(crate) use deck_config::{deck_config_from_json, deck_config_to_json, DeckConfigRow};
pub(crate) use decks::{deck_from_json, deck_to_json, human_deck_name, native_deck_name, DeckRow};
pub(crate) use notetypes::{notetype_from_json, notetype_to_json, NotetypeRow};

pub(crate) type Object = Map<String, Value>;

/// A JSON number or numeric string as i64 (clients send ids both ways).
pub(crate) fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        // Whole numbers that fit; not 1e300 clamped, nor 2^64-1 wrapped.
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

fn req_int(o: &Object, key: &str) -> Result<i64, String> {
    int(o.get(key)).ok_or_else(|| format!("'{key}' is missing or not a number"))
}

fn float(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Booleans as clients write them: true/false, 0/1, "true"/"1".
fn boolean(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_f64().unwrap_or(0.0) != 0.0),
        Value::String(s) => Some(matches!(s.trim(), "true" | "1")),
        _ => None,
    }
}

fn string(o: &Object, key: &str) -> String {
    o.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn req_string(o: &Object, key: &str) -> Result<String, String> {
    o.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("'{key}' is missing or not a string"))
}

fn floats(v: Option<&Value>) -> Vec<f32> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| float(Some(x)))
                .map(|f| f as f32)
                .collect()
        })
        .unwrap_or_default()
}

/// The keys of `o` not in `known`, as the bytes of a JSON object (empty when none).
fn others(o: &Object, known: &[&str]) -> Vec<u8> {
    let rest: Object = o
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if rest.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&rest).expect("JSON values serialise")
    }
}

/// Puts stored unknown keys back, never over a key we wrote ourselves.
fn merge_others(o: &mut Object, other: &[u8]) {
    if other.is_empty() {
        return;
    }
    if let Ok(Value::Object(extra)) = serde_json::from_slice(other) {
        for (k, v) in extra {
            o.entry(k).or_insert(v);
        }
    }
}

fn opt_json<T: Into<Value>>(v: Option<T>) -> Value {
    v.map(Into::into).unwrap_or(Value::Null)
}

/// f32 values as the client prints them: the shortest form that reads back
/// as the same f32 (0.9, not 0.8999999761581421).
fn f32_json(f: f32) -> Value {
    let shortest: f64 = format!("{f}").parse().unwrap_or(f as f64);
    json!(shortest)
}

fn f32s_json(v: &[f32]) -> Value {
    Value::Array(v.iter().map(|f| f32_json(*f)).collect())
}

/// Encodes a prost message (a convenience for row writers).
pub(crate) fn blob(m: &impl Message) -> Vec<u8> {
    m.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::storage::collection::{objects, open_or_create};

    /// The objects of a new collection, as the wire's schema-11 JSON.
    fn new_collection() -> (Vec<Value>, Vec<Value>, Vec<Value>) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_or_create(dir.path()).unwrap();
        (
            objects::notetypes(&conn, -1).unwrap(),
            objects::decks(&conn, -1).unwrap(),
            objects::deck_configs(&conn, -1).unwrap(),
        )
    }

    fn usn(v: &Value) -> i32 {
        int(v.get("usn")).unwrap() as i32
    }

    #[test]
    fn what_we_send_comes_back_the_same() {
        let (notetypes, decks, presets) = new_collection();
        assert!(!notetypes.is_empty() && !decks.is_empty() && !presets.is_empty());
        for v in &notetypes {
            assert_eq!(
                &notetype_to_json(&notetype_from_json(v).unwrap(), usn(v)),
                v
            );
        }
        for v in &decks {
            assert_eq!(&deck_to_json(&deck_from_json(v).unwrap(), usn(v)), v);
        }
        for v in &presets {
            assert_eq!(
                &deck_config_to_json(&deck_config_from_json(v).unwrap(), usn(v)),
                v
            );
        }
    }

    #[test]
    fn keys_we_do_not_know_survive_a_round_trip() {
        let (notetypes, decks, presets) = new_collection();
        let with = |v: &Value| {
            let mut v = v.clone();
            v["addonKey"] = json!({"kept": [1, 2, 3]});
            v
        };
        let (nt, deck, preset) = (with(&notetypes[0]), with(&decks[0]), with(&presets[0]));
        let back = notetype_to_json(&notetype_from_json(&nt).unwrap(), usn(&nt));
        assert_eq!(back["addonKey"], nt["addonKey"]);
        let back = deck_to_json(&deck_from_json(&deck).unwrap(), usn(&deck));
        assert_eq!(back["addonKey"], deck["addonKey"]);
        let back = deck_config_to_json(&deck_config_from_json(&preset).unwrap(), usn(&preset));
        assert_eq!(back["addonKey"], preset["addonKey"]);
    }

    #[test]
    fn missing_required_keys_are_refused_not_defaulted() {
        let (notetypes, decks, _) = new_collection();
        let mut nt = notetypes[0].clone();
        nt.as_object_mut().unwrap().remove("id");
        assert!(notetype_from_json(&nt).is_err());
        let mut deck = decks[0].clone();
        deck.as_object_mut().unwrap().remove("name");
        assert!(deck_from_json(&deck).is_err());
        assert!(notetype_from_json(&json!("not an object")).is_err());
    }

    #[test]
    fn ids_arrive_as_numbers_or_strings() {
        assert_eq!(
            int(Some(&json!(1_700_000_000_000_i64))),
            Some(1_700_000_000_000)
        );
        assert_eq!(int(Some(&json!("1700000000000"))), Some(1_700_000_000_000));
        assert_eq!(int(Some(&json!(3.0))), Some(3));
        assert_eq!(int(Some(&json!(3.5))), None);
        assert_eq!(int(Some(&json!(1e300))), None);
        assert_eq!(int(Some(&json!(null))), None);
        assert_eq!(int(None), None);
    }

    #[test]
    fn deck_names_between_the_wire_and_the_table() {
        assert_eq!(
            native_deck_name("Languages::French"),
            "Languages\u{1f}French"
        );
        assert_eq!(
            human_deck_name("Languages\u{1f}French"),
            "Languages::French"
        );
        assert_eq!(human_deck_name(&native_deck_name("A::B::C")), "A::B::C");
    }
}
