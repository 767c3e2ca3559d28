//! The welcome page: what a browser gets at the server's address
//! (`http://leitner.local:8080/`, or a proxy's `https://example.org/anki/`).
//! It shows the sync address as the browser reached it, a QR code of it,
//! how to set up each Anki client and what their error messages mean, and
//! the state of the server, never anything of a user. One small HTML page
//! built into the binary, in the browser's language (`text`); it works
//! without JavaScript (a few lines only add a copy button).

mod html;
mod text;

use std::sync::{Arc, OnceLock};

use http_types::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::http::forwarded;
use crate::service::Service;
use html::{block, escape, inline, qr_svg};
use text::Texts;

/// Disk space under which the page says "nearly full": below this, or
/// below 5% of the disk.
const LOW_SPACE: u64 = 512 << 20;

/// Shows the copy button where the browser can copy (the Clipboard API
/// needs https or localhost; older browsers copy a selection).
const SCRIPT: &str = "(function(){var b=document.getElementById('copy'),a=document.getElementById('address');\
var api=navigator.clipboard&&window.isSecureContext;\
if(!b||!a||!(api||(document.queryCommandSupported&&document.queryCommandSupported('copy'))))return;\
b.hidden=false;b.onclick=function(){var done=function(){b.textContent=b.getAttribute('data-done')};\
if(api){navigator.clipboard.writeText(a.value).then(done)}else{a.select();if(document.execCommand('copy'))done()}}})();";

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1d1d1f;--bg:#fff;--muted:#5f6368;--box:#f3f4f6;--ok:#1e7e34;--warn:#b45309}\
@media(prefers-color-scheme:dark){:root{--fg:#e8eaed;--bg:#161718;--muted:#a0a4a8;--box:#26282b;--ok:#6fcf86;--warn:#f5b85c}}\
*{box-sizing:border-box}\
body{margin:0;font:16px/1.55 system-ui,-apple-system,'Segoe UI','Hiragino Sans','Noto Sans JP',Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
main{max-width:46rem;margin:0 auto;padding:1rem 1.1rem 2rem}\
h1{font-size:1.6rem;margin:.4rem 0}h2{font-size:1.2rem;margin:1.8rem 0 .4rem}\
nav{font-size:.9rem;text-align:right}nav a{margin-left:.7rem;color:var(--muted)}nav a[aria-current]{color:var(--fg);font-weight:600;text-decoration:none}\
.address{background:var(--box);border-radius:.6rem;padding:.9rem;margin:1rem 0;display:flex;gap:1rem;align-items:center;flex-wrap:wrap}\
.address label{font-weight:600;display:block;margin-bottom:.3rem}\
.address .field{flex:1 1 18rem;min-width:0}\
.row{display:flex;gap:.5rem}\
input{flex:1;min-width:0;font:1.05rem ui-monospace,Menlo,Consolas,monospace;padding:.45rem .5rem;border:1px solid var(--muted);border-radius:.35rem;background:var(--bg);color:var(--fg)}\
button{font:inherit;padding:.45rem .9rem;border-radius:.35rem;border:1px solid var(--muted);background:var(--bg);color:var(--fg);cursor:pointer}\
.note{font-size:.9rem;color:var(--muted);margin:.4rem 0 0}\
figure{margin:0;text-align:center;width:9.5rem}.qr{width:9.5rem;height:9.5rem;display:block}\
figcaption{font-size:.8rem;color:var(--muted)}\
@media(max-width:36rem){figure{display:none}.row{flex-direction:column}input{font-size:1rem}table,tr,th,td{display:block}th{padding:.5rem 0 0}td{padding:0}}\
code{font-family:ui-monospace,Menlo,Consolas,monospace;background:var(--box);padding:0 .25rem;border-radius:.25rem;overflow-wrap:anywhere}\
ol,ul{padding-left:1.4rem}li{margin:.3rem 0}\
details{margin:.6rem 0}summary{cursor:pointer;font-weight:600}\
table{border-collapse:collapse}td,th{text-align:left;vertical-align:top;padding:.25rem .8rem .25rem 0}th{font-weight:600;white-space:nowrap}\
.ok{color:var(--ok)}.warn{color:var(--warn)}\
footer{margin-top:2rem;font-size:.85rem;color:var(--muted)}";

/// The page for `req`. `proxied`: the request came through a trusted proxy,
/// whose `X-Forwarded-*` headers tell the address the browser used.
pub(crate) async fn page(service: &Arc<Service>, req: &Request, proxied: bool) -> Response {
    let origin = forwarded::origin(req, proxied);
    let address = page_address(&origin, req.url().path(), service);
    let query_lang = req
        .url()
        .query_pairs()
        .find(|(key, _)| key == "lang")
        .map(|(_, value)| value.into_owned());
    let accept = req.header("accept-language").map(|values| {
        values
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(",")
    });
    let texts = text::choose(query_lang.as_deref(), accept.as_deref());
    let base = service.config.base.clone();
    let space = crate::ground::pool::blocking(move || crate::ground::durable::space(&base)).await;
    let state = State {
        clock_set: !crate::ground::clock::is_unset(crate::ground::clock::now_secs()),
        space_low: space.is_some_and(|(free, total)| free < LOW_SPACE || free < total / 20),
        https: origin.https,
    };
    let body = render(texts, &address, &state);
    let mut res = Response::new(StatusCode::Ok);
    res.insert_header("content-type", "text/html; charset=utf-8");
    // The state changes, and a proxy must not hand one language to all.
    res.insert_header("cache-control", "no-store");
    res.insert_header("vary", "accept-language");
    res.insert_header("content-security-policy", policy());
    res.insert_header("x-content-type-options", "nosniff");
    res.insert_header("referrer-policy", "no-referrer");
    res.set_body(body);
    res
}

/// What the page says of the server: nothing of any user.
struct State {
    clock_set: bool,
    space_low: bool,
    https: bool,
}

/// The address the browser used for this page, which is also the sync
/// address: a client appends `sync/...` and `msync/...` to it.
fn page_address(origin: &forwarded::Origin, path: &str, service: &Service) -> String {
    let scheme = if origin.https { "https" } else { "http" };
    let host = origin.host.clone().unwrap_or_else(|| {
        // An HTTP/1.0 browser that sent no Host: this box's name on the LAN.
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|n| n.trim().to_owned())
            .unwrap_or_else(|_| "leitner".into());
        format!("{name}.local:{}", service.config.port)
    });
    let path = if forwarded::is_path(path) { path } else { "/" };
    format!("{scheme}://{host}{}{path}", origin.prefix)
}

/// Allows the page's own inline style and script, and nothing else.
fn policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        use base64ct::{Base64, Encoding};
        let hash = |text: &str| Base64::encode_string(&Sha256::digest(text.as_bytes()));
        format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(STYLE),
            hash(SCRIPT)
        )
    })
}

