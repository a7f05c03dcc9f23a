//! Who is asking, as far as this server can trust it. Forwarding headers (`Forwarded`,
//! `X-Forwarded-For`, `-Host`, `-Proto`) are honoured only from configured trusted proxies,
//! as nginx's `set_real_ip_from` does; from anyone else they are ignored, and a loopback peer
//! that sends them is taken for an unconfigured proxy on this host, not for a local caller.

use std::net::{IpAddr, SocketAddr};

use actix_web::HttpRequest;
use actix_web::http::header;

const FORWARDING: [&str; 4] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// The request's client as trusted.
pub struct Client {
    /// The client's address: the peer, or the address a trusted proxy forwarded for.
    pub ip: Option<IpAddr>,
    /// Whether the client is on this machine and reached the server directly.
    pub local: bool,
    /// The host the client asked for (with port), as trusted.
    pub host: String,
    /// `https` when a trusted proxy says so, else `http`.
    pub scheme: &'static str,
}

impl Client {
    /// The client of `req`; `local_addr` answers for requests that name no host.
    pub fn of(req: &HttpRequest, trusted_proxies: &[IpAddr], local_addr: SocketAddr) -> Client {
        let peer = req.peer_addr().map(|addr| addr.ip());
        let forwarded = FORWARDING
            .iter()
            .any(|name| req.headers().contains_key(*name));
        let trusted = peer.is_some_and(|peer| trusted_proxies.contains(&peer));
        if trusted {
            let info = req.connection_info();
            // The address the proxy itself appended: the last of X-Forwarded-For (earlier ones
            // are whatever the client claimed), as nginx's real_ip module takes it.
            let forwarded_for = req
                .headers()
                .get_all("x-forwarded-for")
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .filter_map(|entry| parse_address(entry.trim()))
                .last();
            let ip = forwarded_for
                .or_else(|| info.realip_remote_addr().and_then(parse_address))
                .or(peer);
            let scheme = if info.scheme().eq_ignore_ascii_case("https") {
                "https"
            } else {
                "http"
            };
            return Client {
                ip,
                local: !forwarded && ip.is_some_and(|ip| ip.is_loopback()),
                host: info.host().to_owned(),
                scheme,
            };
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|authority| authority.to_string()))
            .unwrap_or_else(|| local_addr.to_string());
        Client {
            ip: peer,
            local: !forwarded && peer.is_some_and(|peer| peer.is_loopback()),
            host,
            scheme: "http",
        }
    }

    /// The host name without port or IPv6 brackets, lower-case.
    pub fn hostname(&self) -> String {
        hostname(&self.host)
    }
}

/// An address with or without port (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`).
fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<SocketAddr>()
        .map(|addr| addr.ip())
        .or_else(|_| text.trim_matches(['[', ']']).parse::<IpAddr>())
        .ok()
}

/// `host[:port]` or `[v6]:port` to the bare, lower-case host name.
pub fn hostname(host: &str) -> String {
    let host = host.trim();
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    bare.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const LOCAL: &str = "127.0.0.1:8000";

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let request = |peer: &str| {
            TestRequest::default()
                .peer_addr(peer.parse().unwrap())
                .insert_header(("host", "internal:8000"))
                .insert_header(("x-forwarded-host", "maps.example.com"))
                .insert_header(("x-forwarded-proto", "https"))
                .insert_header(("x-forwarded-for", "127.0.0.1, 203.0.113.7"))
                .to_http_request()
        };
        let via_proxy = Client::of(&request("10.0.0.2:5000"), &[proxy], LOCAL.parse().unwrap());
        assert_eq!(via_proxy.host, "maps.example.com");
        assert_eq!(via_proxy.scheme, "https");
        assert_eq!(
            via_proxy.ip,
            Some("203.0.113.7".parse().unwrap()),
            "the address the proxy appended, not the one the client claimed"
        );
        assert!(!via_proxy.local);
        let spoofed = Client::of(
            &request("198.51.100.1:5000"),
            &[proxy],
            LOCAL.parse().unwrap(),
        );
        assert_eq!(spoofed.host, "internal:8000");
        assert_eq!(spoofed.scheme, "http");
        assert_eq!(spoofed.ip, Some("198.51.100.1".parse().unwrap()));
        let unconfigured_local_proxy =
            Client::of(&request("127.0.0.1:5000"), &[], LOCAL.parse().unwrap());
        assert!(
            !unconfigured_local_proxy.local,
            "a loopback peer forwarding for others"
        );
        let direct = TestRequest::default()
            .peer_addr("127.0.0.1:5000".parse().unwrap())
            .to_http_request();
        let direct = Client::of(&direct, &[], LOCAL.parse().unwrap());
        assert!(direct.local);
        assert_eq!(direct.host, LOCAL);
    }

    #[test]
    fn hostnames_drop_ports_and_brackets() {
        assert_eq!(hostname("LocalHost:8000"), "localhost");
        assert_eq!(hostname("[::1]:8000"), "::1");
        assert_eq!(hostname("::1"), "::1");
        assert_eq!(hostname("127.0.0.1"), "127.0.0.1");
    }
}
