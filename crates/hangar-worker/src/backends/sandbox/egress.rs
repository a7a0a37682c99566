//! The egress allowlist proxy and the server relay
//! (`network_policy: allowlist{hosts}`), shared by the Docker backend (on its
//! internal network's gateway, see `docker::egress`) and the direct backend
//! (on loopback inside its sandbox's network namespace, see
//! `direct::sandbox`).
//!
//! - The **HTTP proxy** (`CONNECT host:port` and absolute-form `http://`
//!   requests) connects only to the allowlisted hosts (`name` exactly,
//!   `*.suffix` for any name under `suffix`; IP literals only when listed
//!   literally) and answers `403` to anything else. Host names are resolved
//!   by the worker (`extra_hosts` first), never by the task.
//! - The **server relay** is a TCP relay to the worker's own server URL,
//!   which the agent uses as its `--server-url` (TLS, if any, stays end to
//!   end).
//!
//! The proxy checks where a name **resolves**, not only the name: a
//! destination that is (or resolves to) a loopback, link-local, private,
//! unspecified or cloud metadata address (`127.0.0.1`, `localhost`,
//! `169.254.169.254`, a public name pointing at `10.0.0.5`, …) is refused
//! with `403` even when the environment's allowlist names it, unless the
//! worker's `egress_allow_internal` lists that host (the name as asked, or
//! the address itself). The proxy connects to the addresses it checked,
//! never resolving twice (no DNS rebinding window). Issue 11, scenario S11.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// Limit for reading a request head and for connecting upstream.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Which destinations the proxy accepts.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    exact: Vec<String>,
    suffixes: Vec<String>,
}

impl Allowlist {
    /// `hosts` as in the environment: `name` or `*.suffix`.
    pub fn new(hosts: &[String]) -> Self {
        let mut list = Allowlist::default();
        for h in hosts {
            let h = normalise_host(h);
            match h.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() => list.suffixes.push(format!(".{suffix}")),
                _ if !h.is_empty() => list.exact.push(h),
                _ => {}
            }
        }
        list
    }

    /// Whether `host` (a name or an IP literal) may be reached.
    pub fn allows(&self, host: &str) -> bool {
        let host = normalise_host(host);
        if host.is_empty() {
            return false;
        }
        if self.exact.contains(&host) {
            return true;
        }
        // Wildcards never match IP literals.
        host.parse::<IpAddr>().is_err() && self.suffixes.iter().any(|s| host.ends_with(s.as_str()))
    }
}

/// Lower case, no trailing dot, no IPv6 brackets.
pub(crate) fn normalise_host(h: &str) -> String {
    h.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Parses `extra_hosts` entries (`name:ip`) into a resolver map.
pub fn parse_extra_hosts(entries: &[String]) -> Result<HashMap<String, IpAddr>, String> {
    let mut map = HashMap::new();
    for e in entries {
        let (name, ip) = e
            .split_once(':')
            .ok_or_else(|| format!("extra_hosts entry {e:?} must be NAME:IP"))?;
        let ip: IpAddr = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("extra_hosts entry {e:?}: {ip:?} is not an IP address"))?;
        map.insert(normalise_host(name), ip);
    }
    Ok(map)
}

/// What the proxy enforces.
#[derive(Debug)]
struct Policy {
    allow: Allowlist,
    hosts: HashMap<String, IpAddr>,
    /// Normalised `egress_allow_internal` entries (names or IP literals).
    internal: Vec<String>,
}

