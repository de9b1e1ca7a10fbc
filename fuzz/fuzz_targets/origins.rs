//! Outbound origins and origin patterns: never a panic; an origin written out reads back as
//! itself and, as a pattern, matches exactly it; `*` matches every origin; `scheme://*.HOST`
//! matches a subdomain of HOST but never HOST itself; and every decision is the one of a
//! simple reference: a pattern matches an origin exactly when it is, written the one way it
//! may be written, among the patterns that origin can be granted by (see [`grantable`]).

#![no_main]

use gantry_host::sandbox::{Origin, OriginPattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str, &str)| {
    let (pattern, url, label) = input;
    let parsed = OriginPattern::parse(pattern);
    let Ok(origin) = Origin::of_url(url) else {
        return;
    };
    let text = origin.to_string();
    let again = Origin::of_url(&text)
        .unwrap_or_else(|e| panic!("{url:?} gives {text:?}, which does not parse: {e}"));
    assert_eq!(again, origin, "{url:?} → {text:?}");
    let exact = OriginPattern::parse(&text).expect("an origin's own text is a pattern");
    assert!(exact.matches(&origin), "{text:?} does not match itself");
    assert!(OriginPattern::parse("*").unwrap().matches(&origin));
    let decided = parsed.as_ref().is_ok_and(|p| p.matches(&origin));
    let reference = grantable(&origin).contains(&pattern.trim().to_ascii_lowercase());
    assert_eq!(decided, reference, "{pattern:?} for {origin} ({parsed:?})");
    if !origin.host.contains(':') {
        let wildcard = format!("{}://*.{}:{}", origin.scheme, origin.host, origin.port);
        if let Ok(wildcard) = OriginPattern::parse(&wildcard) {
            assert!(
                !wildcard.matches(&origin),
                "{wildcard:?} matches its own host"
            );
            let label = label.to_ascii_lowercase();
            if !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric()) {
                let sub = format!(
                    "{}://{label}.{}:{}",
                    origin.scheme, origin.host, origin.port
                );
                if let Ok(sub) = Origin::of_url(&sub) {
                    assert!(wildcard.matches(&sub), "{wildcard:?} misses {sub:?}");
                }
            }
        }
    }
});

/// Every pattern, written out canonically, that grants `origin`: `*`; or a scheme (its own or
/// `*`), a host (its own — an IPv6 literal in brackets —, `*`, or `*.` and what follows a dot
/// that is not its first character: `*` stands for one or more labels) and a port (its own, `*`, or none when it is its scheme's default).
fn grantable(origin: &Origin) -> Vec<String> {
    let host = &origin.host;
    let mut hosts = vec![
        match host.contains(':') {
            true => format!("[{host}]"),
            false => host.clone(),
        },
        "*".to_string(),
    ];
    for (at, _) in host.match_indices('.').filter(|(at, _)| *at > 0) {
        hosts.push(format!("*.{}", &host[at + 1..]));
    }
    let default = match origin.scheme.as_str() {
        "http" => 80,
        _ => 443,
    };
    let mut ports = vec![format!(":{}", origin.port), ":*".to_string()];
    if origin.port == default {
        ports.push(String::new());
    }
    let mut patterns = vec!["*".to_string()];
    for scheme in [origin.scheme.as_str(), "*"] {
        for host in &hosts {
            for port in &ports {
                patterns.push(format!("{scheme}://{host}{port}"));
            }
        }
    }
    patterns
}
