//! `GET /v1/namespaces`: the folders the caller belongs to.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use driftless_protocol::NamespaceId;
use driftless_store::meta::accounts;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::AppState;

/// One folder as the caller sees it.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct NamespaceView {
    /// Id.
    pub id: NamespaceId,
    /// Name.
    pub name: String,
    /// The caller's home folder?
    pub home: bool,
    /// `owner`, `editor` or `viewer`.
    pub role: String,
}

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/namespaces", get(list))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<NamespaceView>>> {
    let all = accounts::namespaces_of(&state.db, caller.user).await?;
    Ok(axum::Json(
        all.into_iter()
            .map(|n| NamespaceView {
                id: n.id,
                name: n.name,
                home: n.is_home,
                role: n.role.as_str().into(),
            })
            .collect(),
    ))
}
