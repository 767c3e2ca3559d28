//! Decks, normal and filtered: schema-11 JSON to and from a `decks` row,
//! and deck names between the client's `::` and the stored form.

use serde_json::{json, Value};

use super::{
    boolean, f32s_json, floats, int, merge_others, opt_json, others, req_int, req_string, string,
    Object,
};
use crate::storage::collection::proto::*;

pub(crate) struct DeckRow {
    pub(crate) id: i64,
    /// The name as the client wrote it (`::` separated).
    pub(crate) human_name: String,
    pub(crate) mtime: i64,
    pub(crate) common: DeckCommon,
    pub(crate) kind: DeckKindContainer,
}

const DECK_KEYS: &[&str] = &[
    "usn",
    "revToday",
    "newLimit",
    "dyn",
    "reviewLimit",
    "newToday",
    "timeToday",
    "reviewLimitToday",
    "extendNew",
    "mod",
    "newLimitToday",
    "desc",
    "name",
    "lrnToday",
    "conf",
    "browserCollapsed",
    "extendRev",
    "id",
    "collapsed",
    "desiredRetention",
    // filtered decks
    "resched",
    "terms",
    "separate",
    "delays",
    "previewDelay",
    "previewAgainSecs",
    "previewHardSecs",
    "previewGoodSecs",
    "md",
    "return",
];

fn day_pair(o: &Object, key: &str) -> (i64, i64) {
    let a = o.get(key).and_then(Value::as_array);
    let at = |i| a.and_then(|a| int(a.get(i))).unwrap_or(0);
    (at(0), at(1))
}

fn day_limit(v: Option<&Value>) -> Option<DayLimit> {
    let o = v?.as_object()?;
    Some(DayLimit {
        limit: int(o.get("limit"))? as u32,
        today: int(o.get("today"))? as u32,
    })
}

