//! OAuth through yup-oauth2: a service-account flow whose `token_uri` comes from the key file, so the
//! same code talks to Google or to the emulator.

use super::DriveError;
use google_drive3::api::Scope;
use google_drive3::hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use google_drive3::hyper_util::client::legacy::connect::HttpConnector;
use google_drive3::yup_oauth2::{self, authenticator::Authenticator};
use std::path::Path;

/// A cloneable token source shared by the hub and the media downloads.
#[derive(Clone)]
pub struct Auth {
    pub(super) inner: Authenticator<HttpsConnector<HttpConnector>>,
}

/// An https-or-http connector with native roots, HTTP/1 and HTTP/2.
pub fn connector() -> Result<HttpsConnector<HttpConnector>, DriveError> {
    Ok(HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| DriveError::Auth(format!("no TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build())
}

impl Auth {
    /// Reads the key file and builds the service-account authenticator.
    pub async fn service_account(
        key_path: &Path,
        subject: Option<String>,
        connector: HttpsConnector<HttpConnector>,
    ) -> Result<Auth, DriveError> {
        let key = yup_oauth2::read_service_account_key(key_path)
            .await
            .map_err(|e| DriveError::Auth(format!("cannot read service-account key {}: {e}", key_path.display())))?;
        let client = google_drive3::hyper_util::client::legacy::Client::builder(
            google_drive3::hyper_util::rt::TokioExecutor::new(),
        )
        .build::<_, String>(connector);
        let mut builder = yup_oauth2::ServiceAccountAuthenticator::with_client(
            key,
            yup_oauth2::CustomHyperClientBuilder::from(client),
        );
        if let Some(s) = subject {
            builder = builder.subject(s);
        }
        let inner = builder.build().await.map_err(|e| DriveError::Auth(e.to_string()))?;
        Ok(Auth { inner })
    }

    /// A valid access token (refreshed ahead of expiry by yup-oauth2).
    pub async fn token(&self) -> Result<String, DriveError> {
        let t = self.inner.token(&[Scope::Readonly.as_ref()]).await.map_err(|e| DriveError::Auth(e.to_string()))?;
        t.token().map(str::to_owned).ok_or_else(|| DriveError::Auth("empty token".into()))
    }
}
