//! The collection file's layout (Anki schema 18) and the content of a
//! collection the server creates itself. The one place that knows the tables.

use std::hash::{BuildHasher, Hasher};

use prost::Message;
use rusqlite::{params, Connection};

use super::proto::{
    CardRequirement, DeckCommon, DeckConfigConfig, DeckKind, DeckKindContainer, FieldConfig,
    NormalDeck, NotetypeConfig, TemplateConfig, NOTETYPE_NORMAL,
};

/// `col.ver` of the files this server stores and serves.
pub(crate) const SCHEMA_VERSION: i64 = 18;

/// Tables a schema-18 collection must have; an upload missing one is refused.
pub(crate) const TABLES: &[&str] = &[
    "col",
    "notes",
    "cards",
    "revlog",
    "graves",
    "notetypes",
    "fields",
    "templates",
    "decks",
    "deck_config",
    "config",
    "tags",
];

/// Column names, types and collations are what Anki clients query and what
/// their integrity check compares index order against; they are not ours to
/// choose. `unicase` must be registered before this runs.
const DDL_SCHEMA11: &str = "
CREATE TABLE col (
    id integer PRIMARY KEY,
    crt integer NOT NULL, mod integer NOT NULL, scm integer NOT NULL,
    ver integer NOT NULL, dty integer NOT NULL, usn integer NOT NULL,
    ls integer NOT NULL,
    conf text NOT NULL, models text NOT NULL, decks text NOT NULL,
    dconf text NOT NULL, tags text NOT NULL
);
CREATE TABLE notes (
    id integer PRIMARY KEY,
    guid text NOT NULL, mid integer NOT NULL, mod integer NOT NULL,
    usn integer NOT NULL, tags text NOT NULL, flds text NOT NULL,
    -- integer affinity on purpose: numeric sort fields then sort as numbers
    sfld integer NOT NULL,
    csum integer NOT NULL, flags integer NOT NULL, data text NOT NULL
);
CREATE TABLE cards (
    id integer PRIMARY KEY,
    nid integer NOT NULL, did integer NOT NULL, ord integer NOT NULL,
    mod integer NOT NULL, usn integer NOT NULL, type integer NOT NULL,
    queue integer NOT NULL, due integer NOT NULL, ivl integer NOT NULL,
    factor integer NOT NULL, reps integer NOT NULL, lapses integer NOT NULL,
    left integer NOT NULL, odue integer NOT NULL, odid integer NOT NULL,
    flags integer NOT NULL, data text NOT NULL
);
CREATE TABLE revlog (
    id integer PRIMARY KEY,
    cid integer NOT NULL, usn integer NOT NULL, ease integer NOT NULL,
    ivl integer NOT NULL, lastIvl integer NOT NULL, factor integer NOT NULL,
    time integer NOT NULL, type integer NOT NULL
);

CREATE INDEX ix_notes_usn ON notes (usn);
CREATE INDEX ix_cards_usn ON cards (usn);
CREATE INDEX ix_revlog_usn ON revlog (usn);
CREATE INDEX ix_cards_nid ON cards (nid);
CREATE INDEX ix_cards_sched ON cards (did, queue, due);
CREATE INDEX ix_revlog_cid ON revlog (cid);
CREATE INDEX ix_notes_csum ON notes (csum);
";

/// Graves as schema 18 keeps them (schema 11's have no primary key).
pub(crate) const DDL_GRAVES: &str = "
CREATE TABLE graves (
    oid integer NOT NULL, type integer NOT NULL, usn integer NOT NULL,
    PRIMARY KEY (oid, type)
) WITHOUT ROWID;
CREATE INDEX idx_graves_pending ON graves (usn);
";

/// What schema 18 adds to schema 11: the tables that replaced the JSON in
/// `col`, and two indexes.
pub(crate) const DDL_SCHEMA18_ONLY: &str = "
CREATE TABLE notetypes (
    id integer NOT NULL PRIMARY KEY,
    name text NOT NULL COLLATE unicase,
    mtime_secs integer NOT NULL, usn integer NOT NULL, config blob NOT NULL
);
CREATE TABLE fields (
    ntid integer NOT NULL, ord integer NOT NULL,
    name text NOT NULL COLLATE unicase, config blob NOT NULL,
    PRIMARY KEY (ntid, ord)
) WITHOUT ROWID;
CREATE TABLE templates (
    ntid integer NOT NULL, ord integer NOT NULL,
    name text NOT NULL COLLATE unicase,
    mtime_secs integer NOT NULL, usn integer NOT NULL, config blob NOT NULL,
    PRIMARY KEY (ntid, ord)
) WITHOUT ROWID;
CREATE TABLE decks (
    id integer PRIMARY KEY NOT NULL,
    name text NOT NULL COLLATE unicase,
    mtime_secs integer NOT NULL, usn integer NOT NULL,
    common blob NOT NULL, kind blob NOT NULL
);
CREATE TABLE deck_config (
    id integer PRIMARY KEY NOT NULL,
    name text NOT NULL COLLATE unicase,
    mtime_secs integer NOT NULL, usn integer NOT NULL, config blob NOT NULL
);
CREATE TABLE config (
    KEY text NOT NULL PRIMARY KEY,
    usn integer NOT NULL, mtime_secs integer NOT NULL, val blob NOT NULL
) WITHOUT ROWID;
CREATE TABLE tags (
    tag text NOT NULL PRIMARY KEY COLLATE unicase,
    usn integer NOT NULL, collapsed boolean NOT NULL, config blob NULL
) WITHOUT ROWID;

