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
