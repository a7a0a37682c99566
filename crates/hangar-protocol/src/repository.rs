//! Checks for user input that reaches a host command or a network connection
//! made on the user's behalf (scenarios S9 and S11): repository URLs and refs
//! (given to `git` on the worker host), image names (given to Docker) and
//! addresses that tasks must not reach unless an operator said so (loopback,
//! link-local, private networks, cloud metadata).
//!
//! The server applies them when an environment is stored (a 400 that says
//! what is wrong) and the worker again before anything runs (defence in
//! depth: an assignment may come from an older or a compromised server).
//! Every message says what is wrong and how to fix it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What is wrong with a piece of input, as a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(String);

impl InputError {
    fn new(message: impl Into<String>) -> Self {
        InputError(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Where a checked repository URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A remote over `https`, `ssh` (also scp-like `user@host:path`) or `git`.
    Remote {
        /// Scheme as git sees it (`https`, `ssh`, `git`).
        scheme: &'static str,
        /// Host, lower case, without brackets or port.
        host: String,
    },
    /// A `file://` URL or an absolute path on the worker host (only where
    /// the configuration allows local repositories).
    Local,
}

/// Schemes a repository URL may use (besides `file`, where allowed).
pub const REPO_SCHEMES: [&str; 3] = ["https", "ssh", "git"];

/// Checks a repository clone URL. `https://`, `ssh://`, `git://` and
/// scp-like `user@host:path` are accepted; `file://` URLs and absolute local
/// paths only with `allow_local`. Never anything that starts with `-`, holds
/// whitespace or control characters, or uses git's `transport::address`
/// syntax (`ext::`, `fd::`).
pub fn check_repo_url(url: &str, allow_local: bool) -> Result<RepoLocation, InputError> {
    if url.is_empty() {
        return Err(InputError::new("the repository URL is empty"));
    }
    if url.starts_with('-') {
        return Err(InputError::new(format!(
            "repository URL `{url}` starts with `-`, which git would read as an option; \
             give an https://, ssh:// or git:// URL"
        )));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InputError::new(format!(
            "repository URL {url:?} contains whitespace or control characters; give a plain clone URL"
        )));
    }
    let local_refused = |what: &str| {
        InputError::new(format!(
            "repository URL `{url}` is {what}, which is not allowed here: use an https://, ssh:// \
             or git:// URL (local repositories are only for tests, where the operator sets \
             `allow_local_repositories: true`)"
        ))
    };
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme_lc = scheme.to_ascii_lowercase();
        let scheme: &'static str = match scheme_lc.as_str() {
            "https" => "https",
            "ssh" | "git+ssh" | "ssh+git" => "ssh",
            "git" => "git",
            "file" => {
                return if allow_local {
                    Ok(RepoLocation::Local)
                } else {
                    Err(local_refused("a file:// URL"))
                };
            }
            "http" => {
                return Err(InputError::new(format!(
                    "repository URL `{url}` uses plain http; use https:// instead"
                )));
            }
            other => {
                return Err(InputError::new(format!(
                    "repository URL `{url}` uses the scheme `{other}`; allowed are https://, ssh:// \
                     and git:// (or scp-like user@host:path)"
                )));
            }
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let host = match hostport.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => hostport.split(':').next().unwrap_or_default(),
        };
        check_host_part(url, user, host)?;
        return Ok(RepoLocation::Remote {
            scheme,
            host: host.to_ascii_lowercase(),
        });
    }
    // scp-like: a `:` with no `/` before it (git's own rule).
    if let Some((before, path)) = url.split_once(':')
        && !before.contains('/')
    {
        if path.starts_with(':') {
            return Err(InputError::new(format!(
                "repository URL `{url}` uses git's `transport::address` syntax, which runs \
                 commands; give an https://, ssh:// or git:// URL"
            )));
        }
        let (user, host) = match before.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, before),
        };
        check_host_part(url, user, host)?;
        return Ok(RepoLocation::Remote {
            scheme: "ssh",
            host: host.to_ascii_lowercase(),
        });
    }
    if !allow_local {
        return Err(local_refused("a local path"));
    }
    if !url.starts_with('/') {
        return Err(InputError::new(format!(
            "repository path `{url}` must be absolute (or use a file:// URL)"
        )));
    }
    Ok(RepoLocation::Local)
}

fn check_host_part(url: &str, user: Option<&str>, host: &str) -> Result<(), InputError> {
    if user.is_some_and(|u| u.starts_with('-')) || host.starts_with('-') {
        return Err(InputError::new(format!(
            "repository URL `{url}`: a user or host name that starts with `-` would be read as an \
             option by ssh; give the real host"
        )));
    }
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !ok {
        return Err(InputError::new(format!(
            "repository URL `{url}` has no valid host name"
        )));
    }
    Ok(())
}

