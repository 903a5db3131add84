//! The health dashboard: `GET /` and `GET /ui/...` serve one page, its script and its
//! style, embedded in the binary (no CDN, no build step). The page signs in with a
//! `monitor` or tenant `admin` token, keeps it in the tab's `sessionStorage` and sends
//! it as a bearer header to `/v1/health`, `/v1/alerts`, `/v1/integrations/...` and
//! `/v1/deployments`; the server side holds no session.
//!
//! Every answer carries a Content-Security-Policy that allows scripts, styles and
//! requests from this origin only, no inline script or style, and no framing; the
//! script builds the page with DOM text nodes, never HTML strings.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::Digest;

/// What the browser may do with the page: this origin's script, style, icon and API,
/// nothing else (sparklines are inline SVG the script builds).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("assets/index.html"),
};

const ASSETS: [Asset; 3] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/icon.svg"),
    },
];

/// The bytes a first visit downloads: the page, its script, style and icon.
#[cfg(test)]
fn page_weight() -> usize {
    INDEX.body.len() + ASSETS.iter().map(|a| a.body.len()).sum::<usize>()
}

/// `GET /` and `GET /ui/...`: the page (the script reads the path and shows the view).
pub async fn page(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /ui/assets/{name}`.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &headers),
        None => super::json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!(
                "the dashboard has no asset `{}`",
                super::printable(&name, 64)
            ),
        ),
    }
}

/// Each asset's ETag, by position (the page last), hashed once.
static ETAGS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    ASSETS
        .iter()
        .chain(std::iter::once(&INDEX))
        .map(|asset| {
            format!(
                "\"{}\"",
                &hex::encode(sha2::Sha256::digest(asset.body))[..16]
            )
        })
        .collect()
});

fn etag_of(asset: &Asset) -> &'static str {
    let at = ASSETS
        .iter()
        .position(|a| a.name == asset.name)
        .unwrap_or(ASSETS.len());
    ETAGS.get(at).map_or("", String::as_str)
}

/// The asset with its security headers, or 304 when the browser has this version.
fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = etag_of(asset);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let set = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Revalidated on every load (cheap: a 304), so an upgraded daemon's page is
        // never mixed with an old script.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        set.insert(name, HeaderValue::from_static(value));
    }
    set.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    set.insert(header::ETAG, HeaderValue::from_static(etag));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_no_inline_script_or_style_and_stays_small() {
        let html = std::str::from_utf8(INDEX.body).expect("utf-8");
        for forbidden in [
            "<style",
            " style=",
            "onclick",
            "onload",
            "javascript:",
            "http://",
            "https://",
        ] {
            assert!(!html.contains(forbidden), "index.html contains {forbidden}");
        }
        // Every <script> names a source of this origin and has no body.
        for script in html.split("<script").skip(1) {
            assert!(
                script.trim_start().starts_with("src=\"/ui/assets/"),
                "{script}"
            );
            assert!(script.contains("></script>"), "{script}");
        }
        let script = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!script.contains(forbidden), "app.js uses {forbidden}");
        }
        assert!(page_weight() < 200 * 1024, "{} bytes", page_weight());
    }
}
