//! The web console over a real server: sessions, CSRF and roles with a plain HTTP client here;
//! both seed stories clicked through in a real headless Chromium in `browser`.

mod browser;

use crate::support::{Server, connector, runtime};
use gantry_host::ApiConfig;
use gantry_host::model::Role;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

/// A browser-like client of the console: the session cookie it holds, no redirects followed.
pub struct Console {
    base: String,
    client: reqwest::Client,
    pub cookie: String,
}

/// The value of `name="FIELD" value="…"` in a page.
pub fn field(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

/// The value of cookie `name` a response sets.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

impl Console {
    /// Sign in to `server`'s console with API token `token`.
    pub async fn sign_in(server: &Server, token: &str) -> Console {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = format!("http://{}", server.addr);
        let form = client.get(format!("{base}/sign-in")).send().await.unwrap();
        let pre = set_cookie(&form, "gantry_sign_in").unwrap();
        let pre = pre.split(';').next().unwrap().to_string();
        let html = form.text().await.unwrap();
        let form_token = field(&html, "form").unwrap();
        let response = client
            .post(format!("{base}/sign-in"))
            .header(COOKIE, &pre)
            .form(&[("form", form_token.as_str()), ("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let set = set_cookie(&response, "gantry_session").expect("a session cookie");
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
            assert!(set.contains(flag), "{flag} in {set}");
        }
        assert!(
            !set.contains("Secure"),
            "plain HTTP: a Secure cookie would never come back"
        );
        Console {
            base,
            client,
            cookie: set.split(';').next().unwrap().to_string(),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Post `fields` to `path`: the status and where it sends the browser (or the page).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(fields)
            .send()
            .await
            .unwrap();
        let status = response.status();
        match response.headers().get(LOCATION) {
            Some(to) => (status, to.to_str().unwrap().to_string()),
            None => (status, response.text().await.unwrap()),
        }
    }

    /// The CSRF token of this session, as its pages carry it.
    pub async fn csrf(&self) -> String {
        field(&self.get("/connectors").await.1, "csrf").unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_a_hashed_cookie_that_ends_at_sign_out_or_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let admin = server.token("acme", Role::Admin);
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Without a session every page sends the browser to sign in.
    for path in ["/connectors", "/marketplace", "/flows", "/audit"] {
        let response = plain
            .get(format!("http://{}{path}", server.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[LOCATION], "/sign-in");
    }
    // A forged sign-in (no form token of its own) and a wrong token are refused.
    let forged = plain
        .post(format!("http://{}/sign-in", server.addr))
        .form(&[("token", admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&forged, "gantry_session").is_none());

    let console = Console::sign_in(&server, &admin).await;
    let (status, html) = console.get("/connectors").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("acme · admin"), "{html}");
    // The store keeps only a hash of the cookie.
    let value = console.cookie.split_once('=').unwrap().1.to_string();
    let stored: String = ["gantry.db", "gantry.db-wal"]
        .iter()
        .map(|f| {
            String::from_utf8_lossy(&std::fs::read(dir.path().join(f)).unwrap_or_default())
                .into_owned()
        })
        .collect();
    let hashed = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(value.as_bytes()));
    assert!(
        stored.contains(&hashed),
        "the session is stored, by its hash"
    );
    assert!(
        !stored.contains(&value),
        "the cookie itself is never stored"
    );
    // Signing out ends the session for good, even with the old cookie.
    let csrf = console.csrf().await;
    let (status, to) = console.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!((status, to.as_str()), (StatusCode::SEE_OTHER, "/sign-in"));
    let (status, _) = console.get("/connectors").await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Revoking the token ends every session opened with it.
    let console = Console::sign_in(&server, &admin).await;
    let token_id = server
        .registry
        .authenticate(&admin)
        .unwrap()
        .unwrap()
        .token_id;
    server
        .registry
        .revoke_token(Some("acme"), "test", token_id)
        .unwrap();
    let (status, _) = console.get("/connectors").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_form_token_and_a_viewers_forged_post_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let admin = server.token("acme", Role::Admin);
    let viewer = server
        .registry
        .create_token("acme", "test", Role::Viewer, "viewer", None)
        .unwrap()
        .1;
    let (status, body) = server
        .publish(&admin, "echo", "1.0.0", "", connector("echo"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let console = Console::sign_in(&server, &admin).await;
    // The admin's pages offer publishing; a post without the session's form token is refused
    // and changes nothing.
    let (_, html) = console.get("/marketplace/acme/echo").await;
    assert!(html.contains("href=\"/publish\"") && html.contains(">Install</button>"));
    for fields in [
        vec![("version", "1.0.0")],
        vec![("version", "1.0.0"), ("csrf", "0000")],
    ] {
        let (status, html) = console
            .post("/marketplace/acme/echo/install", &fields)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
        assert!(html.contains("csrf"), "{html}");
    }
    assert!(
        server
            .registry
            .installs("acme", &Default::default())
            .unwrap()
            .is_empty()
    );
    // With it, the same post installs.
    let csrf = console.csrf().await;
    let (status, to) = console
        .post(
            "/marketplace/acme/echo/install",
            &[("version", "1.0.0"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        (status, to.as_str()),
        (StatusCode::SEE_OTHER, "/installs/1")
    );

    // A viewer sees no publish button and no install form; its forged posts get 403, with its
    // own session's form token too.
    let looker = Console::sign_in(&server, &viewer).await;
    let (_, html) = looker.get("/marketplace/acme/echo").await;
    assert!(
        !html.contains("/publish") && !html.contains(">Install</button>"),
        "{html}"
    );
    assert!(!html.contains("Deprecate"), "{html}");
    let (status, _) = looker.get("/publish").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let csrf = looker.csrf().await;
    for (path, fields) in [
        ("/marketplace/acme/echo/install", vec![("version", "1.0.0")]),
        (
            "/marketplace/acme/echo/1.0.0/state",
            vec![("state", "blocked")],
        ),
        (
            "/installs/1/update",
            vec![("version", "1.0.0"), ("mode", "overwrite")],
        ),
    ] {
        let mut fields = fields;
        fields.push(("csrf", &csrf));
        let (status, html) = looker.post(path, &fields).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {html}");
    }
    assert_eq!(
        server
            .registry
            .installs("acme", &Default::default())
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        server
            .registry
            .version("acme", "acme", "echo", "1.0.0")
            .unwrap()
            .state,
        gantry_host::model::VersionState::Active
    );
    // A page that shows data reads without script, and says what may not be framed or run.
    let response = reqwest::Client::new()
        .get(format!("http://{}/marketplace", server.addr))
        .header(COOKIE, &looker.cookie)
        .send()
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(!response.text().await.unwrap().contains("<script"));
    server.shutdown().await;
}
