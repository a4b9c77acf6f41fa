//! Who may use the HTTP surface, and protection of its forms.
//!
//! The rule (see `docs/operations.md`):
//!
//! * **No token** (`CAIRN_HTTP_TOKEN` unset): allowed only on a loopback
//!   address, checked when the server starts ([`super::HttpConfig::new`]).
//!   Every request must then name a loopback host in its `Host` header
//!   (`127.x.x.x`, `[::1]`, `localhost`): a page on another site whose name
//!   an attacker re-points at 127.0.0.1 (DNS rebinding) would otherwise be
//!   same-origin with the dashboard and could read it.
//! * **A token**: every request except `/healthz`, `/login` and the style
//!   sheet must carry it, as `Authorization: Bearer <token>` (Prometheus,
//!   scripts) or as the session cookie `/login` sets (browsers). The cookie
//!   holds a SHA-256 of the token, not the token, and is `HttpOnly` and
//!   `SameSite=Strict`.
//!
//! Every form that changes something (retry, cancel) carries a CSRF token:
//! 32 random bytes drawn when the server starts, compared in constant time.
//! A page of another origin cannot read it (same-origin policy; the `Host`
//! check above closes the rebinding hole), so it cannot forge the form.
//! Tokens are compared in constant time and never logged or shown.

use std::io::Read;

use sha2::{Digest, Sha256};

/// The cookie a browser keeps after `/login`.
pub const SESSION_COOKIE: &str = "cairn_session";

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A token is required and none (or a wrong one) came with the request.
    NoCredentials,
    /// Without a token, the `Host` header must name the loopback interface.
    ForeignHost,
}

/// The access rule of one server.
#[derive(Clone)]
pub struct Access {
    token: Option<String>,
    session: Option<String>,
    csrf: String,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Access {
    /// The rule for a server with `token` (or none), with a fresh CSRF token.
    ///
    /// # Errors
    ///
    /// When the system's random source cannot be read.
    pub fn new(token: Option<String>) -> std::io::Result<Self> {
        let session = token.as_deref().map(session_value);
        Ok(Access {
            token,
            session,
            csrf: hex::encode(random_bytes::<32>()?),
        })
    }

    /// Whether a token is required.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a request's credentials (`authorization` and `cookie` header
    /// values) or, without a token, its `host` header.
    pub fn check(
        &self,
        host: Option<&str>,
        authorization: Option<&str>,
        cookies: Option<&str>,
    ) -> Result<(), Denied> {
        match (&self.token, &self.session) {
            (Some(token), Some(session)) => {
                let bearer = authorization
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .is_some_and(|given| constant_time_eq(given.trim(), token));
                let cookie = cookies
                    .and_then(|c| cookie(c, SESSION_COOKIE))
                    .is_some_and(|given| constant_time_eq(given, session));
                if bearer || cookie {
                    Ok(())
                } else {
                    Err(Denied::NoCredentials)
                }
            }
            _ => {
                if host.is_some_and(is_loopback_host) {
                    Ok(())
                } else {
                    Err(Denied::ForeignHost)
                }
            }
        }
    }

    /// Whether `given` (from `/login`) is the token.
    pub fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(given.trim(), t))
    }

    /// The `Set-Cookie` value that logs a browser in.
    pub fn session_cookie(&self) -> Option<String> {
        self.session
            .as_ref()
            .map(|s| format!("{SESSION_COOKIE}={s}; Path=/; HttpOnly; SameSite=Strict"))
    }

    /// The CSRF token forms carry.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether a form's CSRF field is this server's token.
    pub fn csrf_matches(&self, given: &str) -> bool {
        constant_time_eq(given, &self.csrf)
    }
}

/// The session cookie's value for `token`: a hash, so the cookie jar never
/// holds the token itself.
fn session_value(token: &str) -> String {
    hex::encode(Sha256::digest(format!("cairn-session\0{token}").as_bytes()))
}

fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Equal strings, in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Whether a `Host` header names the loopback interface: `localhost`, an
/// address in 127.0.0.0/8, or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised_and_others_are_not() {
        for ok in [
            "127.0.0.1:8080",
            "127.1.2.3",
            "localhost:1",
            "LOCALHOST",
            "[::1]:9000",
            "[::1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::1]evil",
            "10.0.0.1:80",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn without_a_token_only_loopback_host_headers_pass() -> std::io::Result<()> {
        let access = Access::new(None)?;
        assert_eq!(access.check(Some("127.0.0.1:1"), None, None), Ok(()));
        assert_eq!(
            access.check(Some("rebound.example:1"), None, None),
            Err(Denied::ForeignHost)
        );
        assert_eq!(access.check(None, None, None), Err(Denied::ForeignHost));
        Ok(())
    }

    #[test]
    fn with_a_token_bearer_or_session_cookie_is_required() -> std::io::Result<()> {
        let access = Access::new(Some("s3cret".into()))?;
        assert_eq!(
            access.check(Some("localhost"), None, None),
            Err(Denied::NoCredentials)
        );
        assert_eq!(access.check(None, Some("Bearer s3cret"), None), Ok(()));
        assert_eq!(
            access.check(None, Some("Bearer wrong!"), None),
            Err(Denied::NoCredentials)
        );
        let set = access.session_cookie().unwrap();
        assert!(
            !set.contains("s3cret"),
            "the cookie never holds the token: {set}"
        );
        let value = set.split(';').next().unwrap();
        assert_eq!(
            access.check(None, None, Some(&format!("a=b; {value}"))),
            Ok(())
        );
        assert_eq!(
            access.check(None, None, Some("cairn_session=00")),
            Err(Denied::NoCredentials)
        );
        Ok(())
    }

    #[test]
    fn csrf_tokens_differ_per_server_and_must_match() -> std::io::Result<()> {
        let (a, b) = (Access::new(None)?, Access::new(None)?);
        assert_ne!(a.csrf(), b.csrf());
        assert!(a.csrf_matches(a.csrf()));
        assert!(!a.csrf_matches(b.csrf()));
        assert!(!a.csrf_matches(""));
        Ok(())
    }
}
