//! OAuth2: trading a refresh token for an access token at the provider's token endpoint
//! (RFC 6749 section 6), with the `oauth2` crate. A refused refresh token (`invalid_grant`)
//! is [`StatusReason::TokenExpired`](deskmail_core::StatusReason), not a retry loop; a
//! provider that rotates refresh tokens hands back the new one, which the caller must store.

use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{ClientId, ClientSecret, RefreshToken, RequestTokenError, TokenResponse, TokenUrl};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{ConnError, redact};

/// What is needed to refresh: the provider's token URL and the app's credentials.
#[derive(Clone)]
pub struct OAuth2Settings {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub refresh_token: SecretString,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for OAuth2Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Settings")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A fresh access token.
pub struct AccessToken {
    pub access_token: SecretString,
    /// How long the provider says it lives, when it says.
    pub expires_in: Option<Duration>,
    /// A rotated refresh token, when the provider issued one: store it, or the box dies
    /// when the old one is retired.
    pub new_refresh_token: Option<SecretString>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Asks the token endpoint for an access token, within `timeout`.
pub async fn refresh_access_token(
    settings: &OAuth2Settings,
    timeout: Duration,
) -> Result<AccessToken, ConnError> {
    let secrets = [settings.refresh_token.expose_secret()];
    let token_url = TokenUrl::new(settings.token_url.clone()).map_err(|e| ConnError::Token {
        detail: format!("token_url {:?} is not a URL: {e}", settings.token_url),
        expired: false,
        transient: false,
    })?;
    let mut client = BasicClient::new(ClientId::new(settings.client_id.clone())).set_token_uri(token_url);
    if let Some(secret) = &settings.client_secret {
        client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
    }
    // No redirects: a token endpoint that redirects could forward the secrets elsewhere.
    let http = oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| ConnError::Token {
            detail: format!("HTTP client: {e}"),
            expired: false,
            transient: false,
        })?;
    let refresh = RefreshToken::new(settings.refresh_token.expose_secret().to_owned());
    let mut request = client.exchange_refresh_token(&refresh);
    for scope in &settings.scopes {
        request = request.add_scope(oauth2::Scope::new(scope.clone()));
    }
    match request.request_async(&http).await {
        Ok(token) => Ok(AccessToken {
            access_token: SecretString::from(token.access_token().secret().clone()),
            expires_in: token.expires_in(),
            new_refresh_token: token
                .refresh_token()
                .filter(|t| t.secret() != settings.refresh_token.expose_secret())
                .map(|t| SecretString::from(t.secret().clone())),
        }),
        Err(RequestTokenError::ServerResponse(response)) => {
            let expired = matches!(response.error(), BasicErrorResponseType::InvalidGrant);
            let text = match response.error_description() {
                Some(d) => format!("{}: {d}", response.error()),
                None => response.error().to_string(),
            };
            Err(ConnError::Token { detail: redact(&text, &secrets), expired, transient: false })
        }
        Err(RequestTokenError::Request(e)) => Err(ConnError::Token {
            detail: redact(&format!("cannot reach {}: {e}", settings.token_url), &secrets),
            expired: false,
            transient: true,
        }),
        Err(e) => Err(ConnError::Token {
            detail: redact(&format!("unexpected answer from {}: {e}", settings.token_url), &secrets),
            expired: false,
            transient: false,
        }),
    }
}
