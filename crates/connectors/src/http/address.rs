//! Which remote addresses crmhub may connect to.
//!
//! Connector hosts are configured by tenants, so without a policy a tenant could point crmhub
//! at the installation's own network (a database, the cloud metadata service at
//! 169.254.169.254). Addresses are checked after DNS resolution, inside the resolver the HTTP
//! client connects with, so the address checked is the address connected to (no gap for a DNS
//! answer to change in between); literal IPs in URLs are checked before sending, and both
//! happen again on every redirect hop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Refusal of one address, with the range it fell in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to {ip}, a {range} address; allow-list it in outbound.allow_private to permit it")]
pub struct AddressRefused {
    pub host: String,
    pub ip: IpAddr,
    pub range: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// `allow` lists networks that are reachable even though they are not public
    /// (e.g. `127.0.0.1/32` for in-process simulators, `10.1.2.0/24` for an on-premise CRM).
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), AddressRefused> {
        let ip = canonical(ip);
        match non_public_range(ip) {
            None => Ok(()),
            Some(_) if self.allow.iter().any(|net| net.contains(&ip)) => Ok(()),
            Some(range) => Err(AddressRefused { host: host.to_owned(), ip, range }),
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are the IPv4 address in disguise.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The name of the non-public range `ip` belongs to, or `None` for a public address.
fn non_public_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) {
        Some("reserved")
    } else {
        None
    }
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast or reserved")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("reserved")
    } else if first == 0x0064 && ip.segments()[1] == 0xff9b {
        // NAT64 embeds an IPv4 address; judge that one.
        let s = ip.segments();
        let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        v4_range(embedded)
    } else {
        None
    }
}

/// DNS resolution that only ever yields permitted addresses.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<AddressPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check(&host, addr.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(refusal) => Box::new(refusal),
                    None => format!("{host} did not resolve to any address").into(),
                };
                return Err(err);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &AddressPolicy, ip: &str) -> bool {
        policy.check("h", ip.parse().unwrap()).is_err()
    }

    #[test]
    fn non_public_ranges_are_refused_by_default() {
        let policy = AddressPolicy::default();
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(refused(&policy, ip), "{ip} should be refused");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "172.32.0.1", "64:ff9b::808:808"] {
            assert!(!refused(&policy, ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn allow_list_opens_exactly_the_listed_networks() {
        let policy = AddressPolicy::new(vec!["127.0.0.1/32".parse().unwrap(), "10.1.0.0/16".parse().unwrap()]);
        assert!(!refused(&policy, "127.0.0.1"));
        assert!(!refused(&policy, "::ffff:127.0.0.1"));
        assert!(refused(&policy, "127.0.0.2"));
        assert!(!refused(&policy, "10.1.200.3"));
        assert!(refused(&policy, "10.2.0.1"));
        assert!(refused(&policy, "169.254.169.254"));
    }

    #[test]
    fn refusal_names_the_range() {
        let err = AddressPolicy::default().check("metadata", "169.254.169.254".parse().unwrap()).unwrap_err();
        assert_eq!(err.range, "link-local");
        assert!(err.to_string().contains("169.254.169.254"));
    }
}
