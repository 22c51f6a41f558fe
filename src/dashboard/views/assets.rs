//! Static files of the dashboard, compiled into the binary: the dashboard
//! must work on a council network with no route to the internet (no CDN).

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/app.css"),
    },
    Asset {
        name: "common.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/common.js"),
    },
    Asset {
        name: "board.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/board.js"),
    },
    Asset {
        name: "call.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/call.js"),
    },
];

/// A short content hash (FNV-1a), so a browser revalidates cheaply with
/// `If-None-Match` and picks up a new engine's files at once.
fn etag(body: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

pub(super) async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == file) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let tag = etag(asset.body);
    let cache = [
        (
            header::CACHE_CONTROL,
            "public, max-age=300, must-revalidate",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let tag = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\""));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, cache, [(header::ETAG, tag)]).into_response();
    }
    (
        cache,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, tag),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_with_content() {
        assert_ne!(etag("a"), etag("b"));
        assert_eq!(etag("a"), etag("a"));
    }

    #[tokio::test]
    async fn known_assets_have_their_type_and_unknown_are_404() {
        let css = serve(Path("app.css".into()), HeaderMap::new()).await;
        assert_eq!(css.status(), StatusCode::OK);
        assert_eq!(
            css.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        let js = serve(Path("call.js".into()), HeaderMap::new()).await;
        assert!(
            js.headers()[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|t| t.starts_with("text/javascript"))
        );
        let tag = css.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        let cached = serve(Path("app.css".into()), again).await;
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        let missing = serve(Path("../Cargo.toml".into()), HeaderMap::new()).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}
