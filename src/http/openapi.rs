//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, generated from the
//! handlers' `#[utoipa::path]` annotations and the types they take and return.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{ask, manuals, turns};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fieldvox",
        description = "Voice notes, manuals, ingest jobs and search of a fieldvox server. Live voice \
                       sessions use the realtime WebSocket at /v1/realtime (see the README's protocol \
                       section)."
    ),
    paths(
        ask::ask,
        manuals::upload,
        manuals::list,
        manuals::show,
        manuals::page,
        manuals::delete,
        manuals::job,
        manuals::job_events,
        manuals::equipment,
        manuals::search,
        turns::list,
        turns::usage,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "voice", description = "A recorded question, answered as a live turn would be"),
        (name = "manuals", description = "Admins upload and manage their company's manuals; technicians read them"),
        (name = "jobs", description = "Progress of an upload's ingest"),
        (name = "search", description = "The passages a voice turn would use, for text clients and debugging"),
        (name = "turns", description = "Admins review their company's turns and usage"),
    )
)]
pub struct ApiDoc;

/// Every route takes a bearer token (`fieldvox token`, or the company's identity provider).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

pub async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    Json(DOC.get_or_init(ApiDoc::openapi))
}
