//! OAuth: the token endpoint, access-token expiry and the 401 envelope.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_flow_expiry_and_401_envelope() {
    let ctx = start(EmulatorConfig { token_lifetime_secs: 2, ..Default::default() }).await;
    // No token, and a made-up token: 401 in Google's envelope.
    for auth in [None, Some("Bearer ya29.not-a-token")] {
        let mut req = ctx.http.get(format!("{}drive/v3/files", ctx.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(envelope(&v), (401, "authError".into(), "UNAUTHENTICATED".into()));
        assert_eq!(v["error"]["errors"][0]["domain"], "global");
    }
    // A forged assertion is refused by the token endpoint.
    let (status, v) = ctx
        .token_request(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", "eyJhbGciOiJSUzI1NiJ9.e30.AAAA"),
        ])
        .await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));
    // The hub keeps working across several token lifetimes (yup-oauth2 refetches expired tokens).
    for _ in 0..4 {
        let (_, about) = ctx.hub.about().get().param("fields", "user(emailAddress),kind").doit().await.expect("about");
        assert!(about.user.and_then(|u| u.email_address).unwrap_or_default().contains("emulator"));
        tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    }
    let stats = ctx.control_get("stats").await;
    assert!(stats["requests"]["token 200"].as_u64().unwrap_or(0) >= 2, "{stats}");
    // Refresh-token grant: a 1-second token works, then expires into a 401.
    ctx.control("faults", json!({"token_lifetime_secs": 1})).await;
    let minted = ctx.control("refresh_token", json!({})).await;
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", minted["refresh_token"].as_str().unwrap()),
        ("client_id", minted["client_id"].as_str().unwrap()),
        ("client_secret", minted["client_secret"].as_str().unwrap()),
    ];
    let (_, tok) = ctx.token_request(&form).await;
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 1);
    let url = format!("{}drive/v3/about?fields=kind", ctx.base);
    let bearer = tok["access_token"].as_str().unwrap().to_string();
    assert_eq!(ctx.http.get(&url).bearer_auth(&bearer).send().await.unwrap().status().as_u16(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let resp = ctx.http.get(&url).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    ctx.emu.shutdown().await;
}

/// The installed-app sign-in as Google runs it: the consent endpoint redirects to the loopback
/// `redirect_uri` with a one-time code; the exchange needs the same client, redirect URI and the PKCE
/// verifier of the challenge; a code is gone after one exchange; the refresh token it gave works until
/// it is revoked at `/revoke`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_app_code_grant_checks_pkce_and_is_one_time() {
    use base64::Engine;
    let ctx = start(EmulatorConfig::default()).await;
    let client = ctx.control("oauth_client", json!({})).await;
    let (id, secret) =
        (client["installed"]["client_id"].as_str().unwrap(), client["installed"]["client_secret"].as_str().unwrap());
    let auth_uri = client["installed"]["auth_uri"].as_str().unwrap();
    let verifier = "a-verifier-of-at-least-forty-three-characters-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()));
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let code_for = |redirect: &'static str| {
        let url = format!(
            "{auth_uri}?client_id={id}&redirect_uri={redirect}&response_type=code&scope=https://www.googleapis.com/auth/drive.readonly&state=s1&code_challenge={challenge}&code_challenge_method=S256&access_type=offline"
        );
        let http = no_redirects.clone();
        async move {
            let resp = http.get(url).send().await.unwrap();
            if resp.status() != 302 {
                return Err(resp.status().as_u16());
            }
            let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
            let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
            assert_eq!(q["state"], "s1");
            assert!(location.as_str().starts_with(redirect));
            Ok(q["code"].clone())
        }
    };
    assert_eq!(code_for("https://example.com/").await, Err(400), "a non-loopback redirect URI is refused");
    let redirect = "http://127.0.0.1:4567/";
    let exchange = |code: String, verifier: &'static str| {
        let pairs = [
            ("grant_type", "authorization_code".to_string()),
            ("code", code),
            ("client_id", id.to_string()),
            ("client_secret", secret.to_string()),
            ("redirect_uri", redirect.to_string()),
            ("code_verifier", verifier.to_string()),
        ];
        let ctx = &ctx;
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ctx.token_request(&pairs).await
        }
    };
    let code = code_for(redirect).await.unwrap();
    let (status, v) = exchange(code.clone(), "a-wrong-verifier-of-at-least-forty-three-characters-000").await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let (status, v) = exchange(code, verifier).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")), "a code is one-time: {v}");
    let (status, v) = exchange(code_for(redirect).await.unwrap(), verifier).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["scope"], "https://www.googleapis.com/auth/drive.readonly");
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    let refresh_grant = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("client_id", id),
        ("client_secret", secret),
    ];
    assert_eq!(ctx.token_request(&refresh_grant).await.0, 200);
    let revoke =
        ctx.http.post(format!("{}revoke", ctx.base)).header("Content-Type", "application/x-www-form-urlencoded");
    let resp = revoke.try_clone().unwrap().body(format!("token={refresh}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (status, v) = ctx.token_request(&refresh_grant).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    assert_eq!(revoke.body(format!("token={refresh}")).send().await.unwrap().status(), 400, "already revoked");
}

/// Google may void an access token before it expires: the emulator then answers 401 `authError`
/// "Invalid Credentials" to it, while the refresh token and the service-account key still mint new
/// tokens; the fault does the same every n-th API call, and can revoke the refresh tokens mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_access_tokens_get_invalid_credentials_and_new_ones_still_work() {
    let ctx = start(EmulatorConfig::default()).await;
    let minted = ctx.control("refresh_token", json!({})).await;
    let refresh_grant = [
        ("grant_type", "refresh_token"),
        ("refresh_token", minted["refresh_token"].as_str().unwrap()),
        ("client_id", minted["client_id"].as_str().unwrap()),
        ("client_secret", minted["client_secret"].as_str().unwrap()),
    ];
    let url = format!("{}drive/v3/about?fields=kind", ctx.base);
    let bearer = |tok: &Value| tok["access_token"].as_str().unwrap().to_string();
    let user_token = bearer(&ctx.token_request(&refresh_grant).await.1);
    let get = |token: String| {
        let req = ctx.http.get(&url).bearer_auth(token);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(get(user_token.clone()).await.0, 200);
    let sa_token = ctx.auth.token(&["https://www.googleapis.com/auth/drive.readonly"]).await.unwrap();
    let sa_token = sa_token.token().unwrap().to_string();
    assert_eq!(get(sa_token.clone()).await.0, 200);

    let revoked = ctx.control("revoke_access_tokens", json!({})).await;
    assert!(revoked["revoked"].as_u64().unwrap() >= 2, "{revoked}");
    for token in [user_token, sa_token] {
        let (status, v) = get(token).await;
        assert_eq!((status, v["error"]["message"].as_str()), (401, Some("Invalid Credentials")), "{v}");
        assert_eq!(v["error"]["errors"][0]["reason"], "authError");
    }
    let fresh = bearer(&ctx.token_request(&refresh_grant).await.1);
    assert_eq!(get(fresh.clone()).await.0, 200, "the refresh token still mints working tokens");
    let sa_fresh = ctx.auth.force_refreshed_token(&["https://www.googleapis.com/auth/drive.readonly"]).await.unwrap();
    assert_eq!(get(sa_fresh.token().unwrap().to_string()).await.0, 200, "so does the service-account key");

    // The fault: every 3rd call voids the tokens first.
    ctx.control("faults", json!({"revoke_access_tokens_every": 3})).await;
    assert_eq!(get(fresh.clone()).await.0, 200);
    assert_eq!(get(fresh.clone()).await.0, 200);
    assert_eq!(get(fresh).await.0, 401);
    let fresh = bearer(&ctx.token_request(&refresh_grant).await.1);
    assert_eq!(get(fresh).await.0, 200);

    // The user removes the app's access at the 2nd call: the refresh grant is refused from then on.
    ctx.control("faults", json!({"revoke_refresh_tokens_at_call": 2})).await;
    let fresh = bearer(&ctx.token_request(&refresh_grant).await.1);
    assert_eq!(get(fresh.clone()).await.0, 200);
    assert_eq!(get(fresh).await.0, 401);
    let (status, v) = ctx.token_request(&refresh_grant).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    ctx.emu.shutdown().await;
}
