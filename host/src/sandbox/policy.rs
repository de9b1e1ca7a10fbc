//! The outbound policy shared by both HTTP paths (`http.send` and wasi:http): which origins a
//! call may reach, and which resolved addresses are off limits.
//!
//! A request is allowed only if its origin (`scheme://host[:port]`) matches a pattern the
//! connector **declares** and a pattern the operator or install **grants**. After DNS, every
//! address is checked again: loopback, private, link-local (cloud metadata), shared, multicast
//! and unspecified addresses — also inside IPv4-mapped and NAT64 IPv6 — are refused unless the
//! operator allows that exact address.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

/// An origin pattern: `scheme://host[:port]`, where a host label may be `*` (any one or more
/// labels, e.g. `https://*.example.com`), the host may be `*` (anything), the port may be `*`,
/// and a lone `*` matches every origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: Option<String>,
    host: String,
    port: Option<Option<u16>>,
}

/// A request's destination, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    /// Lowercase host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// A URL or origin pattern that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOrigin(pub String);

/// Why the policy refuses a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} is not among the hosts the connector declares")]
    Undeclared(Origin),
    #[error("{0} is not granted to this connector")]
    Ungranted(Origin),
    #[error("{ip} is {why}, which the operator does not allow for this connector")]
    Address { ip: IpAddr, why: &'static str },
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl Origin {
    /// The origin of an absolute `http`/`https` URL.
    pub fn of_url(url: &str) -> Result<Self, InvalidOrigin> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| InvalidOrigin(format!("invalid URL: {e}")))?;
        Self::of_uri(&uri)
    }

    pub fn of_uri(uri: &http::Uri) -> Result<Self, InvalidOrigin> {
        Self::read_uri(uri).map_err(InvalidOrigin)
    }

    fn read_uri(uri: &http::Uri) -> Result<Self, String> {
        let scheme = uri
            .scheme_str()
            .ok_or("the URL has no scheme")?
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .or_else(|| default_port(&scheme))
            .ok_or_else(|| format!("scheme `{scheme}` is not supported; use http or https"))?;
        if default_port(&scheme).is_none() {
            return Err(format!(
                "scheme `{scheme}` is not supported; use http or https"
            ));
        }
        let host = uri.host().ok_or("the URL has no host")?;
        // An IPv6 literal comes bracketed; brackets anywhere else are not a host (`http::Uri`
        // takes `tt[]`: found by the `origins` fuzz target, the policy used to see `tt[`).
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<Ipv6Addr>().is_ok() => v6.to_ascii_lowercase(),
            Some(_) => return Err(format!("`{host}` is not an IPv6 address")),
            None if host.contains(['[', ']']) => {
                return Err(format!("`{host}` is not a host name"));
            }
            None => host.to_ascii_lowercase(),
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(Self { scheme, host, port })
    }
}

impl OriginPattern {
    pub fn parse(pattern: &str) -> Result<Self, InvalidOrigin> {
        Self::read(pattern).map_err(InvalidOrigin)
    }

