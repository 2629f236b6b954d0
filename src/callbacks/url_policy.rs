//! Which URLs the server may call (callbacks, flows, `http.fetch`): http(s) only, and no
//! address in a non-public range unless an allowed network admits it.
//!
//! One classification (`reasons`) serves both checks: at intake for literal hosts
//! ([`UrlPolicy::check_literal`]) and at connect time for every DNS answer
//! ([`UrlPolicy::check_ip`], called by the guarded resolver in `callbacks::client`).
//!
//! The ranges are the IANA IPv4/IPv6 special-purpose registries plus a few deprecated IPv6
//! ones. IPv6 addresses that carry an IPv4 address (IPv4-mapped, IPv4-compatible, SIIT, NAT64,
//! 6to4, Teredo) are also judged by that IPv4 address, so `[::ffff:127.0.0.1]` or
//! `[2002:7f00:1::]` cannot smuggle a request to loopback.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::LazyLock,
};

use ipnet::IpNet;

/// Non-public IPv4 ranges and what they are (the name reads after "a"/"an" and before
/// "address").
const V4_RANGES: &[(&str, &str)] = &[
    // "This network"; connecting to 0.0.0.0 reaches the local host.
    ("0.0.0.0/8", "current-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    // Cloud metadata (169.254.169.254) lives here.
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.31.196.0/24", "AS112"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
];

/// Non-public IPv6 ranges. IPv4-mapped (`::ffff:0:0/96`) and NAT64 (`64:ff9b::/96`) are not
/// listed: they are other spellings of the IPv4 address they carry and are judged by it alone.
/// The other IPv4-carrying forms are refused whatever they carry (deprecated, or not meant to
/// be reached from here); the carried address only makes the reason more precise.
const V6_RANGES: &[(&str, &str)] = &[
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("::ffff:0:0:0/96", "SIIT"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignment"),
    ("2001::/32", "Teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID (deprecated)"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:db8::/32", "documentation"),
    // All of 6to4, not only what embeds a non-public IPv4: relays are deprecated (RFC 7526) and
    // a route into 2002::/16 would reach whatever IPv4 host the address names.
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment-routing (SRv6)"),
    ("fc00::/7", "private (unique local)"),
    // AWS instance metadata over IPv6 (fd00:ec2::254).
    ("fd00:ec2::/32", "cloud metadata"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
];

fn parse_ranges(rows: &[(&str, &'static str)]) -> Vec<(IpNet, &'static str)> {
    rows.iter()
        .map(|&(net, kind)| (net.parse().expect("a valid CIDR in the range table"), kind))
        .collect()
}

static V4: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| parse_ranges(V4_RANGES));
static V6: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| parse_ranges(V6_RANGES));

/// The most specific non-public range containing `ip` (so `2001::/32` Teredo wins over
/// `2001::/23`).
fn range_of(ip: IpAddr) -> Option<(IpNet, &'static str)> {
    let table = match ip {
        IpAddr::V4(_) => &V4,
        IpAddr::V6(_) => &V6,
    };
    table
        .iter()
        .filter(|(net, _)| net.contains(&ip))
        .max_by_key(|(net, _)| net.prefix_len())
        .copied()
}

/// The IPv4 addresses an IPv6 address carries, each with the name of the form.
fn embedded_ipv4(v6: Ipv6Addr) -> Vec<(Ipv4Addr, &'static str)> {
    let bits = u128::from(v6);
    let last32 = Ipv4Addr::from(bits as u32);
    let high96 = bits >> 32;
    if high96 == 0xffff {
        vec![(last32, "IPv4-mapped")] // ::ffff:a.b.c.d
    } else if high96 == 0xffff_0000 {
        vec![(last32, "SIIT")] // ::ffff:0:a.b.c.d (RFC 2765)
    } else if high96 == 0 && bits > 1 {
        vec![(last32, "IPv4-compatible")] // ::a.b.c.d, but not :: or ::1
    } else if high96 == 0x0064_ff9b << 64 {
        vec![(last32, "NAT64")] // 64:ff9b::a.b.c.d (RFC 6052)
    } else if bits >> 112 == 0x2002 {
        vec![(Ipv4Addr::from((bits >> 80) as u32), "6to4")] // 2002:AABB:CCDD::/48
    } else if bits >> 96 == 0x2001_0000 {
        // Teredo (RFC 4380): 2001:0:SERVER:flags:port:CLIENT, the client address inverted.
        vec![
            (Ipv4Addr::from((bits >> 64) as u32), "Teredo server"),
            (Ipv4Addr::from(!(bits as u32)), "Teredo client"),
        ]
    } else {
        Vec::new()
    }
}

/// Why an address is not public. Displays as "10.1.2.3 is a private address (10.0.0.0/8)" or
/// "2002:7f00:1:: embeds 127.0.0.1 (6to4), a loopback address (127.0.0.0/8)".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonPublic {
    /// The address checked.
    pub ip: IpAddr,
    /// The non-public IPv4 address `ip` carries and how ("6to4"); `None` when `ip` itself is
    /// in a non-public range.
    pub embedded: Option<(Ipv4Addr, &'static str)>,
    /// The non-public range (the embedded address's when there is one).
    pub network: IpNet,
    /// What the range is: "loopback", "6to4", …
    pub kind: &'static str,
}

impl fmt::Display for NonPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The kinds are chosen so that the first letter decides the article.
        let vowel = self.kind.starts_with(|c: char| "aeiouAEIOU".contains(c));
        let a = if vowel { "an" } else { "a" };
        let (ip, kind, network) = (self.ip, self.kind, self.network);
        match self.embedded {
            Some((v4, form)) => write!(
                f,
                "{ip} embeds {v4} ({form}), {a} {kind} address ({network})"
            ),
            None => write!(f, "{ip} is {a} {kind} address ({network})"),
        }
    }
}

/// Every reason an address is not public, the most telling first: each non-public IPv4 address
/// it carries, then its own range.
fn reasons(ip: IpAddr) -> Vec<NonPublic> {
    let embedded = match ip {
        IpAddr::V4(_) => Vec::new(),
        IpAddr::V6(v6) => embedded_ipv4(v6),
    };
    let carried = embedded.into_iter().filter_map(|(v4, form)| {
        let (network, kind) = range_of(IpAddr::V4(v4))?;
        Some(NonPublic {
            ip,
            embedded: Some((v4, form)),
            network,
            kind,
        })
    });
    let own = range_of(ip).map(|(network, kind)| NonPublic {
        ip,
        embedded: None,
        network,
        kind,
    });
    carried.chain(own).collect()
}

/// Why the server will not call a URL or an address: a sentence naming what is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(String);

impl std::ops::Deref for Refusal {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<Refusal> for String {
    fn from(r: Refusal) -> Self {
        r.0
    }
}

#[derive(Debug, Clone)]
pub struct UrlPolicy {
    pub allow_networks: Vec<IpNet>,
    /// The setting that lists `allow_networks`, named in refusals so an operator knows what
    /// to change (each caller has its own: a model's fetches are not a flow's webhooks).
    setting: &'static str,
}

impl Default for UrlPolicy {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl UrlPolicy {
    /// The policy of callbacks and flows (`callbacks.allow_networks`).
    pub fn new(allow_networks: Vec<IpNet>) -> Self {
        Self::named("callbacks.allow_networks", allow_networks)
    }

    /// The same policy with its allowed networks taken from another setting.
    pub fn named(setting: &'static str, allow_networks: Vec<IpNet>) -> Self {
        Self {
            allow_networks,
            setting,
        }
    }

    /// Checks what can be checked without DNS: scheme, shape, and a literal IP host.
    pub fn check_literal(&self, raw: &str) -> Result<url::Url, Refusal> {
        // The url crate has already turned decimal, octal and hex IPv4 spellings
        // (`2130706433`, `0x7f.1`, `0177.0.0.1`) into `Host::Ipv4`, and lowercased and
        // percent-decoded domains.
        let url = url::Url::parse(raw).map_err(|e| Refusal(format!("is not a valid URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal(format!(
                "scheme `{}` is not allowed (http or https only)",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal("must not contain credentials".into()));
        }
        match url.host() {
            None => return Err(Refusal("has no host".into())),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(url::Host::Domain(d)) if is_localhost(d) => self
                .check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .map_err(|reason| Refusal(format!("{d} names the local host: {reason}")))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// Refuses non-public addresses unless an allowed network admits them. An allowed network
    /// containing the address admits it; one containing a non-public IPv4 address it carries
    /// waives only that reason (so `127.0.0.0/8` admits `::ffff:127.0.0.1` but not
    /// `2002:7f00:1::`, which is refused as 6to4 as well).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.admits(ip) {
            return Ok(());
        }
        let unwaived = reasons(ip)
            .into_iter()
            .find(|reason| match reason.embedded {
                Some((v4, _)) => !self.admits(IpAddr::V4(v4)),
                None => true,
            });
        match unwaived {
            Some(reason) => Err(Refusal(format!(
                "{reason}, which is refused unless {} admits it",
                self.setting
            ))),
            None => Ok(()),
        }
    }

    fn admits(&self, ip: IpAddr) -> bool {
        self.allow_networks.iter().any(|net| net.contains(&ip))
    }
}

/// `localhost`, `*.localhost` (RFC 6761), also fully qualified (`localhost.`).
fn is_localhost(domain: &str) -> bool {
    let name = domain.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why an address is not public, if it is not (the most telling reason).
    fn non_public(ip: IpAddr) -> Option<NonPublic> {
        reasons(ip).into_iter().next()
    }

    /// What the policy should do with a URL: accept it, or refuse it with a message that
    /// contains the given text.
    #[derive(Debug, Clone, Copy)]
    enum Expect {
        Accept,
        Refuse(&'static str),
    }
    use Expect::{Accept, Refuse};

    /// (URL, expected outcome, what it is), for the default policy (nothing allowed).
    #[rustfmt::skip]
    const CASES: &[(&str, Expect, &str)] = &[
        // Public hosts and addresses.
        ("https://example.com/", Accept, "public name"),
        ("https://example.com:8443/hook?x=1", Accept, "public name, port and query"),
        ("http://93.184.215.14/", Accept, "public IPv4"),
        ("http://8.8.8.8/", Accept, "public IPv4 (resolver)"),
        ("http://1.1.1.1./", Accept, "public IPv4, trailing dot"),
        ("http://11.0.0.1/", Accept, "just above 10.0.0.0/8"),
        ("http://100.63.255.255/", Accept, "just below 100.64.0.0/10"),
        ("http://100.128.0.0/", Accept, "just above 100.64.0.0/10"),
        ("http://169.253.255.255/", Accept, "just below 169.254.0.0/16"),
        ("http://172.15.255.255/", Accept, "just below 172.16.0.0/12"),
        ("http://172.32.0.0/", Accept, "just above 172.16.0.0/12"),
        ("http://192.0.3.1/", Accept, "just above TEST-NET-1"),
        ("http://198.17.255.255/", Accept, "just below 198.18.0.0/15"),
        ("http://198.20.0.0/", Accept, "just above 198.18.0.0/15"),
        ("http://223.255.255.255/", Accept, "just below multicast"),
        ("http://[2606:4700::1111]/", Accept, "public IPv6"),
        ("http://[2001:4860:4860::8888]/", Accept, "public IPv6 (resolver)"),
        ("http://[2001:200::1]/", Accept, "public IPv6 just above 2001::/23"),
        ("http://[2003::1]/", Accept, "public IPv6 just above 2002::/16"),
        ("http://[::ffff:8.8.8.8]/", Accept, "IPv4-mapped public IPv4"),
        ("http://[64:ff9b::808:808]/", Accept, "NAT64 of a public IPv4 (DNS64)"),
        ("http://localhost.example.com/", Accept, "name merely starting with localhost"),
        ("http://mylocalhost/", Accept, "name merely ending in localhost"),
        // IPv4 spellings of loopback (the url crate normalises them).
        ("http://127.0.0.1/x", Refuse("127.0.0.1 is a loopback address"), "loopback"),
        ("http://127.255.255.254/", Refuse("loopback"), "loopback, top of 127/8"),
        ("http://2130706433/", Refuse("127.0.0.1 is a loopback"), "loopback, decimal"),
        ("http://0x7f.1/", Refuse("127.0.0.1 is a loopback"), "loopback, hex and short"),
        ("http://017700000001/", Refuse("127.0.0.1 is a loopback"), "loopback, octal"),
        ("http://0177.0.0.1/", Refuse("127.0.0.1 is a loopback"), "loopback, dotted octal"),
        ("http://127.1/", Refuse("127.0.0.1 is a loopback"), "loopback, short form"),
        ("http://127.0.0.1./", Refuse("127.0.0.1 is a loopback"), "loopback, trailing dot"),
        // The IPv4 special-purpose registry.
        ("http://0/", Refuse("0.0.0.0 is a current-network"), "0, i.e. 0.0.0.0"),
        ("http://0.0.0.0/", Refuse("current-network"), "unspecified IPv4"),
        ("http://0.1.2.3/", Refuse("current-network"), "this network"),
        ("http://10.1.2.3/", Refuse("a private address (10.0.0.0/8)"), "private 10/8"),
        ("http://172.16.0.1/", Refuse("private"), "private 172.16/12"),
        ("http://172.31.255.255/", Refuse("private"), "private 172.16/12, top"),
        ("http://192.168.1.1/", Refuse("private"), "private 192.168/16"),
        ("http://100.64.0.1/", Refuse("CGNAT"), "shared address space"),
        ("http://100.127.255.255/", Refuse("CGNAT"), "shared address space, top"),
        ("http://169.254.169.254/latest/meta-data", Refuse("link-local"), "cloud metadata"),
        ("http://192.0.0.8/", Refuse("IETF protocol assignment"), "192.0.0.0/24"),
        ("http://192.0.2.1/", Refuse("TEST-NET-1"), "documentation"),
        ("http://192.31.196.1/", Refuse("an AS112 address"), "AS112-v4"),
        ("http://192.52.193.1/", Refuse("an AMT address"), "AMT"),
        ("http://192.88.99.1/", Refuse("6to4 relay anycast"), "deprecated 6to4 relays"),
        ("http://192.175.48.1/", Refuse("AS112"), "AS112 direct delegation"),
        ("http://198.18.0.1/", Refuse("benchmarking"), "benchmarking"),
        ("http://198.19.255.254/", Refuse("benchmarking"), "benchmarking, top"),
        ("http://198.51.100.7/", Refuse("TEST-NET-2"), "documentation"),
        ("http://203.0.113.9/", Refuse("TEST-NET-3"), "documentation"),
        ("http://224.0.0.1/", Refuse("multicast"), "multicast"),
        ("http://239.255.255.250/", Refuse("multicast"), "multicast (SSDP)"),
        ("http://240.0.0.1/", Refuse("reserved"), "reserved 240/4"),
        ("http://255.255.255.255/", Refuse("broadcast"), "limited broadcast"),
        // IPv6 ranges of their own.
        ("http://[::]/", Refuse("an unspecified address"), "unspecified IPv6"),
        ("http://[::1]/", Refuse("::1 is a loopback"), "IPv6 loopback"),
        ("http://[0:0:0:0:0:0:0:1]:9/", Refuse("loopback"), "IPv6 loopback, long form"),
        ("http://[100::1]/", Refuse("discard-only"), "discard prefix"),
        ("http://[2001:1::1]/", Refuse("IETF protocol assignment"), "2001::/23"),
        ("http://[2001:2::1]/", Refuse("benchmarking"), "IPv6 benchmarking"),
        ("http://[2001:10::1]/", Refuse("ORCHID"), "ORCHID"),
        ("http://[2001:20::1]/", Refuse("ORCHIDv2"), "ORCHIDv2"),
        ("http://[2001:db8::1]/", Refuse("documentation"), "IPv6 documentation"),
        ("http://[3fff::1]/", Refuse("documentation"), "IPv6 documentation (3fff::/20)"),
        ("http://[5f00::1]/", Refuse("SRv6"), "SRv6 SIDs"),
        ("http://[fc00::1]/", Refuse("unique local"), "ULA fc00::/8"),
        ("http://[fd12:3456::1]/", Refuse("unique local"), "ULA fd00::/8"),
        ("http://[fd00:ec2::254]/", Refuse("cloud metadata"), "AWS metadata over IPv6"),
        ("http://[fe80::1]/", Refuse("link-local"), "IPv6 link-local"),
        ("http://[febf::1]/", Refuse("link-local"), "IPv6 link-local, top"),
        ("http://[fec0::1]/", Refuse("site-local"), "deprecated site-local"),
        ("http://[ff02::1]/", Refuse("multicast"), "IPv6 multicast"),
        // IPv6 forms that carry an IPv4 address.
        ("http://[::ffff:127.0.0.1]/", Refuse("embeds 127.0.0.1 (IPv4-mapped), a loopback"), "mapped loopback"),
        ("http://[::ffff:7f00:1]/", Refuse("embeds 127.0.0.1 (IPv4-mapped), a loopback"), "mapped loopback, hex"),
        ("http://[::ffff:a9fe:a9fe]/", Refuse("169.254.169.254 (IPv4-mapped), a link-local"), "mapped metadata"),
        ("http://[::ffff:10.0.0.1]/", Refuse("10.0.0.1 (IPv4-mapped), a private"), "mapped private"),
        ("http://[::127.0.0.1]/", Refuse("127.0.0.1 (IPv4-compatible), a loopback"), "compatible loopback"),
        ("http://[::8.8.8.8]/", Refuse("an IPv4-compatible (deprecated) address"), "compatible public"),
        ("http://[::ffff:0:127.0.0.1]/", Refuse("127.0.0.1 (SIIT), a loopback"), "SIIT loopback"),
        ("http://[::ffff:0:808:808]/", Refuse("a SIIT address"), "SIIT public"),
        ("http://[64:ff9b::127.0.0.1]/", Refuse("127.0.0.1 (NAT64), a loopback"), "NAT64 loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/", Refuse("169.254.169.254 (NAT64), a link-local"), "NAT64 metadata"),
        ("http://[64:ff9b:1::808:808]/", Refuse("local-use NAT64"), "local-use NAT64"),
        ("http://[2002:7f00:1::]/", Refuse("2002:7f00:1:: embeds 127.0.0.1 (6to4), a loopback"), "6to4 loopback"),
        ("http://[2002:a9fe:a9fe::]/", Refuse("169.254.169.254 (6to4), a link-local"), "6to4 metadata"),
        ("http://[2002:c0a8:101::1]/", Refuse("192.168.1.1 (6to4), a private"), "6to4 private"),
        ("http://[2002:808:808::1]/", Refuse("a 6to4 address (2002::/16)"), "6to4 public: all of 6to4 is refused"),
        ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", Refuse("127.0.0.1 (Teredo client), a loopback"), "Teredo, loopback client"),
        ("http://[2001:0:a9fe:a9fe::f7f7:f7f7]/", Refuse("169.254.169.254 (Teredo server), a link-local"), "Teredo, metadata server"),
        ("http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/", Refuse("a Teredo address (2001::/32)"), "Teredo, public ends"),
        // Names of the local host.
        ("http://localhost:8080/", Refuse("localhost names the local host: 127.0.0.1 is a loopback"), "localhost"),
        ("http://LOCALHOST/", Refuse("loopback"), "localhost, uppercase"),
        ("http://localhost./", Refuse("loopback"), "localhost, fully qualified"),
        ("http://api.localhost/", Refuse("loopback"), "*.localhost"),
        ("http://API.LocalHost./", Refuse("loopback"), "*.localhost, mixed case, fully qualified"),
        ("http://%6c%6f%63%61%6c%68%6f%73%74/", Refuse("loopback"), "localhost, percent-encoded"),
        ("http://\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}/", Refuse("loopback"), "localhost, fullwidth letters"),
        // Not an http(s) URL to a host.
        ("ftp://example.com/", Refuse("scheme `ftp`"), "other scheme"),
        ("file:///etc/passwd", Refuse("scheme `file`"), "file URL"),
        ("https://user:pw@example.com/", Refuse("credentials"), "credentials"),
        ("not a url", Refuse("not a valid URL"), "no URL at all"),
        ("http://[::1/", Refuse("not a valid URL"), "unclosed IPv6 literal"),
    ];

    fn check(policy: &UrlPolicy, url: &str, expect: Expect, what: &str) {
        match (policy.check_literal(url), expect) {
            (Ok(_), Accept) => {}
            (Err(e), Refuse(text)) => {
                assert!(
                    e.contains(text),
                    "{what}: {url}: `{e}` should mention `{text}`"
                )
            }
            (Ok(_), Refuse(_)) => panic!("{what}: {url} should be refused"),
            (Err(e), Accept) => panic!("{what}: {url} should be accepted, got `{e}`"),
        }
    }

    #[test]
    fn classifies_urls() {
        assert!(CASES.len() >= 60);
        let strict = UrlPolicy::default();
        for &(url, expect, what) in CASES {
            check(&strict, url, expect, what);
        }
    }

    #[test]
    fn allowed_networks_admit_what_they_contain() {
        let policy =
            |nets: &[&str]| UrlPolicy::new(nets.iter().map(|n| n.parse().unwrap()).collect());
        let loopback = policy(&["127.0.0.0/8"]);
        #[rustfmt::skip]
        let cases: &[(&UrlPolicy, &str, Expect, &str)] = &[
            (&loopback, "http://127.0.0.1:9000/hook", Accept, "allowed loopback"),
            (&loopback, "http://localhost:9000/hook", Accept, "localhost with loopback allowed"),
            (&loopback, "http://[::ffff:127.0.0.1]/", Accept, "mapped loopback is loopback"),
            (&loopback, "http://[64:ff9b::7f00:1]/", Accept, "NAT64 is judged by its IPv4"),
            (&loopback, "http://[::1]/", Refuse("::1 is a loopback"), "127/8 does not cover ::1"),
            (&loopback, "http://10.0.0.1/", Refuse("private"), "other ranges stay refused"),
            (&loopback, "http://[2002:7f00:1::]/", Refuse("a 6to4 address"), "6to4 is refused as such"),
            (&loopback, "http://[::127.0.0.1]/", Refuse("IPv4-compatible (deprecated)"), "so is IPv4-compatible"),
            (&loopback, "http://[2001:0:7f00:1::f5ff:fffe]/", Refuse("10.0.0.1 (Teredo client)"), "every carried IPv4 must be allowed"),
            (&policy(&["::1/128"]), "http://[::1]/", Accept, "allowed IPv6 loopback"),
            (&policy(&["2002::/16"]), "http://[2002:7f00:1::]/", Accept, "an IPv6 network admits what it contains"),
            (&policy(&["fd00:ec2::/32"]), "http://[fd00:ec2::254]/", Accept, "allowed IPv6 metadata"),
            (&policy(&["169.254.169.254/32"]), "http://[::ffff:a9fe:a9fe]/", Accept, "allowed metadata, mapped"),
            (&policy(&["169.254.169.254/32"]), "http://169.254.169.253/", Refuse("link-local"), "only the allowed /32"),
            (&policy(&["10.0.0.0/8", "192.168.0.0/16"]), "http://192.168.1.1/", Accept, "second network"),
        ];
        for &(policy, url, expect, what) in cases {
            check(policy, url, expect, what);
        }
    }

    /// The connect-time path sees only addresses (DNS answers): the same classification applies.
    #[test]
    fn check_ip_refuses_what_check_literal_refuses() {
        let strict = UrlPolicy::default();
        let mut literals = 0;
        for &(url, expect, what) in CASES {
            let Ok(parsed) = url::Url::parse(url) else {
                continue;
            };
            let ip = match parsed.host() {
                Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
                Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
                _ => continue,
            };
            if !matches!(parsed.scheme(), "http" | "https") {
                continue;
            }
            literals += 1;
            match (strict.check_ip(ip), expect) {
                (Ok(()), Accept) => {}
                (Err(e), Refuse(text)) => assert!(e.contains(text), "{what}: {ip}: `{e}`"),
                (got, _) => panic!("{what}: check_ip({ip}) gave {got:?}, expected {expect:?}"),
            }
        }
        assert!(literals >= 60, "{literals} literal rows");
        // As a resolver hands them over: AAAA answers carrying a non-public IPv4.
        for (ip, text) in [
            ("::ffff:7f00:1", "127.0.0.1 (IPv4-mapped), a loopback"),
            ("::7f00:1", "127.0.0.1 (IPv4-compatible), a loopback"),
            ("::ffff:0:7f00:1", "127.0.0.1 (SIIT), a loopback"),
            (
                "64:ff9b::a9fe:a9fe",
                "169.254.169.254 (NAT64), a link-local",
            ),
            ("2002:7f00:1::", "127.0.0.1 (6to4), a loopback"),
            ("2002:a9fe:a9fe::", "169.254.169.254 (6to4), a link-local"),
            (
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                "127.0.0.1 (Teredo client), a loopback",
            ),
            (
                "2001:0:a00:1::f7f7:f7f7",
                "10.0.0.1 (Teredo server), a private",
            ),
        ] {
            let err = strict.check_ip(ip.parse().unwrap()).unwrap_err();
            assert!(err.contains(text), "{ip}: `{err}` should mention `{text}`");
            assert!(
                err.ends_with("refused unless callbacks.allow_networks admits it"),
                "{err}"
            );
        }
    }

    #[test]
    fn refusals_name_the_setting_that_admits_more() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let err = UrlPolicy::named("tools.fetch.allow_networks", Vec::new())
            .check_ip(loopback)
            .unwrap_err();
        assert!(
            err.ends_with("refused unless tools.fetch.allow_networks admits it"),
            "{err}"
        );
        let admitted = UrlPolicy::named("x", vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(admitted.check_ip(loopback), Ok(()));
    }

    #[test]
    fn range_tables_parse_into_their_family() {
        assert!(V4.iter().all(|(net, _)| matches!(net, IpNet::V4(_))));
        assert!(V6.iter().all(|(net, _)| matches!(net, IpNet::V6(_))));
        assert_eq!(V4.len(), V4_RANGES.len());
        assert_eq!(V6.len(), V6_RANGES.len());
    }

    #[test]
    fn non_public_names_the_range() {
        let np = non_public("2002:7f00:1::".parse().unwrap()).unwrap();
        assert_eq!(np.embedded, Some((Ipv4Addr::LOCALHOST, "6to4")));
        assert_eq!(np.kind, "loopback");
        assert_eq!(np.network, "127.0.0.0/8".parse::<IpNet>().unwrap());
        assert_eq!(
            np.to_string(),
            "2002:7f00:1:: embeds 127.0.0.1 (6to4), a loopback address (127.0.0.0/8)"
        );
        assert_eq!(non_public("8.8.8.8".parse().unwrap()), None);
        assert_eq!(non_public("::ffff:8.8.8.8".parse().unwrap()), None);
    }
}
