//! Token checks: static tokens from configuration (token -> allowed services and role) and
//! JWTs (HS256 with a shared secret, RS256 with a public key; `exp` required; a `services`
//! claim listing the services, `"*"` for all; an optional `role`). Tokens never reach logs.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Subscribe to the services it lists.
    Subscriber,
    /// Subscribe to the services it lists and publish observations to them.
    Publisher,
    /// Subscribe to everything and use the admin API.
    Admin,
}

/// A static token's grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Services it may subscribe to; `None`: all.
    pub services: Option<Vec<String>>,
    /// Its role.
    pub role: Role,
}

/// The outcome of a token check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthDecision {
    /// Go ahead.
    Allowed(Role),
    /// Auth is on and no token was given (401; 499 on REST).
    Missing,
    /// The token is invalid, expired or not allowed for this service (403; 498 on REST).
    Forbidden(String),
}

/// The configured checks; `Auth::default()` is auth off.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: HashMap<String, Grant>,
    jwt: Vec<(DecodingKey, Algorithm)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens or keys.
        write!(
            formatter,
            "Auth {{ {} static tokens, {} JWT keys }}",
            self.tokens.len(),
            self.jwt.len()
        )
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    services: Option<ServicesClaim>,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ServicesClaim {
    One(String),
    Many(Vec<String>),
}

impl Auth {
    /// Auth with static tokens and JWT keys.
    pub fn new(
        tokens: HashMap<String, Grant>,
        hs256_secret: Option<&[u8]>,
        rs256_public_pem: Option<&[u8]>,
    ) -> Result<Auth, String> {
        let mut jwt = Vec::new();
        if let Some(secret) = hs256_secret {
            jwt.push((DecodingKey::from_secret(secret), Algorithm::HS256));
        }
        if let Some(pem) = rs256_public_pem {
            let key =
                DecodingKey::from_rsa_pem(pem).map_err(|err| format!("RS256 public key: {err}"))?;
            jwt.push((key, Algorithm::RS256));
        }
        Ok(Auth { tokens, jwt })
    }

    /// Whether any check is configured.
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.jwt.is_empty()
    }

    /// Checks a token for a service (`None`: any service, e.g. the admin API checks the role).
    pub fn check(&self, token: Option<&str>, service: Option<&str>) -> AuthDecision {
        if !self.is_enabled() {
            return AuthDecision::Allowed(Role::Admin);
        }
        let Some(token) = token.map(str::trim).filter(|token| !token.is_empty()) else {
            return AuthDecision::Missing;
        };
        let grant = match self.tokens.get(token) {
            Some(grant) => grant.clone(),
            None => match self.check_jwt(token) {
                Ok(grant) => grant,
                Err(reason) => return AuthDecision::Forbidden(reason),
            },
        };
        let allowed = match (&grant.services, service) {
            (None, _) | (_, None) => true,
            (Some(services), Some(service)) => services
                .iter()
                .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(service)),
        };
        if allowed || grant.role == Role::Admin {
            AuthDecision::Allowed(grant.role)
        } else {
            AuthDecision::Forbidden("the token is not allowed to see this service".to_owned())
        }
    }

    /// Checks a token's right to publish to a service: a publisher's token that lists it, or
    /// an admin's.
    pub fn check_publish(&self, token: Option<&str>, service: &str) -> AuthDecision {
        match self.check(token, Some(service)) {
            AuthDecision::Allowed(role @ (Role::Publisher | Role::Admin)) => {
                AuthDecision::Allowed(role)
            }
            AuthDecision::Allowed(Role::Subscriber) => AuthDecision::Forbidden(
                "the token may subscribe but not publish (it needs the publisher role)".to_owned(),
            ),
            other => other,
        }
    }

    fn check_jwt(&self, token: &str) -> Result<Grant, String> {
        if self.jwt.is_empty() || token.split('.').count() != 3 {
            return Err("invalid token".to_owned());
        }
        let mut last_error = "invalid token".to_owned();
        for (key, algorithm) in &self.jwt {
            let mut validation = Validation::new(*algorithm);
            validation.set_required_spec_claims(&["exp"]);
            // A token not valid yet is refused like an expired one.
            validation.validate_nbf = true;
            validation.validate_aud = false;
            match decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    let services = match data.claims.services {
                        None => Some(Vec::new()),
                        Some(ServicesClaim::One(service)) => Some(vec![service]),
                        Some(ServicesClaim::Many(services)) => Some(services),
                    };
                    let role = match data.claims.role.as_deref() {
                        Some("admin") => Role::Admin,
                        Some("publisher") => Role::Publisher,
                        _ => Role::Subscriber,
                    };
                    return Ok(Grant { services, role });
                }
                Err(err) => {
                    last_error = match err.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                            "the token has expired".to_owned()
                        }
                        _ => "invalid token".to_owned(),
                    };
                }
            }
        }
        Err(last_error)
    }
}

