//! The servers the shared-store tests talk to: a real PostgreSQL and a real S3-compatible
//! server (moto), on 127.0.0.1.
//!
//! `GANTRY_TEST_POSTGRES` (a server URL) and `GANTRY_TEST_S3` (an endpoint URL) name servers
//! that are already running — `.ci/run` starts them; otherwise the first test that needs one
//! starts its own for this test process: a PostgreSQL cluster `initdb`'d into a temporary
//! directory (as the `postgres` user when the tests run as root, as PostgreSQL refuses root),
//! and `moto_server`. Both are stopped when the test process exits.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The S3 credentials the tests use (moto accepts any).
pub const S3_KEYS: (&str, &str) = ("gantry-test", "gantry-test-secret");

/// What to stop when the test process exits.
static CLEANUP: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());

enum Cleanup {
    Cluster(PathBuf),
    Child(Child),
}

extern "C" fn clean_up() {
    let Ok(mut all) = CLEANUP.lock() else { return };
    for cleanup in all.drain(..) {
        match cleanup {
            Cleanup::Cluster(data) => {
                let _ = as_postgres(Command::new(pg_bin("pg_ctl")))
                    .args(["stop", "-m", "immediate", "-D"])
                    .arg(&data)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = std::fs::remove_dir_all(data.parent().unwrap_or(&data));
            }
            Cleanup::Child(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn on_exit(cleanup: Cleanup) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: registering a plain `extern "C"` function with no captured state.
        unsafe { libc::atexit(clean_up) };
    });
    CLEANUP.lock().unwrap().push(cleanup);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from(name))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `command`, run as the `postgres` user when this process is root.
fn as_postgres(mut command: Command) -> Command {
    if is_root() {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = postgres_ids();
        command.uid(uid).gid(gid);
    }
    command
}

fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("tests run as root need the postgres user (Debian's postgresql package)");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// A PostgreSQL cluster this test process started and owns: it can be stopped and started
/// again on the same port (to test riding out a restart).
pub struct Cluster {
    data: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// `initdb` a new cluster into a temporary directory and start it.
    pub fn start() -> Cluster {
        let root = std::env::temp_dir().join(format!(
            "gantry-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(&root, Some(uid), Some(gid)).unwrap();
        }
        let data = root.join("data");
        let out = as_postgres(Command::new(pg_bin("initdb")))
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("initdb runs (Debian's postgresql package)");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        on_exit(Cleanup::Cluster(data.clone()));
        let cluster = Cluster {
            data,
            port: free_port(),
        };
        cluster.up();
        cluster
    }

    /// Start the server (again) and wait until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off \
             -c full_page_writes=off",
            self.port,
            self.data.parent().unwrap().display()
        );
        let out = as_postgres(Command::new(pg_bin("pg_ctl")))
            .args(["start", "-w", "-t", "60", "-l"])
            .arg(self.data.parent().unwrap().join("log"))
            .arg("-D")
            .arg(&self.data)
            .args(["-o", &options])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop the server at once, as a crash or an operator's immediate restart would.
    pub fn down(&self) {
        let out = as_postgres(Command::new(pg_bin("pg_ctl")))
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl stop");
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The URL of the shared PostgreSQL server.
fn postgres_server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("GANTRY_TEST_POSTGRES") {
        Ok(url) => url,
        Err(_) => {
            let cluster = Cluster::start();
            let url = cluster.url();
            std::mem::forget(cluster);
            url
        }
    })
}

/// A URL of the shared PostgreSQL server whose connections work in a new, empty schema of
/// their own (`search_path`), so each test has a database to itself.
pub fn postgres_schema() -> String {
    let server = postgres_server();
    let schema = format!(
        "t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    let out = Command::new("psql")
        .args([server, "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE SCHEMA {schema}"))
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "creating a schema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let separator = if server.contains('?') { '&' } else { '?' };
    format!("{server}{separator}options=-csearch_path%3D{schema}")
}

/// The endpoint of the shared S3 server.
pub fn s3_endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| match std::env::var("GANTRY_TEST_S3") {
        Ok(endpoint) => endpoint,
        Err(_) => start_moto(),
    })
}

fn start_moto() -> String {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server runs (pip install 'moto[server]')");
    on_exit(Cleanup::Child(child));
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    endpoint
}

/// A new, empty bucket on the shared S3 server; its `s3://` URL.
pub fn s3_bucket() -> String {
    let endpoint = s3_endpoint();
    let bucket = format!(
        "gantry-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    // moto takes an unsigned CreateBucket; a real S3 would want it signed.
    assert!(
        put(&format!("{endpoint}/{bucket}")),
        "creating bucket {bucket}"
    );
    format!("s3://{bucket}?endpoint={endpoint}&region=us-east-1")
}

/// A plain HTTP PUT with no body, from a blocking test (the test crate's reqwest is async).
fn put(url: &str) -> bool {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "PUT /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.starts_with("HTTP/1.1 200")
}
