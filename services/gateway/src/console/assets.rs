//! The console's static files, embedded in the binary and served under a name
//! that carries their content hash, so they can be cached for good and a new
//! release is never mixed with an old file. Nothing comes from a CDN.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    /// `/konsol/assets/<stem>.<hash>.<ext>`
    pub path: String,
    media: &'static str,
    bytes: &'static [u8],
}

impl Asset {
    fn new(stem: &str, ext: &str, media: &'static str, bytes: &'static [u8]) -> Asset {
        let digest = Sha256::digest(bytes);
        let hash = hex::encode(digest.get(..8).unwrap_or_default());
        Asset {
            path: format!("/konsol/assets/{stem}.{hash}.{ext}"),
            media,
            bytes,
        }
    }
}

/// The style sheet (theme tokens at its top).
pub static CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console.css"),
    )
});

/// htmx 2.0.4, unchanged from its release (BSD Zero Clause licence).
pub static HTMX: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "htmx-2.0.4",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/htmx-2.0.4.min.js"),
    )
});

/// htmx's server-sent-events extension 2.2.2, unchanged (BSD Zero Clause).
pub static HTMX_SSE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "htmx-ext-sse-2.2.2",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/htmx-ext-sse-2.2.2.js"),
    )
});

/// The console's own few lines: copy buttons.
pub static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console.js"),
    )
});

/// `GET /konsol/assets/{name}`
pub async fn serve(Path(name): Path<String>) -> Response {
    let wanted = format!("/konsol/assets/{name}");
    for asset in [&*CSS, &*HTMX, &*HTMX_SSE, &*SCRIPT] {
        if asset.path == wanted {
            return (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(asset.media)),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=31536000, immutable"),
                    ),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                ],
                asset.bytes,
            )
                .into_response();
        }
    }
    (StatusCode::NOT_FOUND, "no such file").into_response()
}
