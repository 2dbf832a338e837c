//! The browse page at the gateway root: the catalogue as HTML, rendered
//! here (no script, no external asset): a search form (text, bbox, time
//! range) answered by the same search as `/stac/search`, and each item
//! with its quick-look, variables, extents, versions, publisher and how
//! many copies the swarm holds. Everything a publisher wrote is escaped.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use shoal_node::catalogue::{Item, SearchQuery};

use crate::stac::{pairs, seg};
use crate::Gw;

/// Items a page shows.
const PAGE: usize = 50;

/// `s` escaped for HTML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1d2a33;background:#f4f6f8}\
header{background:#12324a;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}\
form{display:flex;gap:8px;flex-wrap:wrap;padding:14px 24px;background:#fff;border-bottom:1px solid #d8dee4}\
input{padding:6px 8px;border:1px solid #b8c2cc;border-radius:4px}input[name=q]{flex:1;min-width:240px}\
button{padding:6px 14px;background:#1f6f9f;color:#fff;border:0;border-radius:4px}\
main{padding:14px 24px}.count{color:#52606d}.item{display:flex;gap:16px;background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:12px;margin:10px 0}\
.item img{width:160px;height:auto;align-self:flex-start;background:#e4e7eb;border-radius:4px;image-rendering:pixelated}\
.item h2{margin:0 0 4px;font-size:17px}.meta{color:#52606d;font-size:13px}table{border-collapse:collapse;font-size:13px;margin-top:6px}\
td,th{padding:2px 8px 2px 0;text-align:left}code{font-size:12px;background:#eef1f4;padding:1px 4px;border-radius:3px}a{color:#1f6f9f}";

fn card(out: &mut String, it: &Item, versions: usize, copies: Option<usize>) {
    let s = &it.summary;
    let root = it.root.to_string();
    let item_url = format!("/stac/collections/{}/items/{}", seg(&it.collection()), seg(&it.id()));
    let _ = write!(out, "<article class=\"item\" data-name=\"{}\">", esc(&it.name));
    if s.thumbnail.is_empty() {
        out.push_str("<div style=\"width:160px\"></div>");
    } else {
        let _ = write!(
            out,
            "<img src=\"/stac/thumbnails/{root}.png\" alt=\"quick-look of {}\" loading=\"lazy\">",
            esc(&s.thumbnail)
        );
    }
    out.push_str("<div>");
    let _ = write!(
        out,
        "<h2><a href=\"{item_url}\">{}</a></h2><div class=\"meta\">{} &middot; version {} &middot; {} &middot; {} keys",
        esc(&s.title),
        esc(&it.name),
        it.seq,
        shoal_core::text::human_size(s.size),
        s.keys
    );
    if !s.institution.is_empty() {
        let _ = write!(out, " &middot; {}", esc(&s.institution));
    }
    out.push_str("</div>");
    if !s.description.is_empty() {
        let _ = write!(out, "<p>{}</p>", esc(&s.description));
    }
    let mut facts = Vec::new();
    if let Some((a, b)) = &s.time {
        facts.push(format!(
            "time {} to {}{}",
            esc(a),
            esc(b),
            if s.calendar.is_empty() || s.calendar == "standard" || s.calendar == "proleptic_gregorian" {
                String::new()
            } else {
                format!(" ({})", esc(&s.calendar))
            }
        ));
    }
    if let Some([w, so, e, n]) = s.bbox {
        facts.push(format!("bbox {w:.2}, {so:.2}, {e:.2}, {n:.2}"));
    }
    facts.push(format!(
        "{versions} version{} kept",
        if versions == 1 { "" } else { "s" }
    ));
    facts.push(match copies {
        Some(n) => format!(
            "<span class=\"copies\">{n} cop{} in the swarm</span>",
            if n == 1 { "y" } else { "ies" }
        ),
        None => "<span class=\"copies\">copies: counting</span>".into(),
    });
    let _ = write!(out, "<div class=\"meta\">{}</div>", facts.join(" &middot; "));
    out.push_str("<table><tr><th>variable</th><th>dimensions</th><th>type</th><th>units</th><th>long name</th></tr>");
    for v in s.variables.iter().filter(|v| !v.coord) {
        let dims: Vec<String> = v
            .dims
            .iter()
            .zip(&v.shape)
            .map(|(d, n)| format!("{}: {n}", esc(d)))
            .collect();
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&v.name),
            dims.join(", "),
            esc(&v.dtype),
            esc(&v.units),
            esc(&v.long_name)
        );
    }
    out.push_str("</table>");
    let _ = write!(
        out,
        "<div class=\"meta\">publisher <code>{}</code> &middot; <a href=\"/zarr/{root}/\">Zarr</a> (<code>xarray.open_zarr(\"/zarr/{root}\")</code>) &middot; <code>shoal://{root}</code>",
        esc(&it.publisher)
    );
    if let Some(v) = s.view {
        let _ = write!(out, " &middot; <a href=\"/ipfs/{v}/\">ipfs://{v}</a>");
    }
    let _ = write!(out, " &middot; <a href=\"{item_url}\">STAC item</a></div>");
    out.push_str("</div></article>");
}

pub(crate) async fn page(State(gw): State<Arc<Gw>>, RawQuery(query): RawQuery, _headers: HeaderMap) -> Response {
    let params = pairs(query.as_deref());
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (text, bbox, from, to) = (get("q"), get("bbox"), get("from"), get("to"));
    let mut error = None;
    let mut q = SearchQuery {
        text: text.clone(),
        start: from.clone(),
        end: to.clone(),
        limit: PAGE,
        ..SearchQuery::default()
    };
    if let Some(b) = &bbox {
        let nums: Result<Vec<f64>, _> = b.split(',').map(|x| x.trim().parse::<f64>()).collect();
        match nums.as_deref() {
            Ok([w, s, e, n]) => q.bbox = Some([*w, *s, *e, *n]),
            _ => error = Some(format!("bbox {b:?}: expected west,south,east,north")),
        }
    }
    let cat = gw.node.catalogue();
    let found = match error {
        Some(_) => None,
        None => match cat.search(q) {
            Ok(f) => Some(f),
            Err(e) => {
                error = Some(e.to_string());
                None
            }
        },
    };
    let mut out = String::with_capacity(16 << 10);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>shoal catalogue</title><style>{STYLE}</style></head><body>\
<header><h1>shoal catalogue</h1><div>datasets the swarm publishes &middot; <a style=\"color:#cde\" href=\"/stac/\">STAC API</a></div></header>\
<form method=\"get\" action=\"/\" role=\"search\"><input name=\"q\" placeholder=\"search titles and variables (e.g. sea surface temperature)\" value=\"{}\">\
<input name=\"bbox\" placeholder=\"west,south,east,north\" value=\"{}\"><input name=\"from\" type=\"date\" value=\"{}\"><input name=\"to\" type=\"date\" value=\"{}\">\
<button type=\"submit\">Search</button></form><main>",
        esc(text.as_deref().unwrap_or("")),
        esc(bbox.as_deref().unwrap_or("")),
        esc(from.as_deref().unwrap_or("")),
        esc(to.as_deref().unwrap_or(""))
    );
    match (found, error) {
        (_, Some(e)) => {
            let _ = write!(out, "<p class=\"error\">{}</p>", esc(&e));
        }
        (Some(f), None) => {
            let _ = write!(
                out,
                "<p class=\"count\" id=\"count\">{} dataset{} found{}</p>",
                f.matched,
                if f.matched == 1 { "" } else { "s" },
                if f.matched > f.items.len() {
                    format!(" (the first {} shown)", f.items.len())
                } else {
                    String::new()
                }
            );
            let roots: Vec<_> = f.items.iter().map(|i| i.root).collect();
            let copies = cat.copies(&roots);
            for (it, c) in f.items.iter().zip(copies) {
                let versions = cat.collection(&it.collection()).len().max(1);
                card(&mut out, it, versions, c);
            }
        }
        (None, None) => {}
    }
    out.push_str("</main></body></html>");
    gw.metrics.request("browse", 200);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'",
            ),
        ],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_is_escaped() {
        assert_eq!(
            super::esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