    fn read(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim();
        if pattern == "*" {
            return Ok(Self {
                scheme: None,
                host: "*".into(),
                port: Some(None),
            });
        }
        let (scheme, rest) = pattern
            .split_once("://")
            .ok_or_else(|| format!("`{pattern}` must look like scheme://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        if default_port(&scheme).is_none() && scheme != "*" {
            return Err(format!("`{pattern}`: scheme must be http, https or *"));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!("`{pattern}` must name only scheme, host and port"));
        }
        // Each part is read the one way it is written, as the origin it must match is: an IPv6
        // literal in brackets, a port in plain digits (found by the `origins` fuzz target's
        // reference: `[*]junk` read as `*`, `::1:80` as `[::1]:80`, `+80` and `080` as 80).
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{pattern}`: unclosed `[`"))?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(format!("`{pattern}`: `[{host}]` is not an IPv6 address"));
            }
            match after.strip_prefix(':') {
                Some(port) => (host.to_string(), Some(port)),
                None if after.is_empty() => (host.to_string(), None),
                None => return Err(format!("`{pattern}`: `{after}` after the host")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (rest.to_string(), None),
            }
        };
        if host.contains(':') && !rest.starts_with('[') {
            return Err(format!("`{pattern}`: an IPv6 address goes in brackets"));
        }
        let port = match port {
            None => None,
            Some("*") => Some(None),
            Some(p)
                if p == "0" || (p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0')) =>
            {
                Some(Some(
                    p.parse()
                        .map_err(|_| format!("`{pattern}`: bad port `{p}`"))?,
                ))
            }
            Some(p) => return Err(format!("`{pattern}`: bad port `{p}`")),
        };
        if host.is_empty() {
            return Err(format!("`{pattern}` has no host"));
        }
        Ok(Self {
            scheme: (scheme != "*").then_some(scheme),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn matches(&self, origin: &Origin) -> bool {
        if let Some(scheme) = &self.scheme
            && *scheme != origin.scheme
        {
            return false;
        }
        let port_ok = match self.port {
            Some(None) => true,
            Some(Some(p)) => p == origin.port,
            // No port is the default port: of the pattern's scheme, or with `*://` of the
            // origin's (`*://host` is host on 80 over http and on 443 over https, not on 22).
            None => {
                let scheme = self.scheme.as_deref().unwrap_or(&origin.scheme);
                default_port(scheme) == Some(origin.port)
            }
        };
        port_ok && host_matches(&self.host, &origin.host)
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        None => pattern == host,
    }
}

/// Parse a list of patterns, naming the first bad one.
pub fn parse_patterns(patterns: &[String]) -> Result<Vec<OriginPattern>, InvalidOrigin> {
    patterns.iter().map(|p| OriginPattern::parse(p)).collect()
}

/// Operator-wide settings of outbound HTTP. Which private addresses a call may reach is not
/// among them: that is allowed per call ([`crate::CallContext::allow_private`]), so one
/// organisation's allowance is never another's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    #[serde(with = "crate::sandbox::limits::millis")]
    pub connect_timeout: Duration,
    /// Whole request, response body included (the call's wall-clock deadline applies as well).
    #[serde(with = "crate::sandbox::limits::millis")]
    pub request_timeout: Duration,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            max_request_bytes: 4 << 20,
            max_response_bytes: 16 << 20,
        }
    }
}