/// Checks a repository URL's host against the addresses a repository may
/// not point at unless `allow_internal`: loopback (`localhost` too),
/// link-local, unspecified and cloud metadata addresses, written in any form
/// git's resolver accepts (`127.1`, `0x7f000001`, `[::ffff:127.0.0.1]`).
/// Private networks are fine (self-hosted git servers live there).
pub fn check_repo_host(url: &str, host: &str, allow_internal: bool) -> Result<(), InputError> {
    if allow_internal {
        return Ok(());
    }
    let class = match classify_host(host) {
        Some(c) if c != AddressClass::Private => c,
        _ => return Ok(()),
    };
    Err(InputError::new(format!(
        "repository URL `{url}` points at a {} address ({host}), which the server does not allow: \
         use the repository's public or internal host name (an operator can allow it with \
         `allow_internal_repository_hosts: true`)",
        class.as_str()
    )))
}

/// Checks a git ref (branch, tag or commit) before it reaches `git checkout`.
pub fn check_git_ref(git_ref: &str) -> Result<(), InputError> {
    if git_ref.starts_with('-') {
        return Err(InputError::new(format!(
            "ref `{git_ref}` starts with `-`, which git would read as an option; give a branch, \
             tag or commit"
        )));
    }
    if git_ref.len() > 256 || git_ref.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InputError::new(format!(
            "ref {git_ref:?} is not a branch, tag or commit (no whitespace or control characters, \
             at most 256 bytes)"
        )));
    }
    Ok(())
}

/// Checks a Docker image reference (`[registry[:port]/]name[:tag][@digest]`).
pub fn check_image_ref(image: &str) -> Result<(), InputError> {
    let ok = image.len() <= 512
        && image
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(InputError::new(format!(
            "`{image}` is not an image reference: it must start with a letter or digit and use \
             only letters, digits and `. _ - / : @` (e.g. `debian:bookworm` or \
             `registry.example.com/team/app:1.2`)"
        )))
    }
}

/// Why an address is not an ordinary public one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`, `localhost`.
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// Cloud metadata services (`169.254.169.254`, `fd00:ec2::254`, their names).
    Metadata,
    /// RFC 1918, CGNAT `100.64.0.0/10`, unique local `fc00::/7`.
    Private,
    /// `0.0.0.0`, `::` (reaches this host).
    Unspecified,
    /// Multicast and broadcast.
    Multicast,
}

impl AddressClass {
    /// A word for messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "cloud metadata",
            AddressClass::Private => "private network",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
        }
    }
}

/// The cloud metadata address of AWS, GCP, Azure, OpenStack and others.
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// AWS's IPv6 metadata address.
pub const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// The class of `ip`, or `None` for an ordinary public address.
pub fn classify_ip(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            let seg = v6.segments();
            if v6 == METADATA_V6 {
                Some(AddressClass::Metadata)
            } else if v6.is_loopback() {
                Some(AddressClass::Loopback)
            } else if v6.is_unspecified() {
                Some(AddressClass::Unspecified)
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some(AddressClass::LinkLocal)
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some(AddressClass::Private)
            } else if v6.is_multicast() {
                Some(AddressClass::Multicast)
            } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
                // IPv4-compatible (deprecated) `::a.b.c.d`.
                classify_v4(Ipv4Addr::new(
                    (seg[6] >> 8) as u8,
                    seg[6] as u8,
                    (seg[7] >> 8) as u8,
                    seg[7] as u8,
                ))
            } else {
                None
            }
        }
    }
}

fn classify_v4(v4: Ipv4Addr) -> Option<AddressClass> {
    let o = v4.octets();
    if v4 == METADATA_V4 {
        Some(AddressClass::Metadata)
    } else if v4.is_loopback() {
        Some(AddressClass::Loopback)
    } else if v4.is_unspecified() || o[0] == 0 {
        Some(AddressClass::Unspecified)
    } else if v4.is_link_local() {
        Some(AddressClass::LinkLocal)
    } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        Some(AddressClass::Private)
    } else if v4.is_multicast() || v4.is_broadcast() {
        Some(AddressClass::Multicast)
    } else {
        None
    }
}

/// The class of a host as written in a URL or an allowlist: an IP literal
/// in any form the C resolver accepts, or a name that always means this
/// host or a metadata service. Other names are `None` (resolve them and
/// [`classify_ip`] the result).
pub fn classify_host(host: &str) -> Option<AddressClass> {
    let h = host
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if let Some(ip) = parse_ip_lenient(&h) {
        return classify_ip(ip);
    }
    if h == "localhost" || h.ends_with(".localhost") {
        return Some(AddressClass::Loopback);
    }
    if matches!(
        h.as_str(),
        "metadata" | "metadata.google.internal" | "instance-data" | "instance-data.ec2.internal"
    ) {
        return Some(AddressClass::Metadata);
    }
    None
}

