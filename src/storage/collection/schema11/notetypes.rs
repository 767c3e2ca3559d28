//! Notetypes: schema-11 JSON (fields and templates inline) to and from a
//! `notetypes` row, whose fields and templates are rows of their own.

use serde_json::{json, Value};

use super::{boolean, int, merge_others, opt_json, others, req_int, req_string, string};
use crate::storage::collection::proto::*;

pub(crate) struct NotetypeRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) mtime: i64,
    pub(crate) config: NotetypeConfig,
    pub(crate) fields: Vec<(String, FieldConfig)>,
    pub(crate) templates: Vec<(String, TemplateConfig)>,
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

pub(crate) fn notetype_from_json(v: &Value) -> Result<NotetypeRow, String> {
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

pub(crate) fn notetype_to_json(row: &NotetypeRow, usn: i32) -> Value {
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
