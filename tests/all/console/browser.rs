//! Both seed stories clicked through the console in a real headless Chromium (Debian's
//! `chromium` and `chromium-driver`, driven over WebDriver), across three organisations: a
//! vendor publishing, a shop that overwrites and a second customer that installs alongside.
//! Every page is checked for the instances' secrets; each step leaves a screenshot under
//! `target/console-screenshots/`.

use crate::support::{Server, root, runtime, sample_dir};
use fantoccini::{Client, ClientBuilder, Locator};
use gantry_host::ApiConfig;
use gantry_host::model::Role;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Secrets typed into the console: no page may ever show them.
const CANARIES: [&str; 3] = [
    "canary-secret-4f1d9a",
    "canary-secret-77e0c2",
    "canary-secret-rotated-5b1",
];

/// A headless Chromium under its own ChromeDriver, and the console it browses.
struct Browser {
    client: Client,
    driver: Child,
    base: String,
    shots: PathBuf,
    taken: usize,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn open(server: &Server) -> Browser {
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into());
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {chromedriver} ({e}): install Debian's chromium and chromium-driver (.ci/run does)")
            });
        let webdriver = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{webdriver}/status")).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "chromedriver did not answer"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .expect("a Chromium session");
        let shots = root().join("target").join("console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            base: format!("http://{}", server.addr),
            shots,
            taken: 0,
            _profile: profile,
        }
    }

    /// The page's HTML, checked for every secret typed into the console.
    async fn html(&self) -> String {
        let html = self.client.source().await.unwrap();
        for canary in CANARIES {
            assert!(!html.contains(canary), "a page shows a secret: {html}");
        }
        html
    }

    /// Open `path`; its HTML.
    async fn go(&self, path: &str) -> String {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
        self.loaded().await
    }

    /// The current page's HTML once it has loaded. On a loaded machine ChromeDriver has been
    /// seen to answer a navigation before the new document had any content (an empty page
    /// source); the page is read again until it has some.
    async fn loaded(&self) -> String {
        let started = Instant::now();
        loop {
            let complete = self
                .client
                .execute("return document.readyState", Vec::new())
                .await
                .unwrap()
                == "complete";
            if complete {
                let html = self.html().await;
                if html.contains("<body") {
                    return html;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{} did not load",
                self.client.current_url().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }

    async fn shot(&mut self, name: &str) {
        self.taken += 1;
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(
            self.shots.join(format!("{:02}-{name}.png", self.taken)),
            png,
        )
        .unwrap();
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on {}: {e}", self.base))
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Click `css` (a button or link that loads a page); the new page's HTML, once it has
    /// replaced the old one and finished loading.
    async fn click(&self, css: &str) -> String {
        let old = self.find("html").await;
        self.find(css).await.click().await.unwrap();
        let started = Instant::now();
        while old.tag_name().await.is_ok() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "clicking `{css}` loaded no page"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.loaded().await
    }

    async fn choose(&self, css: &str, value: &str) {
        self.find(css).await.select_by_value(value).await.unwrap();
    }

    async fn sign_in(&self, token: &str) {
        self.go("/sign-in").await;
        self.type_into("#token", token).await;
        let html = self.click("form button[type=submit]").await;
        assert!(
            html.contains("<span class=\"who\">") && html.contains("<h1>Manage connectors</h1>"),
            "{html}"
        );
    }

    async fn sign_out(&self) {
        let html = self.click(".signout button").await;
        assert!(html.contains("API token"), "{html}");
    }

    /// Publish sample `sample` from the publish page, public.
    async fn publish(&mut self, sample: &str, expect: &str) {
        let file = sample_dir().join(format!("{}.wasm", sample.replace('-', "_")));
        self.go("/publish").await;
        self.find("#component")
            .await
            .send_keys(&file.display().to_string())
            .await
            .unwrap();
        self.find("#public").await.click().await.unwrap();
        let html = self.click("button[value=publish]").await;
        assert!(html.contains(expect) && html.contains("created"), "{html}");
    }

    /// The id at the end of the current page's path (`/instances/7` → 7).
    async fn id(&self) -> i64 {
        self.path()
            .await
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Create an instance of install `install` with secret `token`; its id.
    async fn create_instance(&self, install: i64, name: &str, secret: &str) -> i64 {
        self.go("/instances").await;
        self.choose("#install", &install.to_string()).await;
        self.type_into("#name", name).await;
        self.type_into("#secret-name-0", "token").await;
        self.type_into("#secret-value-0", secret).await;
        let html = self.click("form[action='/instances'] button").await;
        assert!(html.contains("token (values are never shown)"), "{html}");
        self.id().await
    }

    /// Create flow `ctx` with one step `c` running `context` on `instance`; its id.
    async fn create_flow(&self, instance: i64) -> i64 {
        self.go("/flows").await;
        self.type_into("#flow-name", "ctx").await;
        let steps = json!([{"name": "c", "instance": instance, "operation": "context"}]);
        self.type_into("#steps", &steps.to_string()).await;
        self.click("form[action='/flows'] button").await;
        self.id().await
    }

    /// Run flow `flow` from its page; the page after the run.
    async fn run(&self, flow: i64) -> String {
        self.go(&format!("/flows/{flow}")).await;
        self.click("form[action$='/run'] button").await
    }
}

/// The newest run's section of a flow page.
fn newest_run(html: &str) -> &str {
    let at = html.find("aria-label=\"run ").expect("a run");
    &html[at..html[at..]
        .find("</section>")
        .map_or(html.len(), |end| at + end)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_seed_stories_click_through_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let vendor = server.token("vendor", Role::Admin);
    let shop = server.token("shop", Role::Admin);
    let globex = server.token("globex", Role::Admin);
    sample_dir();
    let mut b = Browser::open(&server).await;

    // The vendor inspects, then publishes public 1.0.0.
    b.sign_in(&vendor).await;
    b.go("/publish").await;
    let file = sample_dir().join("echo.wasm");
    b.find("#component")
        .await
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    let html = b.click("button[value=inspect]").await;
    assert!(
        html.contains("Fits the world") && html.contains("echo@1.0.0") && html.contains("greeting"),
        "{html}"
    );
    b.shot("publish-inspect").await;
    b.publish("echo", "vendor/echo@1.0.0").await;
    b.shot("published").await;
    b.sign_out().await;

    // The shop finds it, installs it, customises it, creates an instance and a flow, runs it.
    b.sign_in(&shop).await;
    let html = b.go("/marketplace?q=echo").await;
    assert!(html.contains("vendor/echo"), "{html}");
    b.shot("marketplace").await;
    b.go("/marketplace/vendor/echo").await;
    b.shot("connector").await;
    b.click("form[action$='/install'] button").await;
    let install = b.id().await;
    b.type_into("#config-greeting", "hi").await;
    let html = b.click("form[action$='/customise'] button").await;
    assert!(html.contains("Last changed by token:"), "{html}");
    let instance = b.create_instance(install, "main", CANARIES[0]).await;
    b.shot("instance").await;
    let flow = b.create_flow(instance).await;
    let html = b.run(flow).await;
    let run = newest_run(&html);
    assert!(
        run.contains("succeeded")
            && run.contains("vendor/echo@1.0.0")
            && run.contains("\"greeting\":\"hi\""),
        "{run}"
    );
    b.shot("flow-run").await;
    // Rotating the instance's credentials: the next run uses the new secret (its length).
    b.go(&format!("/instances/{instance}")).await;
    b.type_into("#secret-name-0", "token").await;
    b.type_into("#secret-value-0", CANARIES[2]).await;
    b.click("form[action$='/secrets'] button").await;
    let html = b.run(flow).await;
    assert!(newest_run(&html).contains("\"token_length\":25"), "{html}");
    b.sign_out().await;

    // A second customer does the same (without customising), before 1.0.0 is deprecated.
    b.sign_in(&globex).await;
    b.go("/marketplace/vendor/echo").await;
    b.click("form[action$='/install'] button").await;
    let g_install = b.id().await;
    let g_instance = b.create_instance(g_install, "main", CANARIES[1]).await;
    let g_flow = b.create_flow(g_instance).await;
    assert!(newest_run(&b.run(g_flow).await).contains("succeeded"));
    b.sign_out().await;

    // The vendor publishes 2.0.0 and deprecates 1.0.0.
    b.sign_in(&vendor).await;
    b.publish("echo-v2", "vendor/echo@2.0.0").await;
    b.go("/marketplace/vendor/echo").await;
    let html = b
        .click("section[aria-label='version 1.0.0'] button[value=deprecated]")
        .await;
    assert!(html.contains("badge deprecated"), "{html}");
    b.shot("deprecated").await;
    b.sign_out().await;

    // The shop sees the badge and the update; the dialog warns; an overwrite without the
    // acknowledgements is refused; with them the flow runs 2.0.0 with the same instance.
    b.sign_in(&shop).await;
    let html = b.go("/marketplace?q=echo").await;
    assert!(html.contains("badge deprecated"), "{html}");
    let html = b.go("/connectors").await;
    assert!(
        html.contains("Update available: 2.0.0") && html.contains("prebuilt"),
        "{html}"
    );
    b.shot("manage-connectors").await;
    let html = b.click("a.update").await;
    assert!(
        html.contains("If in doubt, don't overwrite!")
            && html.contains("customisations-lost")
            && html.contains("step <code>c</code>"),
        "{html}"
    );
    b.shot("update-dialog").await;
    let dialog = b.path().await + "?version=2.0.0";
    b.find("#overwrite").await.click().await.unwrap();
    let html = b.click("form.update button[type=submit]").await;
    assert!(html.contains("acknowledgement-required"), "{html}");
    b.shot("overwrite-refused").await;
    b.go(&dialog).await;
    b.find("#overwrite").await.click().await.unwrap();
    for tick in b
        .client
        .find_all(Locator::Css("input[name=acknowledge]"))
        .await
        .unwrap()
    {
        tick.click().await.unwrap();
    }
    let html = b.click("form.update button[type=submit]").await;
    assert!(html.contains("vendor/echo@2.0.0"), "{html}");
    assert_eq!(b.id().await, install, "overwrite: the same install");
    let html = b.run(flow).await;
    let run = newest_run(&html);
    assert!(
        run.contains("succeeded") && run.contains("vendor/echo@2.0.0"),
        "{run}"
    );
    assert!(
        html.contains(&format!("href=\"/instances/{instance}\"")),
        "the same instance"
    );
    b.shot("flow-after-overwrite").await;
    b.sign_out().await;

    // The second customer installs alongside: two entries, and the flow stays on 1.0.0 until
    // its step is rebound to an instance of the new install.
    b.sign_in(&globex).await;
    b.go("/connectors").await;
    b.click("a.update").await;
    b.find("#alongside").await.click().await.unwrap();
    b.click("form.update button[type=submit]").await;
    let new_install = b.id().await;
    assert_ne!(new_install, g_install);
    let html = b.go("/connectors").await;
    assert_eq!(html.matches("<td>vendor/echo</td>").count(), 2, "{html}");
    b.shot("two-entries").await;
    assert!(newest_run(&b.run(g_flow).await).contains("vendor/echo@1.0.0"));
    let fresh = b.create_instance(new_install, "main-v2", CANARIES[1]).await;
    b.go(&format!("/flows/{g_flow}")).await;
    b.choose("#rebind-c", &fresh.to_string()).await;
    let html = b.click("form[action$='/steps/c/rebind'] button").await;
    assert!(html.contains("vendor/echo@2.0.0"), "{html}");
    let html = b.run(g_flow).await;
    assert!(newest_run(&html).contains("vendor/echo@2.0.0"), "{html}");
    b.shot("flow-after-rebind").await;
    b.go("/audit").await;
    b.shot("audit").await;
    b.sign_out().await;

    b.client.clone().close().await.unwrap();
    server.shutdown().await;
}
