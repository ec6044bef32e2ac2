//! The operator's image: an OCI layout pushed to the test registry and read back as a runtime would
//! (O-, issue "run it in production": user, entrypoint, labels, CA bundle). Needs `cargo xtask cluster up`
//! (the registries).

use xtask::image::{CA_BUNDLE, ENTRYPOINT, USER, layout, push};
use xtask::registry::{fetch_blob, fetch_manifest, registries};

#[tokio::test]
async fn the_image_is_pushed_and_reads_back_as_a_non_root_entrypoint_with_labels() {
    let r = registries().expect("test registries (cargo xtask cluster up)");
    let dir = std::env::temp_dir().join(format!("aim-image-push-{}", std::process::id()));
    let binary = b"\x7fELF stand-in for the static binary".to_vec();
    let ca = b"-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n".to_vec();
    let manifest = layout(&binary, Some(&ca), &dir, "9.9.9").unwrap();
    // Through the auth instance, as a real registry would want.
    let auth = Some(r.credentials());
    let target = format!("{}/aim/operator:9.9.9", r.auth);
    let digest = push(&dir, &target, auth).await.unwrap();
    assert_eq!(
        digest, manifest.digest,
        "the registry holds the layout's manifest"
    );
    let fetched = fetch_manifest(&r.auth, auth, "aim/operator", "9.9.9")
        .await
        .unwrap();
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.digest.as_deref(), Some(digest.as_str()));
    let m: serde_json::Value = serde_json::from_slice(&fetched.body).unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &fetch_blob(
            &r.auth,
            auth,
            "aim/operator",
            m["config"]["digest"].as_str().unwrap(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(config["config"]["User"], USER);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!([ENTRYPOINT])
    );
    assert!(config["config"]["Cmd"].is_null(), "no shell, no command");
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "aim-operator");
    assert_eq!(labels["org.opencontainers.image.version"], "9.9.9");
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    // The layer holds the binary and the CA bundle.
    let layer = fetch_blob(
        &r.auth,
        auth,
        "aim/operator",
        m["layers"][0]["digest"].as_str().unwrap(),
    )
    .await
    .unwrap();
    let ca_name = CA_BUNDLE.trim_start_matches('/').as_bytes();
    assert!(layer.windows(ca_name.len()).any(|w| w == ca_name));
    assert!(layer.windows(binary.len()).any(|w| w == &binary[..]));
    // Without credentials the push is refused.
    let refused = push(&dir, &target, None).await.unwrap_err();
    assert!(format!("{refused:#}").contains("401"), "{refused:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}