pub(crate) fn deck_from_json(v: &Value) -> Result<DeckRow, String> {
    let o = v.as_object().ok_or("a deck is not an object")?;
    let (lrn_day, lrn) = day_pair(o, "lrnToday");
    let (rev_day, rev) = day_pair(o, "revToday");
    let (new_day, new) = day_pair(o, "newToday");
    let (time_day, time) = day_pair(o, "timeToday");
    let _ = lrn_day;
    let last = time_day.max(new_day).max(rev_day);
    let on_last = |day: i64, amount: i64| if day == last { amount as i32 } else { 0 };
    let common = DeckCommon {
        study_collapsed: boolean(o.get("collapsed")).unwrap_or(false),
        browser_collapsed: boolean(o.get("browserCollapsed")).unwrap_or(false),
        last_day_studied: last as u32,
        new_studied: on_last(new_day, new),
        review_studied: on_last(rev_day, rev),
        learning_studied: on_last(lrn_day, lrn),
        milliseconds_studied: time as i32,
        other: others(o, DECK_KEYS),
    };
    let filtered = boolean(o.get("dyn")).unwrap_or(false);
    let kind = if filtered {
        let terms = o
            .get("terms")
            .and_then(Value::as_array)
            .map(|terms| {
                terms
                    .iter()
                    .filter_map(|t| {
                        let t = t.as_array()?;
                        Some(SearchTerm {
                            search: t.first()?.as_str()?.to_owned(),
                            limit: int(t.get(1)).unwrap_or(0).max(0) as u32,
                            order: int(t.get(2)).unwrap_or(0) as i32,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        DeckKind::Filtered(FilteredDeck {
            reschedule: boolean(o.get("resched")).unwrap_or(false),
            search_terms: terms,
            delays: floats(o.get("delays")),
            preview_delay: int(o.get("previewDelay")).unwrap_or(0) as u32,
            preview_again_secs: int(o.get("previewAgainSecs")).unwrap_or(0) as u32,
            preview_hard_secs: int(o.get("previewHardSecs")).unwrap_or(0) as u32,
            preview_good_secs: int(o.get("previewGoodSecs")).unwrap_or(0) as u32,
        })
    } else {
        DeckKind::Normal(NormalDeck {
            config_id: int(o.get("conf")).unwrap_or(1),
            extend_new: int(o.get("extendNew")).unwrap_or(0).max(0) as u32,
            extend_review: int(o.get("extendRev")).unwrap_or(0).max(0) as u32,
            description: string(o, "desc"),
            markdown_description: boolean(o.get("md")).unwrap_or(false),
            review_limit: int(o.get("reviewLimit")).map(|v| v as u32),
            new_limit: int(o.get("newLimit")).map(|v| v as u32),
            review_limit_today: day_limit(o.get("reviewLimitToday")),
            new_limit_today: day_limit(o.get("newLimitToday")),
            desired_retention: int(o.get("desiredRetention")).map(|p| p as f32 / 100.0),
        })
    };
    Ok(DeckRow {
        id: req_int(o, "id")?,
        human_name: req_string(o, "name")?,
        mtime: int(o.get("mod")).unwrap_or(0),
        common,
        kind: DeckKindContainer { kind: Some(kind) },
    })
}

pub(crate) fn deck_to_json(row: &DeckRow, usn: i32) -> Value {
    let c = &row.common;
    let day = c.last_day_studied;
    let mut o = json!({
        "id": row.id, "mod": row.mtime, "name": row.human_name, "usn": usn,
        "lrnToday": [day, c.learning_studied], "revToday": [day, c.review_studied],
        "newToday": [day, c.new_studied], "timeToday": [day, c.milliseconds_studied],
        "collapsed": c.study_collapsed, "browserCollapsed": c.browser_collapsed,
    });
    let obj = o.as_object_mut().unwrap();
    match &row.kind.kind {
        Some(DeckKind::Filtered(f)) => {
            let terms: Vec<Value> = f
                .search_terms
                .iter()
                .map(|t| json!([t.search, t.limit, t.order]))
                .collect();
            obj.extend([
                ("desc".into(), json!("")),
                ("dyn".into(), json!(1)),
                ("resched".into(), json!(f.reschedule)),
                ("terms".into(), json!(terms)),
                ("separate".into(), json!(true)),
                (
                    "delays".into(),
                    if f.delays.is_empty() {
                        Value::Null
                    } else {
                        f32s_json(&f.delays)
                    },
                ),
                ("previewDelay".into(), json!(f.preview_delay)),
                ("previewAgainSecs".into(), json!(f.preview_again_secs)),
                ("previewHardSecs".into(), json!(f.preview_hard_secs)),
                ("previewGoodSecs".into(), json!(f.preview_good_secs)),
            ]);
        }
        normal => {
            let default = NormalDeck::default();
            let n = match normal {
                Some(DeckKind::Normal(n)) => n,
                _ => &default,
            };
            let limit = |l: &Option<DayLimit>| {
                l.as_ref()
                    .map(|l| json!({"limit": l.limit, "today": l.today}))
                    .unwrap_or(Value::Null)
            };
            obj.extend([
                ("desc".into(), json!(n.description)),
                ("dyn".into(), json!(0)),
                ("conf".into(), json!(n.config_id)),
                ("extendNew".into(), json!(n.extend_new)),
                ("extendRev".into(), json!(n.extend_review)),
                ("reviewLimit".into(), opt_json(n.review_limit)),
                ("newLimit".into(), opt_json(n.new_limit)),
                ("reviewLimitToday".into(), limit(&n.review_limit_today)),
                ("newLimitToday".into(), limit(&n.new_limit_today)),
                (
                    "desiredRetention".into(),
                    opt_json(n.desired_retention.map(|r| (r * 100.0).trunc() as i64)),
                ),
            ]);
            if n.markdown_description {
                obj.insert("md".into(), json!(true));
            }
        }
    }
    merge_others(obj, &c.other);
    o
}

/// The wire (`::`) form of a deck name to the stored form: components
/// normalised (NFC, no ASCII controls, trimmed of spaces and `:`, empty
/// becomes "blank") and joined by U+001F.
pub(crate) fn native_deck_name(human: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    human
        .split("::")
        .map(|part| {
            let part: String = part.nfc().filter(|c| !c.is_ascii_control()).collect();
            let part = part.trim_matches(|c: char| c.is_whitespace() || c == ':');
            if part.is_empty() {
                "blank".to_owned()
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

pub(crate) fn human_deck_name(native: &str) -> String {
    native.replace('\u{1f}', "::")
}
