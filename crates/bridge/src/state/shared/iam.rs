//! IAM authentication to the store (`STATE_AUTH=iam`): Memorystore takes an OAuth access
//! token of the service account as the password, about an hour long. A connection
//! already open stays authenticated after its token expires; a new one needs a token
//! valid now.
//!
//! The tokens come from Application Default Credentials through the official
//! `google-cloud-auth` crate: on Cloud Run the metadata server (the crate itself honours
//! `GCE_METADATA_HOST`, read from the process environment, not from `.env`), elsewhere
//! `GOOGLE_APPLICATION_CREDENTIALS` or gcloud's. The crate keeps the token in a cache
//! that a task of its own refreshes before it expires (four minutes before; every ten
//! seconds when the token it got is shorter than that), so asking it is cheap.
//!
//! The `redis` crate asks [`IamTokens`] for credentials each time it opens a
//! connection (the connection manager's first and every reconnection), so each new
//! connection authenticates with the token valid at that moment. It also reads the
//! rest of the stream to authenticate open connections again; open connections need
//! nothing more, so after the first token the stream waits forever.

use crate::config::Secret;
use futures_util::{stream, Stream, StreamExt};
use google_cloud_auth::credentials::{AccessTokenCredentials, Builder};
use redis::{BasicAuth, ErrorKind, RedisError, RedisResult};
use std::pin::Pin;

/// The scope Memorystore's IAM authentication accepts.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The user of a URL that names none: Memorystore's IAM users are authenticated as
/// `default` by their token alone.
const DEFAULT_USER: &str = "default";

/// Why the tokens cannot be had at all (no Application Default Credentials).
#[derive(Debug, thiserror::Error)]
#[error("Application Default Credentials cannot be used for STATE_AUTH=iam: {0}")]
pub struct NoCredentials(String);

/// Where new connections get their password: the service account's access token.
#[derive(Clone)]
pub struct IamTokens {
    credentials: AccessTokenCredentials,
    user: String,
}

impl std::fmt::Debug for IamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamTokens")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl IamTokens {
    /// Tokens from Application Default Credentials, for `user` (the URL's, if it names
    /// one). Starts the crate's refresh task: call within the runtime.
    pub fn from_adc(user: Option<&str>) -> Result<Self, NoCredentials> {
        let credentials = Builder::default()
            .with_scopes([SCOPE])
            .build_access_token_credentials()
            .map_err(|error| NoCredentials(error.to_string()))?;
        Ok(Self {
            credentials,
            user: user
                .filter(|u| !u.is_empty())
                .unwrap_or(DEFAULT_USER)
                .to_owned(),
        })
    }

    /// The user connections authenticate as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The token valid now (the crate's cached one, or a new one if it expired).
    pub async fn current(&self) -> Result<Secret, RedisError> {
        match self.credentials.access_token().await {
            Ok(token) => Ok(Secret::new(token.token)),
            // The crate's error names the source (the metadata server, a file), never
            // a token.
            Err(error) => Err(RedisError::from((
                ErrorKind::AuthenticationFailed,
                "no IAM access token",
                error.to_string(),
            ))),
        }
    }

    async fn credentials(self) -> RedisResult<BasicAuth> {
        let token = self.current().await?;
        Ok(BasicAuth::new(self.user, token.expose().to_owned()))
    }
}

impl redis::StreamingCredentialsProvider for IamTokens {
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        // The first item authenticates a new connection; the stream then stays open
        // without another, as an open connection needs none (an ended stream would
        // be logged as an error by the crate).
        Box::pin(stream::once(self.clone().credentials()).chain(stream::pending()))
    }
}