/// Why an address may not be reached: loopback, private, link-local, shared, documentation,
/// benchmarking, multicast, reserved and other special-purpose ranges (IANA's IPv4 and IPv6
/// special-purpose registries, the entries not globally reachable), and IPv6 forms that carry
/// an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) when that address is refused — or
/// always, for the tunnelling forms whose far end Gantry cannot see.
pub fn forbidden_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address (cloud metadata lives here)")
    } else if a == 0 {
        Some("an unspecified address")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("a broadcast, multicast or reserved address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if a == 192 && b == 0 && c == 0 {
        Some("an IETF protocol assignment address")
    } else if (a == 192 && b == 0 && c == 2)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        Some("a documentation address")
    } else if a == 198 && (18..20).contains(&b) {
        Some("a benchmarking address")
    } else if a == 192 && b == 88 && c == 99 {
        Some("a 6to4 relay anycast address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |why: &'static str, v4: Ipv4Addr| forbidden_v4(v4).map(|_| why);
    let low_v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if let Some(v4) = ip.to_ipv4_mapped() {
        embedded("an IPv4-mapped private or special address", v4)
    } else if s[..6] == [0; 6] {
        // ::a.b.c.d, deprecated "IPv4-compatible" addresses: nothing legitimate uses them.
        Some("an IPv4-compatible address (deprecated)")
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        embedded("a NAT64-mapped private or special address", low_v4)
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        Some("a local-use NAT64 address")
    } else if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        // ::ffff:0:a.b.c.d, IPv4-translated (SIIT).
        embedded("an IPv4-translated private or special address", low_v4)
    } else if s[0] == 0x100 && s[1..4] == [0, 0, 0] {
        Some("a discard-only address")
    } else if s[0] == 0x2001 && s[1] == 0 {
        Some("a Teredo address (tunnels to an IPv4 address Gantry cannot check)")
    } else if s[0] == 0x2002 {
        Some("a 6to4 address (tunnels to an IPv4 address Gantry cannot check)")
    } else if s[0] == 0x2001 && s[1] < 0x200 {
        Some("an IETF protocol assignment address")
    } else if (s[0] == 0x2001 && s[1] == 0xdb8) || (s[0] == 0x3fff && s[1] < 0x1000) {
        Some("a documentation address")
    } else if s[0] == 0x5f00 {
        Some("a segment-routing address")
    } else if s[0] & 0xfe00 == 0xfc00 {
        Some("a unique-local (private) address")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if s[0] & 0xffc0 == 0xfec0 {
        Some("a site-local address (deprecated, private)")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// What one call may reach: the declared ∩ granted origins and the operator's settings.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// Parsed once per connector; shared by all its calls.
    declared: Arc<[OriginPattern]>,
    granted: Vec<OriginPattern>,
    /// Addresses this call may reach although they are private or special.
    allow_private: Vec<IpAddr>,
    /// The operator's settings, shared by every call of a runtime.
    pub(crate) config: Arc<OutboundConfig>,
}

/// Parse patterns, logging and skipping malformed ones (a connector's declaration or an
/// install's grants must not make every call fail).
pub(crate) fn parse_lenient(list: &[String]) -> Vec<OriginPattern> {
    list.iter()
        .filter_map(|p| match OriginPattern::parse(p) {
            Ok(pattern) => Some(pattern),
            Err(e) => {
                tracing::warn!(pattern = %p, error = %e, "ignoring a malformed outbound pattern");
                None
            }
        })
        .collect()
}

impl OutboundPolicy {
    /// A policy from what the connector declares, what is granted to this call and which
    /// private addresses it may reach all the same.
    pub fn new(
        declared: &[String],
        granted: &[String],
        allow_private: &[IpAddr],
        config: OutboundConfig,
    ) -> Self {
        Self::for_call(
            parse_lenient(declared).into(),
            granted,
            allow_private,
            Arc::new(config),
        )
    }

    /// The policy of one call: the connector's pre-parsed declaration, this call's grants and
    /// private allowances (empty lists cost nothing), the runtime's shared settings.
    pub(crate) fn for_call(
        declared: Arc<[OriginPattern]>,
        granted: &[String],
        allow_private: &[IpAddr],
        config: Arc<OutboundConfig>,
    ) -> Self {
        Self {
            declared,
            granted: parse_lenient(granted),
            allow_private: allow_private.to_vec(),
            config,
        }
    }

    /// Whether `origin` may be requested at all (before DNS).
    pub fn check_origin(&self, origin: &Origin) -> Result<(), Refused> {
        if !self.declared.iter().any(|p| p.matches(origin)) {
            return Err(Refused::Undeclared(origin.clone()));
        }
        if !self.granted.iter().any(|p| p.matches(origin)) {
            return Err(Refused::Ungranted(origin.clone()));
        }
        Ok(())
    }

    /// Whether a resolved address may be connected to.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Refused> {
        match forbidden_address(ip) {
            Some(why) if !self.allow_private.contains(&ip) => Err(Refused::Address { ip, why }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::of_url(url).unwrap()
    }

    #[test]
    fn patterns_match_scheme_host_and_port() {
        assert_eq!(
            origin("https://api.example.com/v2?key=s3cret").to_string(),
            "https://api.example.com:443",
            "an origin never carries the path or query"
        );
        let p = OriginPattern::parse("https://api.worldbank.org").unwrap();
        assert!(p.matches(&origin("https://api.worldbank.org/v2/country")));
        assert!(p.matches(&origin("https://API.worldbank.org:443/")));
        assert!(!p.matches(&origin("http://api.worldbank.org/")));
        assert!(!p.matches(&origin("https://api.worldbank.org:8443/")));
        assert!(!p.matches(&origin("https://api.worldbank.org.evil.com/")));

        let wild = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(wild.matches(&origin("https://a.b.example.com/")));
        assert!(!wild.matches(&origin("https://example.com/")));
        assert!(!wild.matches(&origin("https://evilexample.com/")));

        let any_port = OriginPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(any_port.matches(&origin("http://127.0.0.1:8080/x")));
        assert!(
            OriginPattern::parse("*")
                .unwrap()
                .matches(&origin("http://x:1/"))
        );
        let v6 = OriginPattern::parse("http://[::1]:8080").unwrap();
        assert!(v6.matches(&origin("http://[::1]:8080/")));

        for bad in [
            "api.example.com",
            "ftp://x",
            "https://x/path",
            "https://",
            "https://x:port",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(Origin::of_url("ftp://x/").is_err());
    }

    #[test]
    fn brackets_are_an_ipv6_literal_or_no_host() {
        // Found by the `origins` fuzz target: `http::Uri` takes `tt[]` as a host, and the
        // policy saw `tt[`.
        for bad in ["http://tt[]/", "http://[x]/", "http://[]/", "http://a]/"] {
            assert!(Origin::of_url(bad).is_err(), "{bad}");
        }
        let v6 = origin("http://[2001:DB8::1]:8080/");
        assert_eq!(v6.host, "2001:db8::1");
        assert_eq!(origin(&v6.to_string()), v6);
    }

    #[test]
    fn a_pattern_is_read_the_one_way_it_is_written() {
        // Found by the `origins` fuzz target's reference decisions: text after a bracketed
        // host was dropped, a bracketed host was any text, an unbracketed IPv6 address lost
        // its last group to the port, and a port took a sign or leading zeros.
        for bad in [
            "*://[*]junk",
            "http://[::1]junk",
            "http://[api.example.com]",
            "http://::1:80",
            "http://::1",
            "http://example.com:+80",
            "http://example.com:080",
            "http://example.com:65536",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
        let v6 = OriginPattern::parse("http://[::1]:8080").unwrap();
        assert!(v6.matches(&origin("http://[::1]:8080/")));
        assert!(!v6.matches(&origin("http://[::1]/")));
        assert!(
            OriginPattern::parse("http://[::1]")
                .unwrap()
                .matches(&origin("http://[::1]/"))
        );
        assert!(OriginPattern::parse("http://h:0").is_ok());
    }

    #[test]
    fn any_scheme_without_a_port_is_its_default_port() {
        // `*://host` was host on any port at all.
        let both = OriginPattern::parse("*://api.example.com").unwrap();
        assert!(both.matches(&origin("http://api.example.com/")));
        assert!(both.matches(&origin("https://api.example.com/")));
        assert!(!both.matches(&origin("http://api.example.com:22/")));
        assert!(!both.matches(&origin("https://api.example.com:80/")));
        let any_port = OriginPattern::parse("*://api.example.com:*").unwrap();
        assert!(any_port.matches(&origin("http://api.example.com:22/")));
    }

    #[test]
    fn addresses_that_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            // Found by the security review: IPv4-compatible, local-use NAT64, site-local, 6to4
            // and Teredo forms.
            "::127.0.0.1",
            "::a9fe:a9fe",
            "64:ff9b:1::8.8.8.8",
            "fec0::1",
            "2002:7f00:1::1",
            "2002:0808:0808::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            // IPv4-translated, discard-only, documentation, benchmarking, ORCHID, SRv6.
            "::ffff:0:10.0.0.1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "2001:10::1",
            "5f00::1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "240.0.0.1",
        ] {
            assert!(forbidden_address(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "8.8.8.8",
            "198.20.0.1",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
            "2a00:1450:4001::1",
        ] {
            assert!(forbidden_address(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[test]
    fn declared_and_granted_must_both_match() {
        let policy = OutboundPolicy::new(
            &[
                "https://api.worldbank.org".into(),
                "http://127.0.0.1:*".into(),
            ],
            &["http://127.0.0.1:*".into()],
            &["127.0.0.1".parse().unwrap()],
            OutboundConfig::default(),
        );
        assert!(
            policy
                .check_origin(&origin("http://127.0.0.1:9000/"))
                .is_ok()
        );
        let err = policy
            .check_origin(&origin("https://api.worldbank.org/"))
            .unwrap_err();
        assert!(err.to_string().contains("not granted"), "{err}");
        let err = policy
            .check_origin(&origin("https://evil.com/"))
            .unwrap_err();
        assert!(err.to_string().contains("declares"), "{err}");
        assert!(policy.check_address("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check_address("127.0.0.2".parse().unwrap()).is_err());
        assert!(
            policy
                .check_address("::ffff:127.0.0.1".parse().unwrap())
                .is_err()
        );
        assert!(
            OutboundPolicy::default()
                .check_origin(&origin("https://a.com/"))
                .is_err(),
            "empty = nothing"
        );
    }
}