fn render(t: &Texts, address: &str, state: &State) -> String {
    let media = format!("{address}msync/");
    let vars = [("address", address), ("media", media.as_str())];
    let get = |name: &str| inline(t.get(name), &vars);
    let steps = |name: &str| block(t.get(name), &vars, true);
    let mut page = String::with_capacity(16 << 10);
    page.push_str(&format!(
        "<!doctype html><html lang={lang}><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <meta name=robots content=noindex><title>{title}</title><style>{STYLE}</style></head><body><main>",
        lang = t.lang,
        title = get("title"),
    ));
    // Every language, in its own name.
    page.push_str("<nav>");
    for other in text::all() {
        let current = if other.lang == t.lang {
            " aria-current=page"
        } else {
            ""
        };
        page.push_str(&format!(
            "<a href=\"?lang={0}\" hreflang={0} lang={0}{current}>{1}</a>",
            other.lang,
            inline(other.get("language"), &[])
        ));
    }
    page.push_str("</nav>");
    page.push_str(&format!(
        "<h1>{}</h1>{}",
        get("title"),
        block(t.get("intro"), &vars, false)
    ));
    page.push_str(&format!(
        "<div class=address><div class=field><label for=address>{label}</label>\
         <div class=row><input id=address readonly value=\"{value}\" spellcheck=false>\
         <button id=copy type=button hidden data-done=\"{done}\">{copy}</button></div>\
         <p class=note>{note}</p></div><figure>{qr}<figcaption>{caption}</figcaption></figure></div>",
        label = get("address"),
        value = escape(address),
        done = escape(t.get("copied")),
        copy = get("copy"),
        note = get("address.note"),
        qr = qr_svg(address, t.get("qr")),
        caption = get("qr"),
    ));
    for (title, body) in [
        ("desktop", "desktop.steps"),
        ("ankidroid", "ankidroid.steps"),
    ] {
        page.push_str(&format!("<h2>{}</h2>{}", get(title), steps(body)));
        if title == "desktop" {
            page.push_str(&block(t.get("desktop.old"), &vars, false));
        }
    }
    page.push_str(&format!(
        "<details><summary>{}</summary>{}</details>",
        get("ankidroid.old"),
        steps("ankidroid.old.steps")
    ));
    page.push_str(&format!(
        "<h2>{}</h2>{}",
        get("ankimobile"),
        steps("ankimobile.steps")
    ));
    page.push_str(&format!(
        "<h2>{}</h2>{}",
        get("errors"),
        block(t.get("errors.list"), &vars, false)
    ));
    let (clock_class, clock) = if state.clock_set {
        ("ok", get("state.clock.ok"))
    } else {
        ("warn", get("state.clock.unset"))
    };
    let (disk_class, disk) = if state.space_low {
        ("warn", get("state.disk.low"))
    } else {
        ("ok", get("state.disk.ok"))
    };
    let (reach_class, reach) = if state.https {
        ("ok", get("state.reach.https"))
    } else {
        ("warn", get("state.reach.http"))
    };
    page.push_str(&format!(
        "<h2>{}</h2><table>\
         <tr><th>{}</th><td>{}</td></tr>\
         <tr><th>{}</th><td class={clock_class}>{clock}</td></tr>\
         <tr><th>{}</th><td class={disk_class}>{disk}</td></tr>\
         <tr><th>{}</th><td class={reach_class}>{reach}</td></tr></table>",
        get("state"),
        get("state.version"),
        env!("CARGO_PKG_VERSION"),
        get("state.clock"),
        get("state.disk"),
        get("state.reach"),
    ));
    page.push_str(&format!(
        "<footer>{}</footer></main><script>{SCRIPT}</script></body></html>",
        get("footer")
    ));
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            clock_set: true,
            space_low: false,
            https: false,
        }
    }

    #[test]
    fn every_language_renders_a_whole_page_with_the_address() {
        for t in text::all() {
            let page = render(t, "http://leitner.local:8080/", &state());
            assert!(page.starts_with(&format!("<!doctype html><html lang={}>", t.lang)));
            assert!(page.ends_with("</html>"));
            assert!(page.contains("value=\"http://leitner.local:8080/\""));
            assert!(page.contains("<code>http://leitner.local:8080/msync/</code>"));
            assert!(page.contains("<svg class=qr"));
            for left in ["{address}", "{media}", "**", "`"] {
                assert!(!page.contains(left), "{left} left in {}", t.lang);
            }
        }
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let p = policy();
        assert!(p.starts_with("default-src 'none'; style-src 'sha256-"));
        assert_eq!(p.matches("sha256-").count(), 2);
        // The page holds them as they were hashed.
        let page = render(&text::all()[0], "http://x/", &state());
        assert!(page.contains(&format!("<style>{STYLE}</style>")));
        assert!(page.contains(&format!("<script>{SCRIPT}</script>")));
    }
}
