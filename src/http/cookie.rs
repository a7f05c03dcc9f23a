//! The browser session cookie (seed 001, done right): a random 128-bit id, HttpOnly,
//! SameSite=Lax, Secure when served over TLS. Several tabs share it; each tab's socket is its
//! own connection of that browser session.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse};
use rand::RngCore;

/// The cookie's name.
pub const COOKIE_NAME: &str = "featurestream_session";

/// The request's browser session: the cookie it sent, or a new id to set.
pub struct BrowserSession {
    /// The id.
    pub id: String,
    /// Whether the response must set the cookie.
    pub is_new: bool,
}

fn valid(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// The request's browser session, or a new one.
pub fn browser_session(req: &HttpRequest) -> BrowserSession {
    match req
        .cookie(COOKIE_NAME)
        .map(|cookie| cookie.value().to_owned())
        .filter(|id| valid(id))
    {
        Some(id) => BrowserSession { id, is_new: false },
        None => {
            let mut bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut bytes);
            BrowserSession {
                id: bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
                is_new: true,
            }
        }
    }
}

/// Sets the cookie on a response when the session is new.
pub fn remember(req: &HttpRequest, response: &mut HttpResponse, session: &BrowserSession) {
    if !session.is_new {
        return;
    }
    let secure = req.connection_info().scheme().eq_ignore_ascii_case("https");
    let cookie = Cookie::build(COOKIE_NAME, session.id.clone())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .finish();
    let _ = response.add_cookie(&cookie);
}
