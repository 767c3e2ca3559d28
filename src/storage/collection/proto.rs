//! The protobuf blobs stored in schema-18 collection tables.
//!
//! Field numbers and types are Anki's (`proto/anki/*.proto`); the structs are
//! derived with prost, with no code generation at build time. Field 255
//! (`other`) carries a JSON object of keys this schema does not name, so that
//! unknown data survives a round trip.

use prost::Message;

/// `notetypes.config`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct NotetypeConfig {
    #[prost(int32, tag = "1")]
    pub(crate) kind: i32,
    #[prost(uint32, tag = "2")]
    pub(crate) sort_field_idx: u32,
    #[prost(string, tag = "3")]
    pub(crate) css: String,
    #[prost(int64, tag = "4")]
    pub(crate) target_deck_id_unused: i64,
    #[prost(string, tag = "5")]
    pub(crate) latex_pre: String,
    #[prost(string, tag = "6")]
    pub(crate) latex_post: String,
    #[prost(bool, tag = "7")]
    pub(crate) latex_svg: bool,
    #[prost(message, repeated, tag = "8")]
    pub(crate) reqs: Vec<CardRequirement>,
    #[prost(int32, tag = "9")]
    pub(crate) original_stock_kind: i32,
    #[prost(int64, optional, tag = "10")]
    pub(crate) original_id: Option<i64>,
    #[prost(bytes = "vec", tag = "255")]
    pub(crate) other: Vec<u8>,
}

pub(crate) const NOTETYPE_NORMAL: i32 = 0;

#[derive(Clone, PartialEq, Message)]
pub(crate) struct CardRequirement {
    #[prost(uint32, tag = "1")]
    pub(crate) card_ord: u32,
    /// 0 none, 1 any, 2 all
    #[prost(int32, tag = "2")]
    pub(crate) kind: i32,
    #[prost(uint32, repeated, tag = "3")]
    pub(crate) field_ords: Vec<u32>,
}

/// `fields.config`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct FieldConfig {
    #[prost(bool, tag = "1")]
    pub(crate) sticky: bool,
    #[prost(bool, tag = "2")]
    pub(crate) rtl: bool,
    #[prost(string, tag = "3")]
    pub(crate) font_name: String,
    #[prost(uint32, tag = "4")]
    pub(crate) font_size: u32,
    #[prost(string, tag = "5")]
    pub(crate) description: String,
    #[prost(bool, tag = "6")]
    pub(crate) plain_text: bool,
    #[prost(bool, tag = "7")]
    pub(crate) collapsed: bool,
    #[prost(bool, tag = "8")]
    pub(crate) exclude_from_search: bool,
    #[prost(int64, optional, tag = "9")]
    pub(crate) id: Option<i64>,
    #[prost(uint32, optional, tag = "10")]
    pub(crate) tag: Option<u32>,
    #[prost(bool, tag = "11")]
    pub(crate) prevent_deletion: bool,
    #[prost(bytes = "vec", tag = "255")]
    pub(crate) other: Vec<u8>,
}

/// `templates.config`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct TemplateConfig {
    #[prost(string, tag = "1")]
    pub(crate) q_format: String,
    #[prost(string, tag = "2")]
    pub(crate) a_format: String,
    #[prost(string, tag = "3")]
    pub(crate) q_format_browser: String,
    #[prost(string, tag = "4")]
    pub(crate) a_format_browser: String,
    #[prost(int64, tag = "5")]
    pub(crate) target_deck_id: i64,
    #[prost(string, tag = "6")]
    pub(crate) browser_font_name: String,
    #[prost(uint32, tag = "7")]
    pub(crate) browser_font_size: u32,
    #[prost(int64, optional, tag = "8")]
    pub(crate) id: Option<i64>,
    #[prost(bytes = "vec", tag = "255")]
    pub(crate) other: Vec<u8>,
}

/// `decks.common`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct DeckCommon {
    #[prost(bool, tag = "1")]
    pub(crate) study_collapsed: bool,
    #[prost(bool, tag = "2")]
    pub(crate) browser_collapsed: bool,
    #[prost(uint32, tag = "3")]
    pub(crate) last_day_studied: u32,
    #[prost(int32, tag = "4")]
    pub(crate) new_studied: i32,
    #[prost(int32, tag = "5")]
    pub(crate) review_studied: i32,
    #[prost(int32, tag = "7")]
    pub(crate) milliseconds_studied: i32,
    #[prost(int32, tag = "6")]
    pub(crate) learning_studied: i32,
    #[prost(bytes = "vec", tag = "255")]
    pub(crate) other: Vec<u8>,
}

