//! Token keys from a keys file (`--keys-file`): one key id per app, verified by the token's
//! `kid`, rotated without downtime by editing the file and sending SIGHUP.

mod common;

use std::time::Duration;

use common::Server;
use serde_json::json;

fn token(secret: &str, kid: &str, user: &str) -> String {
    let now = sfu::auth::unix_now();
    sfu::auth::mint_with_kid(
        secret.as_bytes(),
        kid,
        user,
        false,
        Duration::from_secs(600),
        now,
    )
    .unwrap()
}

#[tokio::test]
async fn keys_rotate_on_sighup_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("sfu-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, "# one line per app\napp1 secret-of-app-one-0001\n").unwrap();
    let path = file.to_str().unwrap().to_string();
    let s = Server::start_prod(&["--keys-file", &path]).await;
    let url = s.ws_url();
    let login = |t: String| {
        let url = url.clone();
        async move {
            let mut c = common::Client::connect(&url).await;
            c.request("login", json!({ "token": t })).await
        }
    };
    assert!(
        login(token("secret-of-app-one-0001", "app1", "alice"))
            .await
            .is_ok()
    );
    let e = login(token("secret-of-app-two-0002", "app2", "bob"))
        .await
        .unwrap_err();
    assert_eq!(e["code"], 4001);
    // Tokens without a kid still use --jwt-secret.
    let plain = sfu::auth::Auth::new(b"a-production-secret-0123")
        .mint(
            "carol",
            None,
            false,
            Duration::from_secs(600),
            sfu::auth::unix_now(),
        )
        .unwrap();
    assert!(login(plain).await.is_ok());

    // Rotate: app2 in, app1 out.
    std::fs::write(&file, "app2 secret-of-app-two-0002\n").unwrap();
    s.signal("HUP");
    s.wait_log("keys file reloaded").await;
    assert!(
        login(token("secret-of-app-two-0002", "app2", "bob"))
            .await
            .is_ok()
    );
    let e = login(token("secret-of-app-one-0001", "app1", "alice"))
        .await
        .unwrap_err();
    assert_eq!(e["code"], 4001);

    // A broken file is refused and the keys stay as they were.
    std::fs::write(&file, "app3 short\n").unwrap();
    s.signal("HUP");
    s.wait_log("keys file not reloaded").await;
    assert!(
        login(token("secret-of-app-two-0002", "app2", "dave"))
            .await
            .is_ok()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
