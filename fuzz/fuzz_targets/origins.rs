//! Outbound origins and origin patterns: never a panic; an origin written out reads back as
//! itself and, as a pattern, matches exactly it; `*` matches every origin; `scheme://*.HOST`
//! matches a subdomain of HOST but never HOST itself.

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
    if let Ok(pattern) = &parsed {
        // Deciding is total: it answers for any pattern and origin.
        let _ = pattern.matches(&origin);
    }
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
