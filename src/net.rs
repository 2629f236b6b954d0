//! Which URLs the server may call (callbacks, flows): http(s) only, and no private, loopback,
//! link-local, CGNAT, multicast or metadata addresses unless an allowed network admits them.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    pub allow_networks: Vec<IpNet>,
}

impl UrlPolicy {
    pub fn new(allow_networks: Vec<IpNet>) -> Self {
        Self { allow_networks }
    }

    /// Checks what can be checked without DNS: scheme, shape, and a literal IP host.
    pub fn check_literal(&self, raw: &str) -> Result<url::Url, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "scheme `{}` is not allowed (http or https only)",
                url.scheme()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials".into());
        }
        match url.host() {
            None => return Err("has no host".into()),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(url::Host::Domain(d))
                if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") =>
            {
                self.check_ip(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))?
            }
            Some(url::Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// Refuses non-public addresses unless an allowed network contains them.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if let Some(kind) = non_public(ip)
            && !self.allow_networks.iter().any(|n| n.contains(&ip))
        {
            return Err(format!(
                "{ip} is a {kind} address, which is refused unless callbacks.allow_networks admits it"
            ));
        }
        Ok(())
    }
}

/// Why an address is not public, if it is not.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                // 169.254.169.254 and friends: cloud metadata lives here.
                Some("link-local")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("CGNAT")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("multicast/broadcast")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if o[0] >= 240
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
            {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                Some("private (unique local)")
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if seg[0] == 0xfd00 && seg[1] == 0x0ec2 {
                Some("metadata")
            } else if seg[0] == 0x64 && seg[1] == 0xff9b {
                Some("NAT64")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_public_literals_unless_allowed() {
        let strict = UrlPolicy::default();
        for url in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8080/",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
        ] {
            assert!(
                strict.check_literal(url).is_err(),
                "{url} should be refused"
            );
        }
        assert!(strict.check_literal("https://example.com/hook").is_ok());
        assert!(strict.check_literal("http://93.184.215.14/").is_ok());
        let loopback_ok = UrlPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(
            loopback_ok
                .check_literal("http://127.0.0.1:9000/hook")
                .is_ok()
        );
        assert!(loopback_ok.check_literal("http://10.0.0.1/").is_err());
    }

    #[test]
    fn refuses_other_schemes_and_credentials() {
        let p = UrlPolicy::default();
        assert!(p.check_literal("ftp://example.com/").is_err());
        assert!(p.check_literal("file:///etc/passwd").is_err());
        assert!(p.check_literal("https://user:pw@example.com/").is_err());
        assert!(p.check_literal("not a url").is_err());
    }
}