/// Parses `FEATURESTREAM_TOKENS`: `token=service1|service2` or `token=*`, optionally `:admin`,
/// entries separated by commas (`abc=vehicles,ops=*:admin`).
pub fn parse_static_tokens(text: &str) -> Result<HashMap<String, Grant>, String> {
    let mut tokens = HashMap::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (token, rest) = entry
            .split_once('=')
            .ok_or("each entry is token=services[:role]")?;
        let (services, role) = match rest.rsplit_once(':') {
            Some((services, "admin")) => (services, Role::Admin),
            Some((services, "subscriber")) => (services, Role::Subscriber),
            Some((services, "publisher")) => (services, Role::Publisher),
            Some((_, other)) => {
                return Err(format!(
                    "unknown role \"{other}\" (subscriber, publisher or admin)"
                ));
            }
            None => (rest, Role::Subscriber),
        };
        if token.trim().len() < 8 {
            return Err("tokens must be at least 8 characters".to_owned());
        }
        let services = if services.trim() == "*" {
            None
        } else {
            Some(
                services
                    .split('|')
                    .map(|service| service.trim().to_owned())
                    .filter(|service| !service.is_empty())
                    .collect(),
            )
        };
        tokens.insert(token.trim().to_owned(), Grant { services, role });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn jwt(secret: &[u8], claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn static_tokens_grant_services_and_roles() {
        let tokens = parse_static_tokens("subscriber1=vehicles|trails, operator1=*:admin").unwrap();
        let auth = Auth::new(tokens, None, None).unwrap();
        assert_eq!(
            auth.check(Some("subscriber1"), Some("vehicles")),
            AuthDecision::Allowed(Role::Subscriber)
        );
        assert!(matches!(
            auth.check(Some("subscriber1"), Some("other")),
            AuthDecision::Forbidden(_)
        ));
        assert_eq!(
            auth.check(Some("operator1"), Some("other")),
            AuthDecision::Allowed(Role::Admin)
        );
        assert_eq!(auth.check(None, Some("vehicles")), AuthDecision::Missing);
        assert!(matches!(
            auth.check(Some("nope-nope"), Some("vehicles")),
            AuthDecision::Forbidden(_)
        ));
        assert!(parse_static_tokens("short=x").is_err());
        assert!(
            format!("{auth:?}").contains("2 static tokens")
                && !format!("{auth:?}").contains("subscriber1")
        );
    }

    #[test]
    fn jwts_need_a_valid_signature_an_unexpired_exp_and_the_service() {
        let secret = b"a shared secret of enough length";
        let auth = Auth::new(HashMap::new(), Some(secret), None).unwrap();
        let future = 4_102_444_800_i64; // 2100-01-01
        let good = jwt(
            secret,
            serde_json::json!({"exp": future, "services": ["vehicles"]}),
        );
        assert_eq!(
            auth.check(Some(&good), Some("vehicles")),
            AuthDecision::Allowed(Role::Subscriber)
        );
        assert!(matches!(
            auth.check(Some(&good), Some("trails")),
            AuthDecision::Forbidden(_)
        ));
        let expired = jwt(
            secret,
            serde_json::json!({"exp": 1_000_000_000, "services": "*"}),
        );
        assert_eq!(
            auth.check(Some(&expired), Some("vehicles")),
            AuthDecision::Forbidden("the token has expired".into())
        );
        let forged = jwt(
            b"another secret, not the server's",
            serde_json::json!({"exp": future, "services": "*"}),
        );
        assert_eq!(
            auth.check(Some(&forged), Some("vehicles")),
            AuthDecision::Forbidden("invalid token".into())
        );
        let no_exp = jwt(secret, serde_json::json!({"services": "*"}));
        assert!(matches!(
            auth.check(Some(&no_exp), Some("vehicles")),
            AuthDecision::Forbidden(_)
        ));
        let admin = jwt(secret, serde_json::json!({"exp": future, "role": "admin"}));
        assert_eq!(
            auth.check(Some(&admin), Some("trails")),
            AuthDecision::Allowed(Role::Admin)
        );
    }

    #[test]
    fn rs256_jwts_are_checked_with_the_public_key() {
        // A key pair made for these tests only (tests/keys).
        let private = include_bytes!("../tests/keys/rs256-test-private.pem");
        let public = include_bytes!("../tests/keys/rs256-test-public.pem");
        let auth = Auth::new(HashMap::new(), None, Some(public)).unwrap();
        let claims = serde_json::json!({"exp": 4_102_444_800_i64, "services": ["vehicles"]});
        let token = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(private).unwrap(),
        )
        .unwrap();
        assert_eq!(
            auth.check(Some(&token), Some("vehicles")),
            AuthDecision::Allowed(Role::Subscriber)
        );
        let hs = jwt(b"a shared secret of enough length", claims);
        assert!(matches!(
            auth.check(Some(&hs), Some("vehicles")),
            AuthDecision::Forbidden(_)
        ));
    }
}
