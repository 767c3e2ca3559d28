//! Deck presets (`dconf`): schema-11 JSON to and from a `deck_config` row.

use serde_json::{json, Value};

use super::{
    boolean, f32_json, f32s_json, float, floats, int, others, req_int, req_string, string, Object,
};
use crate::storage::collection::proto::*;

pub(crate) struct DeckConfigRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) mtime: i64,
    pub(crate) config: DeckConfigConfig,
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

pub(crate) fn deck_config_from_json(v: &Value) -> Result<DeckConfigRow, String> {
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

pub(crate) fn deck_config_to_json(row: &DeckConfigRow, usn: i32) -> Value {
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