impl Policy {
    /// Why `host` may not be reached at `addrs` (`None`: it may).
    fn refuse_internal(&self, host: &str, addrs: &[SocketAddr]) -> Option<String> {
        let host = normalise_host(host);
        if self.internal.contains(&host) {
            return None;
        }
        let by_name = hangar_protocol::repository::classify_host(&host);
        let by_addr = addrs.iter().find_map(|a| {
            let class = hangar_protocol::repository::classify_ip(a.ip())?;
            (!self.internal.contains(&a.ip().to_string())).then_some((a.ip(), class))
        });
        match (by_addr, by_name) {
            (Some((ip, class)), _) => Some(format!(
                "{host} resolves to {ip}, a {} address",
                class.as_str()
            )),
            (None, Some(class)) => Some(format!("{host} is a {} address", class.as_str())),
            (None, None) => None,
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let host = normalise_host(host);
        if let Some(ip) = self.hosts.get(&host) {
            return Ok(vec![SocketAddr::new(*ip, port)]);
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        Ok(tokio::net::lookup_host((host.as_str(), port))
            .await?
            .collect())
    }
}

/// Serves the allowlist proxy on `listener` until `stop`: the environment's
/// `hosts`, names resolved through `extra_hosts` first, internal addresses
/// only when `allow_internal` lists them. The listener may live in another
/// network namespace (the direct backend's sandbox).
pub(crate) fn serve_proxy(
    listener: TcpListener,
    hosts: &[String],
    extra_hosts: HashMap<String, IpAddr>,
    allow_internal: &[String],
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let policy = Arc::new(Policy {
        allow: Allowlist::new(hosts),
        hosts: extra_hosts,
        internal: allow_internal.iter().map(|h| normalise_host(h)).collect(),
    });
    serve(listener, stop, move |conn| {
        let policy = policy.clone();
        async move { proxy_connection(conn, &policy).await }
    })
}

/// Relays every connection accepted on `listener` to `target` (the server)
/// until `stop`.
pub(crate) fn serve_relay(
    listener: TcpListener,
    target: (String, u16),
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    serve(listener, stop, move |conn| {
        let target = target.clone();
        async move { relay_connection(conn, &target).await }
    })
}

/// Accepts connections until `stop`; connection tasks end with the loop.
async fn serve<F, Fut>(listener: TcpListener, stop: CancellationToken, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, peer)) => {
                    let fut = handle(conn);
                    conns.spawn(async move {
                        if let Err(e) = fut.await {
                            tracing::debug!(%peer, error = %e, "egress connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "egress listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.cancelled() => break,
        }
    }
    conns.abort_all();
}

async fn relay_connection(mut conn: TcpStream, target: &(String, u16)) -> std::io::Result<()> {
    let mut upstream = tokio::time::timeout(
        IO_TIMEOUT,
        TcpStream::connect((target.0.as_str(), target.1)),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

/// A parsed proxy request.
#[derive(Debug, PartialEq)]
struct ProxyRequest {
    connect: bool,
    host: String,
    port: u16,
    /// For plain HTTP: the head to send upstream (origin-form, `Connection: close`).
    head: Vec<u8>,
}

/// Parses a request head (up to and including the blank line).
fn parse_request(head: &[u8]) -> Result<ProxyRequest, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let first = lines.next().ok_or("empty request")?;
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if !version.starts_with("HTTP/1.") {
        return Err("unsupported HTTP version");
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = target.rsplit_once(':').ok_or("CONNECT needs host:port")?;
        let port: u16 = port.parse().map_err(|_| "bad CONNECT port")?;
        return Ok(ProxyRequest {
            connect: true,
            host: normalise_host(host),
            port,
            head: Vec::new(),
        });
    }
    let url = url::Url::parse(target).map_err(|_| "the proxy needs an absolute http:// URL")?;
    if url.scheme() != "http" {
        return Err("only http:// URLs are proxied; use CONNECT for https");
    }
    let host = url
        .host_str()
        .map(normalise_host)
        .ok_or("URL without host")?;
    let port = url.port_or_known_default().ok_or("URL without port")?;
    let mut origin = url.path().to_owned();
    if let Some(q) = url.query() {
        origin.push('?');
        origin.push_str(q);
    }
    let mut out = format!("{method} {origin} {version}\r\n");
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let name = line.split(':').next().unwrap_or_default().trim();
        if [
            "proxy-connection",
            "proxy-authorization",
            "connection",
            "keep-alive",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(ProxyRequest {
        connect: false,
        host,
        port,
        head: out.into_bytes(),
    })
}

async fn respond(conn: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(msg.as_bytes()).await?;
    conn.shutdown().await
}

async fn refuse_internal(
    conn: &mut TcpStream,
    req: &ProxyRequest,
    why: &str,
) -> std::io::Result<()> {
    tracing::info!(host = %req.host, port = req.port, why, "egress refused: internal destination");
    respond(
        conn,
        "403 Forbidden",
        &format!(
            "hangar egress: {why}; tasks may not reach internal addresses unless the worker's \
             `egress_allow_internal` lists {}\n",
            req.host
        ),
    )
    .await
}

async fn proxy_connection(mut conn: TcpStream, policy: &Policy) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let end = tokio::time::timeout(IO_TIMEOUT, async {
        let mut chunk = [0u8; 2048];
        loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(pos + 4));
            }
            if buf.len() > MAX_HEAD {
                return Ok::<_, std::io::Error>(None);
            }
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timed out"))?;
    let end: Option<usize> = end?;
    let Some(end) = end else {
        return respond(&mut conn, "400 Bad Request", "incomplete request head\n").await;
    };
    let req = match parse_request(&buf[..end]) {
        Ok(r) => r,
        Err(why) => return respond(&mut conn, "400 Bad Request", &format!("{why}\n")).await,
    };
    if !policy.allow.allows(&req.host) {
        tracing::info!(host = %req.host, port = req.port, "egress refused: host not in the allowlist");
        return respond(
            &mut conn,
            "403 Forbidden",
            &format!(
                "hangar egress: {} is not in this environment's network allowlist\n",
                req.host
            ),
        )
        .await;
    }
    let addrs = match policy.resolve(&req.host, req.port).await {
        Ok(a) if !a.is_empty() => a,
        _ => {
            if let Some(why) = policy.refuse_internal(&req.host, &[]) {
                return refuse_internal(&mut conn, &req, &why).await;
            }
            return respond(
                &mut conn,
                "502 Bad Gateway",
                &format!("hangar egress: cannot resolve {}\n", req.host),
            )
            .await;
        }
    };
    if let Some(why) = policy.refuse_internal(&req.host, &addrs) {
        return refuse_internal(&mut conn, &req, &why).await;
    }
    let upstream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&addrs[..])).await;
    let mut upstream = match upstream {
        Ok(Ok(s)) => s,
        _ => {
            return respond(
                &mut conn,
                "502 Bad Gateway",
                &format!(
                    "hangar egress: cannot connect to {}:{}\n",
                    req.host, req.port
                ),
            )
            .await;
        }
    };
    tracing::debug!(host = %req.host, port = req.port, connect = req.connect, "egress allowed");
    if req.connect {
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    } else {
        upstream.write_all(&req.head).await?;
    }
    // Bytes the client sent after the head (pipelined or tunnel data).
    upstream.write_all(&buf[end..]).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matching() {
        let a = Allowlist::new(&[
            "Example.com".into(),
            "*.corp.test".into(),
            "10.0.0.5".into(),
        ]);
        assert!(a.allows("example.com"));
        assert!(a.allows("EXAMPLE.com."));
        assert!(!a.allows("www.example.com"));
        assert!(!a.allows("example.com.evil.test"));
        assert!(a.allows("git.corp.test"));
        assert!(a.allows("a.b.corp.test"));
        assert!(!a.allows("corp.test"));
        assert!(!a.allows("xcorp.test"));
        assert!(a.allows("10.0.0.5"));
        assert!(!a.allows("10.0.0.6"));
        assert!(!a.allows(""));
    }

    #[test]
    fn requests_parse() {
        let c = parse_request(b"CONNECT Example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(c.connect);
        assert_eq!((c.host.as_str(), c.port), ("example.com", 443));
        let g = parse_request(
            b"GET http://h.test:8080/a?b=1 HTTP/1.1\r\nHost: h.test\r\nProxy-Connection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert!(!g.connect);
        assert_eq!((g.host.as_str(), g.port), ("h.test", 8080));
        assert_eq!(
            String::from_utf8(g.head).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n"
        );
        assert!(parse_request(b"GET /relative HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"GET ftp://x/ HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"CONNECT nohost HTTP/1.1\r\n\r\n").is_err());
    }

    /// Starts the proxy on loopback with `allow` and `internal`; returns its
    /// address and the port of an upstream that answers `upstream-body`.
    async fn proxy_with(allow: &[&str], internal: &[&str], hosts: &[&str]) -> (SocketAddr, u16) {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_port = upstream.local_addr().unwrap().port();
        #[allow(clippy::disallowed_methods)] // a test server that ends with the test
        tokio::spawn(async move {
            while let Ok((mut c, _)) = upstream.accept().await {
                let _ = c.write_all(b"upstream-body").await;
                let _ = c.shutdown().await;
            }
        });
        let policy = Arc::new(Policy {
            allow: Allowlist::new(&allow.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()),
            hosts: parse_extra_hosts(&hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
                .unwrap(),
            internal: internal.iter().map(|h| normalise_host(h)).collect(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        #[allow(clippy::disallowed_methods)] // a test server that ends with the test
        tokio::spawn(serve(listener, CancellationToken::new(), move |conn| {
            let policy = policy.clone();
            async move { proxy_connection(conn, &policy).await }
        }));
        (addr, up_port)
    }

    async fn connect_through(proxy: SocketAddr, host: &str, port: u16) -> String {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(format!("CONNECT {host}:{port} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_string(&mut out)).await;
        out
    }

    #[tokio::test]
    async fn s11_internal_destinations_are_refused_unless_configured() {
        let hosts = ["127.0.0.1", "localhost", "169.254.169.254", "sneaky.test"];
        // sneaky.test is an ordinary name that resolves to loopback.
        let (proxy, port) = proxy_with(&hosts, &[], &["sneaky.test:127.0.0.1"]).await;
        for host in hosts {
            let answer = connect_through(proxy, host, port).await;
            assert!(
                answer.starts_with("HTTP/1.1 403") && !answer.contains("upstream-body"),
                "{host}: {answer}"
            );
            assert!(answer.contains("egress_allow_internal"), "{host}: {answer}");
        }
        let answer = connect_through(proxy, "sneaky.test", port).await;
        assert!(answer.contains("resolves to 127.0.0.1"), "{answer}");

        // Listed in the worker's configuration: reachable.
        let (proxy, port) = proxy_with(
            &hosts,
            &["127.0.0.1", "localhost", "sneaky.test"],
            &["sneaky.test:127.0.0.1"],
        )
        .await;
        for host in ["127.0.0.1", "localhost", "sneaky.test"] {
            let answer = connect_through(proxy, host, port).await;
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.contains("upstream-body"),
                "{host}: {answer}"
            );
        }
        // Still refused: the metadata address was not listed.
        let answer = connect_through(proxy, "169.254.169.254", 80).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }

    #[test]
    fn extra_hosts_parse() {
        let m = parse_extra_hosts(&["Allowed.test:172.17.0.1".into()]).unwrap();
        assert_eq!(m["allowed.test"], IpAddr::from([172, 17, 0, 1]));
        assert!(parse_extra_hosts(&["nocolon".into()]).is_err());
        assert!(parse_extra_hosts(&["a:notip".into()]).is_err());
    }
}
