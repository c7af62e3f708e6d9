//! The OpenAPI document of the HTTP API, generated from the handlers: each
//! route is registered through `utoipa_axum::routes!`, which takes its path
//! and method from the handler's `#[utoipa::path]`, so the router and the
//! document cannot disagree. Served at `GET /openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's fixed part; [`crate::app`] adds every route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "driftless",
        description = "File sync: upload sessions with presigned multipart uploads and \
                       trust-but-verify commits, downloads, history, and a change feed with \
                       long-polling. Errors are RFC 9457 problem documents with a stable `code`; \
                       429 and 503 answers carry `Retry-After`."
    ),
    modifiers(&DeviceToken),
    tags(
        (name = "accounts", description = "Signing devices in"),
        (name = "folders", description = "Folders (namespaces) and sharing"),
        (name = "uploads", description = "Upload sessions and commits"),
        (name = "files", description = "Downloads, history and restore"),
        (name = "changes", description = "The change feed and long-polling"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// Device tokens are bearer tokens.
struct DeviceToken;

impl Modify for DeviceToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
            "device_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A device token from `POST /v1/login` or `driftless-server create-user`",
                    ))
                    .build(),
            ),
        );
    }
}
