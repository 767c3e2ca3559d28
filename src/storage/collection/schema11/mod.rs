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
