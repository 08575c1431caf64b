//! Bearer-token auth with two roles. Admin services accept only the admin token; the
//! daemon-facing services accept either and record which role called, so a method can refuse
//! a daemon (`PERMISSION_DENIED`). Tokens are compared in constant time and never logged.

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::config::AuthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Daemon,
}

/// The accepted tokens: the current one of each role and, during a rotation, the previous.
#[derive(Clone)]
pub struct Tokens {
    admin: Vec<Vec<u8>>,
    daemon: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens([redacted])")
    }
}

impl Tokens {
    pub fn new(config: &AuthConfig) -> Self {
        let bytes = |current: &deskmail_config::Secret, previous: &Option<deskmail_config::Secret>| {
            std::iter::once(current).chain(previous).map(|t| t.expose().as_bytes().to_vec()).collect()
        };
        Self {
            admin: bytes(&config.admin_token, &config.previous_admin_token),
            daemon: bytes(&config.daemon_token, &config.previous_daemon_token),
        }
    }

    fn role_of<T>(&self, request: &Request<T>) -> Result<Role, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let value = header.to_str().map_err(|_| Status::unauthenticated("authorization is not text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?
            .trim()
            .as_bytes();
        // Every token is compared, so the time taken does not tell which one matched.
        let matches =
            |list: &[Vec<u8>]| list.iter().fold(0u8, |acc, t| acc | token.ct_eq(t).unwrap_u8()) == 1;
        let (admin, daemon) = (matches(&self.admin), matches(&self.daemon));
        if admin {
            Ok(Role::Admin)
        } else if daemon {
            Ok(Role::Daemon)
        } else {
            Err(Status::unauthenticated("invalid token"))
        }
    }

    /// Interceptor for admin-only services.
    pub fn admin_only(&self) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let tokens = self.clone();
        move |mut request: Request<()>| match tokens.role_of(&request)? {
            Role::Admin => {
                request.extensions_mut().insert(Role::Admin);
                Ok(request)
            }
            Role::Daemon => Err(Status::permission_denied("this call needs the admin token")),
        }
    }

    /// Interceptor for services both roles use; the role goes into the request extensions.
    pub fn any_role(&self) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let tokens = self.clone();
        move |mut request: Request<()>| {
            let role = tokens.role_of(&request)?;
            request.extensions_mut().insert(role);
            Ok(request)
        }
    }
}

/// The caller's role, as the interceptor recorded it.
pub fn role<T>(request: &Request<T>) -> Result<Role, Status> {
    request.extensions().get::<Role>().copied().ok_or_else(|| Status::unauthenticated("no role"))
}

/// Refuses a daemon on an admin call.
pub fn require_admin<T>(request: &Request<T>) -> Result<(), Status> {
    match role(request)? {
        Role::Admin => Ok(()),
        Role::Daemon => Err(Status::permission_denied("this call needs the admin token")),
    }
}