/// An IP literal: IPv6, or IPv4 as `inet_aton` reads it (1 to 4 parts,
/// each decimal, octal with a leading `0`, or hex with `0x`), so `127.1`
/// and `0x7f000001` are caught too.
pub fn parse_ip_lenient(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let nums: Vec<u64> = parts
        .iter()
        .map(|p| {
            let p = p.to_ascii_lowercase();
            if let Some(hex) = p.strip_prefix("0x") {
                u64::from_str_radix(hex, 16).ok()
            } else if p.len() > 1 && p.starts_with('0') {
                u64::from_str_radix(&p[1..], 8).ok()
            } else if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) {
                p.parse().ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    let (head, last) = nums.split_at(nums.len() - 1);
    if head.iter().any(|n| *n > 255) {
        return None;
    }
    let last_bits = 8 * (4 - head.len() as u32);
    if last[0] >= 1u64 << last_bits {
        return None;
    }
    let mut value: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        value |= n << (24 - 8 * i as u32);
    }
    value |= last[0];
    Some(IpAddr::V4(Ipv4Addr::from(value as u32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s9_repo_urls() {
        for ok in [
            "https://github.com/a/b.git",
            "ssh://git@host.example:2222/a/b",
            "git://host/a",
            "git@github.com:a/b.git",
            "host.example:a/b",
            "https://[2001:db8::1]/x",
        ] {
            assert!(
                matches!(check_repo_url(ok, false), Ok(RepoLocation::Remote { .. })),
                "{ok}"
            );
        }
        for bad in [
            "-uhttps://x/y",
            "--upload-pack=touch /tmp/x",
            "file:///etc",
            "/srv/git/repo",
            "relative/path",
            "http://example.com/a",
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "fd::3",
            "ssh://-oProxyCommand=x/y",
            "-oProxyCommand=x:y",
            "git@-host:a",
            "ftp://h/x",
            "https://",
            "",
        ] {
            assert!(check_repo_url(bad, false).is_err(), "{bad}");
        }
        assert_eq!(
            check_repo_url("file:///srv/r", true),
            Ok(RepoLocation::Local)
        );
        assert_eq!(check_repo_url("/srv/r", true), Ok(RepoLocation::Local));
        assert!(check_repo_url("-/srv/r", true).is_err());
        assert!(check_repo_url("srv/r", true).is_err());
        let e = check_repo_url("file:///etc", false).unwrap_err();
        assert!(e.message().contains("allow_local_repositories"), "{e}");
    }

    #[test]
    fn s9_refs_and_images() {
        check_git_ref("main").unwrap();
        check_git_ref("v1.2.3").unwrap();
        check_git_ref("0123abcd").unwrap();
        check_git_ref("feature/x").unwrap();
        assert!(check_git_ref("--pathspec-from-file=/etc/hostname").is_err());
        assert!(check_git_ref("-b").is_err());
        assert!(check_git_ref("a b").is_err());
        check_image_ref("debian:bookworm").unwrap();
        check_image_ref("reg.example:5000/t/app@sha256:0123").unwrap();
        assert!(check_image_ref("--privileged").is_err());
        assert!(check_image_ref("a b").is_err());
        assert!(check_image_ref("").is_err());
    }

    #[test]
    fn s11_addresses() {
        let c = |h: &str| classify_host(h);
        assert_eq!(c("127.0.0.1"), Some(AddressClass::Loopback));
        assert_eq!(c("127.1"), Some(AddressClass::Loopback));
        assert_eq!(c("0x7f000001"), Some(AddressClass::Loopback));
        assert_eq!(c("2130706433"), Some(AddressClass::Loopback));
        assert_eq!(c("0177.0.0.1"), Some(AddressClass::Loopback));
        assert_eq!(c("localhost"), Some(AddressClass::Loopback));
        assert_eq!(c("a.localhost."), Some(AddressClass::Loopback));
        assert_eq!(c("[::1]"), Some(AddressClass::Loopback));
        assert_eq!(c("::ffff:127.0.0.1"), Some(AddressClass::Loopback));
        assert_eq!(c("169.254.169.254"), Some(AddressClass::Metadata));
        assert_eq!(c("fd00:ec2::254"), Some(AddressClass::Metadata));
        assert_eq!(c("metadata.google.internal"), Some(AddressClass::Metadata));
        assert_eq!(c("169.254.1.1"), Some(AddressClass::LinkLocal));
        assert_eq!(c("fe80::1"), Some(AddressClass::LinkLocal));
        assert_eq!(c("10.1.2.3"), Some(AddressClass::Private));
        assert_eq!(c("172.17.0.1"), Some(AddressClass::Private));
        assert_eq!(c("fd12::1"), Some(AddressClass::Private));
        assert_eq!(c("0.0.0.0"), Some(AddressClass::Unspecified));
        assert_eq!(c("93.184.216.34"), None);
        assert_eq!(c("example.com"), None);
        assert_eq!(c("1.2.3.4.5"), None);
        assert!(check_repo_host("u", "169.254.169.254", false).is_err());
        assert!(check_repo_host("u", "localhost", false).is_err());
        assert!(check_repo_host("u", "10.0.0.5", false).is_ok());
        assert!(check_repo_host("u", "localhost", true).is_ok());
    }
}
