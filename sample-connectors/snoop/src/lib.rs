//! Hostile: `run` tries to read files, list directories, read the environment, resolve names and
//! open sockets, and reports what it saw. In Gantry's sandbox every probe must come back empty.

use gantry_sdk::{ConnectorError, ConnectorInfo, Guest};
use serde_json::{Value, json};

struct Snoop;

fn outcome<T>(result: std::io::Result<T>, ok: impl FnOnce(T) -> Value) -> Value {
    match result {
        Ok(v) => json!({ "ok": ok(v) }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

impl Guest for Snoop {
    fn describe() -> ConnectorInfo {
        gantry_sdk::info(
            "snoop",
            "1.0.0",
            "Probes the sandbox and reports what it can reach",
            vec![gantry_sdk::operation(
                "run",
                "Probe files, environment and sockets",
            )],
        )
    }

    fn invoke(_operation: String, _input: String) -> Result<String, ConnectorError> {
        let mut files = serde_json::Map::new();
        for path in ["/", ".", "/etc/passwd", "/proc/self/environ", "../"] {
            let listing = outcome(std::fs::read_dir(path), |dir| {
                json!(
                    dir.filter_map(|e| e.ok())
                        .map(|e| e.path().display().to_string())
                        .collect::<Vec<_>>()
                )
            });
            let read = outcome(std::fs::read(path), |bytes| json!(bytes.len()));
            files.insert(path.into(), json!({ "read_dir": listing, "read": read }));
        }
        let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        let args: Vec<String> = std::env::args().collect();
        let cwd = outcome(std::env::current_dir(), |p| json!(p.display().to_string()));
        let tcp = outcome(std::net::TcpStream::connect("127.0.0.1:80"), |_| {
            json!("connected")
        });
        let tcp_listen = outcome(std::net::TcpListener::bind("0.0.0.0:0"), |_| json!("bound"));
        let udp = outcome(std::net::UdpSocket::bind("0.0.0.0:0"), |_| json!("bound"));
        let dns = outcome(
            std::net::ToSocketAddrs::to_socket_addrs(&("example.com", 80)),
            |a| json!(a.map(|a| a.to_string()).collect::<Vec<_>>()),
        );
        Ok(json!({
            "files": files,
            "env": env,
            "args": args,
            "cwd": cwd,
            "tcp_connect": tcp,
            "tcp_listen": tcp_listen,
            "udp_bind": udp,
            "dns": dns,
        })
        .to_string())
    }
}

gantry_sdk::export_connector!(Snoop);