CREATE INDEX idx_notes_mid ON notes (mid);
CREATE INDEX idx_cards_odid ON cards (odid) WHERE odid != 0;
CREATE UNIQUE INDEX idx_notetypes_name ON notetypes (name);
CREATE INDEX idx_notetypes_usn ON notetypes (usn);
CREATE UNIQUE INDEX idx_fields_name_ntid ON fields (name, ntid);
CREATE UNIQUE INDEX idx_templates_name_ntid ON templates (name, ntid);
CREATE INDEX idx_templates_usn ON templates (usn);
CREATE UNIQUE INDEX idx_decks_name ON decks (name);
";

/// Our own small card style for the one notetype a new collection gets.
const BASIC_CSS: &str = ".card {\n  font-family: sans-serif;\n  font-size: 20px;\n  \
                         text-align: center;\n  color: black;\n  background-color: white;\n}\n";
const LATEX_PRE: &str = "\\documentclass[12pt]{article}\n\\special{papersize=3in,5in}\n\
                         \\usepackage[utf8]{inputenc}\n\\usepackage{amssymb,amsmath}\n\
                         \\pagestyle{empty}\n\\setlength{\\parindent}{0in}\n\\begin{document}\n";
const LATEX_POST: &str = "\\end{document}";

/// Fills an empty database with an empty collection: one deck, one preset, one
/// "Basic" notetype, and the config keys a client expects. Like the official
/// server's new accounts, `mod` is 0 so a pristine client sees "no changes".
pub(crate) fn create(conn: &Connection, now_millis: i64) -> rusqlite::Result<()> {
    let now_secs = now_millis / 1000;
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(DDL_SCHEMA11)?;
    tx.execute_batch(DDL_GRAVES)?;
    tx.execute_batch(DDL_SCHEMA18_ONLY)?;
    tx.execute(
        "INSERT INTO col VALUES (1, ?, 0, ?, ?, 0, 0, 0, '', '', '', '', '')",
        params![
            crate::ground::clock::last_day_start(now_secs),
            now_millis,
            SCHEMA_VERSION
        ],
    )?;

    let common = DeckCommon {
        study_collapsed: true,
        browser_collapsed: true,
        ..Default::default()
    };
    let kind = DeckKindContainer {
        kind: Some(DeckKind::Normal(NormalDeck {
            config_id: 1,
            ..Default::default()
        })),
    };
    tx.execute(
        "INSERT INTO decks VALUES (1, 'Default', 0, 0, ?, ?)",
        params![common.encode_to_vec(), kind.encode_to_vec()],
    )?;
    tx.execute(
        "INSERT INTO deck_config VALUES (1, 'Default', 0, 0, ?)",
        params![DeckConfigConfig::defaults().encode_to_vec()],
    )?;

    let notetype_id = now_millis;
    let notetype = NotetypeConfig {
        kind: NOTETYPE_NORMAL,
        css: BASIC_CSS.into(),
        latex_pre: LATEX_PRE.into(),
        latex_post: LATEX_POST.into(),
        reqs: vec![CardRequirement {
            card_ord: 0,
            kind: 1, // any of the listed fields
            field_ords: vec![0],
        }],
        original_stock_kind: 1, // "Basic"
        ..Default::default()
    };
    tx.execute(
        "INSERT INTO notetypes VALUES (?, 'Basic', 0, 0, ?)",
        params![notetype_id, notetype.encode_to_vec()],
    )?;
    for (ord, name) in ["Front", "Back"].into_iter().enumerate() {
        let field = FieldConfig {
            font_name: "Arial".into(),
            font_size: 20,
            id: Some(random_id()),
            ..Default::default()
        };
        tx.execute(
            "INSERT INTO fields VALUES (?, ?, ?, ?)",
            params![notetype_id, ord, name, field.encode_to_vec()],
        )?;
    }
    let template = TemplateConfig {
        q_format: "{{Front}}".into(),
        a_format: "{{FrontSide}}\n\n<hr id=answer>\n\n{{Back}}".into(),
        id: Some(random_id()),
        ..Default::default()
    };
    tx.execute(
        "INSERT INTO templates VALUES (?, 0, 'Card 1', 0, 0, ?)",
        params![notetype_id, template.encode_to_vec()],
    )?;

    let config: &[(&str, String)] = &[
        ("activeDecks", "[1]".into()),
        ("addToCur", "true".into()),
        ("collapseTime", "1200".into()),
        // null, as the official server writes it: the client fills in its own zone
        ("creationOffset", "null".into()),
        ("curDeck", "1".into()),
        ("curModel", notetype_id.to_string()),
        ("dayLearnFirst", "false".into()),
        ("dueCounts", "true".into()),
        ("estTimes", "true".into()),
        ("newSpread", "0".into()),
        ("nextPos", "1".into()),
        ("sched2021", "true".into()),
        ("schedVer", "2".into()),
        ("sortBackwards", "false".into()),
        ("sortType", "\"noteFld\"".into()),
        ("timeLim", "0".into()),
    ];
    for (key, json) in config {
        tx.execute(
            "INSERT INTO config VALUES (?, 0, 0, ?)",
            params![key, json.as_bytes()],
        )?;
    }
    tx.commit()
}

/// A random positive i64 for field and template ids, without a `rand` crate:
/// std's hasher keys are seeded from the OS.
fn random_id() -> i64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::ground::clock::now_millis() as u64);
    (h.finish() >> 1) as i64
}
