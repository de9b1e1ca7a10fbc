//! The OpenAPI document ([`ApiDoc`]), generated from the routes' annotations and served at
//! `/openapi.json`.

use super::error::{ErrorBody, ErrorDetail};
use super::routes::{connectors, flows, installs, instances, ops, tokens};

/// The OpenAPI document of this API, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Gantry", description = "A WebAssembly host for integration connectors"),
    paths(
        ops::readyz, ops::metrics, connectors::publish, connectors::publish_as_described, connectors::delete_version, connectors::set_state,
        connectors::marketplace, connectors::versions, installs::install, installs::installs,
        installs::get_install, installs::customise, installs::grant_outbound, installs::update, installs::update_plan, installs::usage, connectors::usage,
        installs::rebind_install, instances::create_instance, instances::instances,
        instances::get_instance, instances::rotate_secrets, instances::invoke, flows::create_flow, flows::flows,
        flows::get_flow, flows::run_flow, flows::runs, flows::rebind_step, flows::set_record, flows::recordings, flows::replay, flows::start_canary, flows::canary, flows::promote_canary, flows::roll_back_canary, ops::audit_log,
        tokens::create_org, tokens::orgs, tokens::mint_org_token, tokens::create_token,
        tokens::tokens, tokens::revoke_token, ops::backup
    ),
    components(schemas(ErrorBody, ErrorDetail, super::wire::PublishEvent, crate::model::Description, crate::model::Summary)),
    modifiers(&BearerAuth, &CommonResponses)
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

/// The answers every route of a kind can give, added where a route's own annotation does not
/// name them: a path with parameters answers 404 (missing, or another organisation's) and 400
/// (a parameter that does not parse); a query string, 400; a body, 404 (it names something
/// missing), 413 (too large), 415 (another content type) and 422 (the wrong shape), and a JSON
/// body 400 (not JSON).
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let mut add = Vec::new();
                let parameters = operation.parameters.as_deref().unwrap_or_default();
                if path.contains('{') {
                    add.push(("404", "Not found (or another organisation's)"));
                    add.push(("400", "A path parameter that does not parse"));
                }
                if parameters
                    .iter()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Query))
                {
                    add.push(("400", "A query string that does not parse"));
                    add.push((
                        "422",
                        "A query value that breaks a rule (`after` not an id)",
                    ));
                }
                if let Some(body) = &operation.request_body {
                    if body.content.contains_key("application/json") {
                        add.push(("400", "The body is not JSON"));
                    }
                    add.push(("404", "Something the body names does not exist"));
                    add.push(("413", "The body is too large"));
                    add.push(("415", "The body is not of the content type the route takes"));
                    add.push(("422", "The body is of the wrong shape, or breaks a rule"));
                }
                for (status, description) in add {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description));
                }
            }
        }
    }
}
