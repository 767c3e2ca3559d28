//! Conversions between the schema-11 JSON that `applyChanges` carries
//! (notetypes, decks, deck presets) and the schema-18 rows we store.
//!
//! Keys this code does not name travel in the protobuf `other` field as a
//! JSON object, and come back out on the way to the client, so add-on data
//! and keys from newer clients survive a round trip.

use prost::Message;
use serde_json::{json, Map, Value};

use super::proto::*;

pub type Object = Map<String, Value>;

/// A JSON number or numeric string as i64 (clients send ids both ways).
pub fn int(v: Option<&Value>) -> Option<i64> {
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

// ---------------------------------------------------------------- notetypes

pub struct NotetypeRow {
    pub id: i64,
    pub name: String,
    pub mtime: i64,
    pub config: NotetypeConfig,
    pub fields: Vec<(String, FieldConfig)>,
    pub templates: Vec<(String, TemplateConfig)>,
}

const NOTETYPE_KEYS: &[&str] = &[
    "latexPost",
    "flds",
    "css",
    "originalStockKind",
    "originalId",
    "id",
    "usn",
    "mod",
    "req",
    "latexPre",
    "name",
    "did",
    "tmpls",
    "type",
    "sortf",
    "latexsvg",
];
const FIELD_KEYS: &[&str] = &[
    "name",
    "ord",
    "sticky",
    "rtl",
    "plainText",
    "font",
    "size",
    "collapsed",
    "description",
    "excludeFromSearch",
    "id",
    "tag",
    "preventDeletion",
];
const TEMPLATE_KEYS: &[&str] = &[
    "name", "ord", "did", "afmt", "bafmt", "qfmt", "bqfmt", "bfont", "bsize", "id",
];

pub fn notetype_from_json(v: &Value) -> Result<NotetypeRow, String> {
    let o = v.as_object().ok_or("a notetype is not an object")?;
    let reqs = o
        .get("req")
        .and_then(Value::as_array)
        .map(|reqs| {
            reqs.iter()
                .filter_map(|r| {
                    let r = r.as_array()?;
                    Some(CardRequirement {
                        card_ord: u32::try_from(int(r.first())?).ok()?,
                        kind: match r.get(1)?.as_str()? {
                            "any" => 1,
                            "all" => 2,
                            _ => 0,
                        },
                        field_ords: r
                            .get(2)?
                            .as_array()?
                            .iter()
                            .filter_map(|f| u32::try_from(int(Some(f))?).ok())
                            .collect(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let config = NotetypeConfig {
        kind: req_int(o, "type")? as i32,
        sort_field_idx: u32::try_from(req_int(o, "sortf")?)
            .map_err(|_| "'sortf' is out of range".to_string())?,
        css: string(o, "css"),
        target_deck_id_unused: int(o.get("did")).unwrap_or(0),
        latex_pre: string(o, "latexPre"),
        latex_post: string(o, "latexPost"),
        latex_svg: boolean(o.get("latexsvg")).unwrap_or(false),
        reqs,
        original_stock_kind: int(o.get("originalStockKind")).unwrap_or(0) as i32,
        original_id: int(o.get("originalId")),
        other: others(o, NOTETYPE_KEYS),
    };
    let mut fields = Vec::new();
    for f in o
        .get("flds")
        .and_then(Value::as_array)
        .ok_or("'flds' is missing")?
    {
        let f = f.as_object().ok_or("a field is not an object")?;
        fields.push((
            req_string(f, "name")?,
            FieldConfig {
                sticky: boolean(f.get("sticky")).unwrap_or(false),
                rtl: boolean(f.get("rtl")).unwrap_or(false),
                font_name: string(f, "font"),
                font_size: int(f.get("size")).unwrap_or(0) as u32,
                description: string(f, "description"),
                plain_text: boolean(f.get("plainText")).unwrap_or(false),
                collapsed: boolean(f.get("collapsed")).unwrap_or(false),
                exclude_from_search: boolean(f.get("excludeFromSearch")).unwrap_or(false),
                id: int(f.get("id")),
                tag: int(f.get("tag")).map(|t| t as u32),
                prevent_deletion: boolean(f.get("preventDeletion")).unwrap_or(false),
                other: others(f, FIELD_KEYS),
            },
        ));
    }
    let mut templates = Vec::new();
    for t in o
        .get("tmpls")
        .and_then(Value::as_array)
        .ok_or("'tmpls' is missing")?
    {
        let t = t.as_object().ok_or("a template is not an object")?;
        templates.push((
            req_string(t, "name")?,
            TemplateConfig {
                q_format: string(t, "qfmt"),
                a_format: string(t, "afmt"),
                q_format_browser: string(t, "bqfmt"),
                a_format_browser: string(t, "bafmt"),
                target_deck_id: int(t.get("did")).unwrap_or(0),
                browser_font_name: string(t, "bfont"),
                browser_font_size: int(t.get("bsize")).unwrap_or(0) as u32,
                id: int(t.get("id")),
                other: others(t, TEMPLATE_KEYS),
            },
        ));
    }
    Ok(NotetypeRow {
        id: req_int(o, "id")?,
        name: req_string(o, "name")?,
        mtime: req_int(o, "mod")?,
        config,
        fields,
        templates,
    })
}

pub fn notetype_to_json(row: &NotetypeRow, usn: i32) -> Value {
    let c = &row.config;
    let flds: Vec<Value> = row
        .fields
        .iter()
        .enumerate()
        .map(|(ord, (name, f))| {
            let mut o = json!({
                "name": name, "ord": ord, "sticky": f.sticky, "rtl": f.rtl, "font": f.font_name,
                "size": f.font_size, "description": f.description, "plainText": f.plain_text,
                "collapsed": f.collapsed, "excludeFromSearch": f.exclude_from_search,
                "id": opt_json(f.id), "tag": opt_json(f.tag), "preventDeletion": f.prevent_deletion,
            });
            merge_others(o.as_object_mut().unwrap(), &f.other);
            o
        })
        .collect();
    let tmpls: Vec<Value> = row
        .templates
        .iter()
        .enumerate()
        .map(|(ord, (name, t))| {
            let mut o = json!({
                "name": name, "ord": ord, "qfmt": t.q_format, "afmt": t.a_format,
                "bqfmt": t.q_format_browser, "bafmt": t.a_format_browser,
                "did": if t.target_deck_id > 0 { json!(t.target_deck_id) } else { Value::Null },
                "bfont": t.browser_font_name, "bsize": t.browser_font_size, "id": opt_json(t.id),
            });
            merge_others(o.as_object_mut().unwrap(), &t.other);
            o
        })
        .collect();
    let req: Vec<Value> = c
        .reqs
        .iter()
        .map(|r| {
            let kind = match r.kind {
                1 => "any",
                2 => "all",
                _ => "none",
            };
            json!([r.card_ord, kind, r.field_ords])
        })
        .collect();
    let mut o = json!({
        "id": row.id, "name": row.name, "type": c.kind, "mod": row.mtime, "usn": usn,
        "sortf": c.sort_field_idx,
        "did": if c.target_deck_id_unused > 0 { json!(c.target_deck_id_unused) } else { Value::Null },
        "tmpls": tmpls, "flds": flds, "css": c.css, "latexPre": c.latex_pre,
        "latexPost": c.latex_post, "latexsvg": c.latex_svg, "req": req,
    });
    let obj = o.as_object_mut().unwrap();
    if c.original_stock_kind != 0 {
        obj.insert("originalStockKind".into(), json!(c.original_stock_kind));
    }
    if let Some(id) = c.original_id {
        obj.insert("originalId".into(), json!(id));
    }
    merge_others(obj, &c.other);
    o
}

// -------------------------------------------------------------------- decks

pub struct DeckRow {
    pub id: i64,
    /// The name as the client wrote it (`::` separated).
    pub human_name: String,
    pub mtime: i64,
    pub common: DeckCommon,
    pub kind: DeckKindContainer,
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

pub fn deck_from_json(v: &Value) -> Result<DeckRow, String> {
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

pub fn deck_to_json(row: &DeckRow, usn: i32) -> Value {
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
pub fn native_deck_name(human: &str) -> String {
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

pub fn human_deck_name(native: &str) -> String {
    native.replace('\u{1f}', "::")
}

// -------------------------------------------------------------- deck config

pub struct DeckConfigRow {
    pub id: i64,
    pub name: String,
    pub mtime: i64,
    pub config: DeckConfigConfig,
}

const DCONF_KEYS: &[&str] = &[
    "id",
    "newSortOrder",
    "replayq",
    "newPerDayMinimum",
    "usn",
    "autoplay",
    "dyn",
    "maxTaken",
    "reviewOrder",
    "buryInterdayLearning",
    "newMix",
    "mod",
    "timer",
    "name",
    "interdayLearningMix",
    "newGatherPriority",
    "fsrsWeights",
    "fsrsParams5",
    "fsrsParams6",
    "desiredRetention",
    "stopTimerOnAnswer",
    "secondsToShowQuestion",
    "secondsToShowAnswer",
    "questionAction",
    "answerAction",
    "waitForAudio",
    "sm2Retention",
    "weightSearch",
    "ignoreRevlogsBeforeDate",
    "easyDaysPercentages",
    "new",
    "rev",
    "lapse",
];
const NEW_KEYS: &[&str] = &["order", "delays", "bury", "perDay", "initialFactor", "ints"];
const REV_KEYS: &[&str] = &["maxIvl", "hardFactor", "ease4", "ivlFct", "perDay", "bury"];
const LAPSE_KEYS: &[&str] = &["leechFails", "mult", "leechAction", "delays", "minInt"];

pub fn deck_config_from_json(v: &Value) -> Result<DeckConfigRow, String> {
    let o = v.as_object().ok_or("a deck preset is not an object")?;
    let empty = Object::new();
    let new = o.get("new").and_then(Value::as_object).unwrap_or(&empty);
    let rev = o.get("rev").and_then(Value::as_object).unwrap_or(&empty);
    let lapse = o.get("lapse").and_then(Value::as_object).unwrap_or(&empty);
    let f = |o: &Object, k: &str, d: f64| float(o.get(k)).unwrap_or(d) as f32;
    let u = |o: &Object, k: &str, d: i64| int(o.get(k)).unwrap_or(d).max(0) as u32;
    let b = |o: &Object, k: &str, d: bool| boolean(o.get(k)).unwrap_or(d);
    let ints: Vec<i64> = new
        .get("ints")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| int(Some(x))).collect())
        .unwrap_or_default();
    let (good, easy) = if ints.len() >= 2 && ints[0] >= 0 && ints[1] >= 0 {
        (ints[0] as u32, ints[1] as u32)
    } else {
        (1, 4)
    };
    // Unknown keys, including those inside new/rev/lapse under their names.
    let mut other: Object = serde_json::from_slice(&others(o, DCONF_KEYS)).unwrap_or_default();
    for (name, sub, known) in [
        ("new", new, NEW_KEYS),
        ("rev", rev, REV_KEYS),
        ("lapse", lapse, LAPSE_KEYS),
    ] {
        if let Ok(Value::Object(extra)) = serde_json::from_slice::<Value>(&others(sub, known)) {
            other.insert(name.into(), Value::Object(extra));
        }
    }
    let config = DeckConfigConfig {
        learn_steps: floats(new.get("delays")),
        relearn_steps: floats(lapse.get("delays")),
        fsrs_params_4: floats(o.get("fsrsWeights")),
        easy_days_percentages: floats(o.get("easyDaysPercentages")),
        fsrs_params_5: floats(o.get("fsrsParams5")),
        fsrs_params_6: floats(o.get("fsrsParams6")),
        new_per_day: u(new, "perDay", 0),
        reviews_per_day: u(rev, "perDay", 0),
        initial_ease: int(new.get("initialFactor")).unwrap_or(2500) as f32 / 1000.0,
        easy_multiplier: f(rev, "ease4", 1.3),
        hard_multiplier: f(rev, "hardFactor", 1.2),
        lapse_multiplier: f(lapse, "mult", 0.0),
        interval_multiplier: f(rev, "ivlFct", 1.0),
        maximum_review_interval: u(rev, "maxIvl", 36500),
        minimum_lapse_interval: u(lapse, "minInt", 1),
        graduating_interval_good: good,
        graduating_interval_easy: easy,
        new_card_insert_order: if int(new.get("order")).unwrap_or(1) == 0 {
            1
        } else {
            0
        },
        leech_action: if int(lapse.get("leechAction")).unwrap_or(1) == 1 {
            1
        } else {
            0
        },
        leech_threshold: u(lapse, "leechFails", 8),
        disable_autoplay: !b(o, "autoplay", true),
        cap_answer_time_to_secs: u(o, "maxTaken", 60),
        show_timer: int(o.get("timer")).unwrap_or(0) != 0,
        skip_question_when_replaying_answer: !b(o, "replayq", false),
        bury_new: b(new, "bury", false),
        bury_reviews: b(rev, "bury", false),
        bury_interday_learning: b(o, "buryInterdayLearning", false),
        new_mix: int(o.get("newMix")).unwrap_or(0) as i32,
        interday_learning_mix: int(o.get("interdayLearningMix")).unwrap_or(0) as i32,
        new_card_sort_order: int(o.get("newSortOrder")).unwrap_or(0) as i32,
        review_order: int(o.get("reviewOrder")).unwrap_or(0) as i32,
        new_card_gather_priority: int(o.get("newGatherPriority")).unwrap_or(0) as i32,
        new_per_day_minimum: u(o, "newPerDayMinimum", 0),
        question_action: int(o.get("questionAction")).unwrap_or(0) as i32,
        desired_retention: f(o, "desiredRetention", 0.0),
        stop_timer_on_answer: b(o, "stopTimerOnAnswer", false),
        historical_retention: f(o, "sm2Retention", 0.0),
        seconds_to_show_question: f(o, "secondsToShowQuestion", 0.0),
        seconds_to_show_answer: f(o, "secondsToShowAnswer", 0.0),
        answer_action: int(o.get("answerAction")).unwrap_or(0) as i32,
        wait_for_audio: b(o, "waitForAudio", true),
        param_search: string(o, "weightSearch"),
        ignore_revlogs_before_date: string(o, "ignoreRevlogsBeforeDate"),
        other: if other.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&other).unwrap()
        },
    };
    Ok(DeckConfigRow {
        id: req_int(o, "id")?,
        name: req_string(o, "name")?,
        mtime: req_int(o, "mod")?,
        config,
    })
}

pub fn deck_config_to_json(row: &DeckConfigRow, usn: i32) -> Value {
    let c = &row.config;
    let mut other: Object = if c.other.is_empty() {
        Object::new()
    } else {
        serde_json::from_slice(&c.other).unwrap_or_default()
    };
    let mut sub = |name: &str, v: Value| {
        let mut v = v;
        if let Some(Value::Object(extra)) = other.remove(name) {
            let o = v.as_object_mut().unwrap();
            for (k, x) in extra {
                o.entry(k).or_insert(x);
            }
        }
        v
    };
    let new = sub(
        "new",
        json!({
            "bury": c.bury_new, "delays": f32s_json(&c.learn_steps),
            "initialFactor": (c.initial_ease * 1000.0).trunc() as i64,
            "ints": [c.graduating_interval_good, c.graduating_interval_easy, 0],
            "order": if c.new_card_insert_order == 1 { 0 } else { 1 }, "perDay": c.new_per_day,
        }),
    );
    let rev = sub(
        "rev",
        json!({
            "bury": c.bury_reviews, "ease4": f32_json(c.easy_multiplier), "ivlFct": f32_json(c.interval_multiplier),
            "maxIvl": c.maximum_review_interval, "perDay": c.reviews_per_day,
            "hardFactor": f32_json(c.hard_multiplier),
        }),
    );
    let lapse = sub(
        "lapse",
        json!({
            "delays": f32s_json(&c.relearn_steps), "leechAction": c.leech_action,
            "leechFails": c.leech_threshold, "minInt": c.minimum_lapse_interval,
            "mult": f32_json(c.lapse_multiplier),
        }),
    );
    let mut o = json!({
        "id": row.id, "mod": row.mtime, "name": row.name, "usn": usn,
        "maxTaken": c.cap_answer_time_to_secs, "autoplay": !c.disable_autoplay,
        "timer": if c.show_timer { 1 } else { 0 }, "replayq": !c.skip_question_when_replaying_answer,
        "new": new, "rev": rev, "lapse": lapse, "dyn": false,
        "newMix": c.new_mix, "newPerDayMinimum": c.new_per_day_minimum,
        "interdayLearningMix": c.interday_learning_mix, "reviewOrder": c.review_order,
        "newSortOrder": c.new_card_sort_order, "newGatherPriority": c.new_card_gather_priority,
        "buryInterdayLearning": c.bury_interday_learning,
        "fsrsWeights": f32s_json(&c.fsrs_params_4), "fsrsParams5": f32s_json(&c.fsrs_params_5),
        "fsrsParams6": f32s_json(&c.fsrs_params_6),
        "desiredRetention": f32_json(c.desired_retention),
        "ignoreRevlogsBeforeDate": c.ignore_revlogs_before_date,
        "easyDaysPercentages": f32s_json(&c.easy_days_percentages),
        "stopTimerOnAnswer": c.stop_timer_on_answer,
        "secondsToShowQuestion": f32_json(c.seconds_to_show_question),
        "secondsToShowAnswer": f32_json(c.seconds_to_show_answer),
        "questionAction": c.question_action, "answerAction": c.answer_action,
        "waitForAudio": c.wait_for_audio, "sm2Retention": f32_json(c.historical_retention),
        "weightSearch": c.param_search,
    });
    let obj = o.as_object_mut().unwrap();
    for (k, v) in other {
        obj.entry(k).or_insert(v);
    }
    o
}

/// Encodes a prost message (a convenience for row writers).
pub fn blob(m: &impl Message) -> Vec<u8> {
    m.encode_to_vec()
}