/// `decks.kind`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct DeckKindContainer {
    #[prost(oneof = "DeckKind", tags = "1, 2")]
    pub(crate) kind: Option<DeckKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum DeckKind {
    #[prost(message, tag = "1")]
    Normal(NormalDeck),
    #[prost(message, tag = "2")]
    Filtered(FilteredDeck),
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct NormalDeck {
    #[prost(int64, tag = "1")]
    pub(crate) config_id: i64,
    #[prost(uint32, tag = "2")]
    pub(crate) extend_new: u32,
    #[prost(uint32, tag = "3")]
    pub(crate) extend_review: u32,
    #[prost(string, tag = "4")]
    pub(crate) description: String,
    #[prost(bool, tag = "5")]
    pub(crate) markdown_description: bool,
    #[prost(uint32, optional, tag = "6")]
    pub(crate) review_limit: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub(crate) new_limit: Option<u32>,
    #[prost(message, optional, tag = "8")]
    pub(crate) review_limit_today: Option<DayLimit>,
    #[prost(message, optional, tag = "9")]
    pub(crate) new_limit_today: Option<DayLimit>,
    #[prost(float, optional, tag = "10")]
    pub(crate) desired_retention: Option<f32>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct DayLimit {
    #[prost(uint32, tag = "1")]
    pub(crate) limit: u32,
    #[prost(uint32, tag = "2")]
    pub(crate) today: u32,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct FilteredDeck {
    #[prost(bool, tag = "1")]
    pub(crate) reschedule: bool,
    #[prost(message, repeated, tag = "2")]
    pub(crate) search_terms: Vec<SearchTerm>,
    #[prost(float, repeated, tag = "3")]
    pub(crate) delays: Vec<f32>,
    #[prost(uint32, tag = "4")]
    pub(crate) preview_delay: u32,
    #[prost(uint32, tag = "7")]
    pub(crate) preview_again_secs: u32,
    #[prost(uint32, tag = "5")]
    pub(crate) preview_hard_secs: u32,
    #[prost(uint32, tag = "6")]
    pub(crate) preview_good_secs: u32,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct SearchTerm {
    #[prost(string, tag = "1")]
    pub(crate) search: String,
    #[prost(uint32, tag = "2")]
    pub(crate) limit: u32,
    #[prost(int32, tag = "3")]
    pub(crate) order: i32,
}

/// `deck_config.config`
#[derive(Clone, PartialEq, Message)]
pub(crate) struct DeckConfigConfig {
    #[prost(float, repeated, tag = "1")]
    pub(crate) learn_steps: Vec<f32>,
    #[prost(float, repeated, tag = "2")]
    pub(crate) relearn_steps: Vec<f32>,
    #[prost(float, repeated, tag = "3")]
    pub(crate) fsrs_params_4: Vec<f32>,
    #[prost(float, repeated, tag = "4")]
    pub(crate) easy_days_percentages: Vec<f32>,
    #[prost(float, repeated, tag = "5")]
    pub(crate) fsrs_params_5: Vec<f32>,
    #[prost(float, repeated, tag = "6")]
    pub(crate) fsrs_params_6: Vec<f32>,
    #[prost(uint32, tag = "9")]
    pub(crate) new_per_day: u32,
    #[prost(uint32, tag = "10")]
    pub(crate) reviews_per_day: u32,
    #[prost(float, tag = "11")]
    pub(crate) initial_ease: f32,
    #[prost(float, tag = "12")]
    pub(crate) easy_multiplier: f32,
    #[prost(float, tag = "13")]
    pub(crate) hard_multiplier: f32,
    #[prost(float, tag = "14")]
    pub(crate) lapse_multiplier: f32,
    #[prost(float, tag = "15")]
    pub(crate) interval_multiplier: f32,
    #[prost(uint32, tag = "16")]
    pub(crate) maximum_review_interval: u32,
    #[prost(uint32, tag = "17")]
    pub(crate) minimum_lapse_interval: u32,
    #[prost(uint32, tag = "18")]
    pub(crate) graduating_interval_good: u32,
    #[prost(uint32, tag = "19")]
    pub(crate) graduating_interval_easy: u32,
    #[prost(int32, tag = "20")]
    pub(crate) new_card_insert_order: i32,
    #[prost(int32, tag = "21")]
    pub(crate) leech_action: i32,
    #[prost(uint32, tag = "22")]
    pub(crate) leech_threshold: u32,
    #[prost(bool, tag = "23")]
    pub(crate) disable_autoplay: bool,
    #[prost(uint32, tag = "24")]
    pub(crate) cap_answer_time_to_secs: u32,
    #[prost(bool, tag = "25")]
    pub(crate) show_timer: bool,
    #[prost(bool, tag = "26")]
    pub(crate) skip_question_when_replaying_answer: bool,
    #[prost(bool, tag = "27")]
    pub(crate) bury_new: bool,
    #[prost(bool, tag = "28")]
    pub(crate) bury_reviews: bool,
    #[prost(bool, tag = "29")]
    pub(crate) bury_interday_learning: bool,
    #[prost(int32, tag = "30")]
    pub(crate) new_mix: i32,
    #[prost(int32, tag = "31")]
    pub(crate) interday_learning_mix: i32,
    #[prost(int32, tag = "32")]
    pub(crate) new_card_sort_order: i32,
    #[prost(int32, tag = "33")]
    pub(crate) review_order: i32,
    #[prost(int32, tag = "34")]
    pub(crate) new_card_gather_priority: i32,
    #[prost(uint32, tag = "35")]
    pub(crate) new_per_day_minimum: u32,
    #[prost(int32, tag = "36")]
    pub(crate) question_action: i32,
    #[prost(float, tag = "37")]
    pub(crate) desired_retention: f32,
    #[prost(bool, tag = "38")]
    pub(crate) stop_timer_on_answer: bool,
    #[prost(float, tag = "40")]
    pub(crate) historical_retention: f32,
    #[prost(float, tag = "41")]
    pub(crate) seconds_to_show_question: f32,
    #[prost(float, tag = "42")]
    pub(crate) seconds_to_show_answer: f32,
    #[prost(int32, tag = "43")]
    pub(crate) answer_action: i32,
    #[prost(bool, tag = "44")]
    pub(crate) wait_for_audio: bool,
    #[prost(string, tag = "45")]
    pub(crate) param_search: String,
    #[prost(string, tag = "46")]
    pub(crate) ignore_revlogs_before_date: String,
    #[prost(bytes = "vec", tag = "255")]
    pub(crate) other: Vec<u8>,
}

pub(crate) const LEECH_TAG_ONLY: i32 = 1;

impl DeckConfigConfig {
    /// The presets a new collection starts with (Anki's documented defaults).
    pub(crate) fn defaults() -> DeckConfigConfig {
        DeckConfigConfig {
            learn_steps: vec![1.0, 10.0],
            relearn_steps: vec![10.0],
            easy_days_percentages: vec![1.0; 7],
            new_per_day: 20,
            reviews_per_day: 200,
            initial_ease: 2.5,
            easy_multiplier: 1.3,
            hard_multiplier: 1.2,
            lapse_multiplier: 0.0,
            interval_multiplier: 1.0,
            maximum_review_interval: 36_500,
            minimum_lapse_interval: 1,
            graduating_interval_good: 1,
            graduating_interval_easy: 4,
            leech_action: LEECH_TAG_ONLY,
            leech_threshold: 8,
            cap_answer_time_to_secs: 60,
            desired_retention: 0.9,
            historical_retention: 0.9,
            wait_for_audio: true,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_deck_blobs_match_what_anki_writes() {
        // Observed in a collection created by the anki 26.9.3 package.
        let common = DeckCommon {
            study_collapsed: true,
            browser_collapsed: true,
            ..Default::default()
        };
        assert_eq!(common.encode_to_vec(), [0x08, 0x01, 0x10, 0x01]);
        let kind = DeckKindContainer {
            kind: Some(DeckKind::Normal(NormalDeck {
                config_id: 1,
                ..Default::default()
            })),
        };
        assert_eq!(kind.encode_to_vec(), [0x0a, 0x02, 0x08, 0x01]);
    }

    #[test]
    fn default_deck_config_decodes_back() {
        let bytes = DeckConfigConfig::defaults().encode_to_vec();
        let back = DeckConfigConfig::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.new_per_day, 20);
        assert_eq!(back.learn_steps, [1.0, 10.0]);
    }
}
