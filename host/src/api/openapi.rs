//! The OpenAPI document ([`ApiDoc`]), generated from the routes' annotations and served at
//! `/openapi.json`.

use super::error::{ErrorBody, ErrorDetail};
use super::routes::{connectors, flows, installs, instances, ops, tokens};

/// The OpenAPI document of this API, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Gantry", description = "A WebAssembly host for integration connectors"),
    paths(
        ops::readyz, ops::metrics, connectors::publish, connectors::delete_version, connectors::set_state,
        connectors::marketplace, connectors::versions, installs::install, installs::installs,
        installs::get_install, installs::customise, installs::grant_outbound, installs::update,
        installs::rebind_install, instances::create_instance, instances::instances,
        instances::get_instance, instances::invoke, flows::create_flow, flows::flows,
        flows::get_flow, flows::run_flow, flows::runs, flows::rebind_step, ops::audit_log,
        tokens::create_org, tokens::orgs, tokens::mint_org_token, tokens::create_token,
        tokens::tokens, tokens::revoke_token, ops::backup
    ),
    components(schemas(ErrorBody, ErrorDetail, crate::model::Description, crate::model::Summary)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
