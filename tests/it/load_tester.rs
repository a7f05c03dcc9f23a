//! The bundled load tester against the real server on port 0: a short unfiltered run delivers
//! everything with latency samples; a filtered run's counts match what its filters allow.

use serde_json::Value;

use crate::support::TestServer;

async fn run_load(server: &TestServer, extra: &[&str]) -> Value {
    let url = format!("ws://{}", server.addr);
    let mut args = vec![
        "--url",
        url.as_str(),
        "--sessions",
        "20",
        "--warmup",
        "1",
        "--duration",
        "2",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_featurestream-load"))
            .args(&args)
            .output(),
    )
    .await
    .expect("the load tester finishes")
    .expect("the load tester runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON report")
}

#[actix_web::test]
async fn unfiltered_run_delivers_every_feature_with_latency_samples() {
    let server = TestServer::simulated(50);
    for mode in ["custom", "server"] {
        let report = run_load(&server, &["--mode", mode]).await;
        assert_eq!(report["connected"], 20, "{report}");
        assert_eq!(report["features_per_tick_reference"], 50, "{report}");
        assert_eq!(report["delivery_ratio"], 1.0, "{report}");
        assert!(
            report["latency_ms"]["samples"].as_u64().expect("samples") > 0,
            "{report}"
        );
        assert_eq!(
            report["fairness"]["min"], report["fairness"]["median"],
            "{report}"
        );
    }
}

/// `--deflate`: every session negotiates compression, every compressed message inflates
/// (one that did not would end its session with 1007), every feature is delivered, and the
/// report counts fewer bytes on the wire than in the messages.
#[actix_web::test]
async fn a_compressed_run_inflates_everything_and_counts_wire_and_message_bytes() {
    let server = TestServer::simulated(50);
    let report = run_load(&server, &["--deflate"]).await;
    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["delivery_ratio"], 1.0, "{report}");
    assert_eq!(report["closes"], serde_json::json!({}), "{report}");
    let bytes = &report["bytes"];
    assert_eq!(bytes["sessions_deflated"], 20, "{report}");
    assert!(
        bytes["compressed_messages"].as_u64().unwrap() > 0,
        "{report}"
    );
    let (wire, messages) = (
        bytes["wire"].as_u64().unwrap(),
        bytes["messages"].as_u64().unwrap(),
    );
    assert!(wire * 2 < messages, "{report}");
    let plain = run_load(&server, &[]).await;
    assert_eq!(plain["bytes"]["sessions_deflated"], 0, "{plain}");
    assert!(
        plain["bytes"]["wire"].as_u64().unwrap() >= plain["bytes"]["messages"].as_u64().unwrap(),
        "{plain}"
    );
}

#[actix_web::test]
async fn filtered_run_counts_match_what_the_filters_allow() {
    let server = TestServer::simulated(50);
    let mix = [
        "--mode",
        "server",
        "--where-fraction",
        "0.5",
        "--envelope-fraction",
        "0.5",
    ];
    let report = run_load(&server, &mix).await;
    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["delivery_ratio"], 1.0, "{report}");
    assert_eq!(report["over_delivered_features"], 0, "{report}");
    let custom = run_load(&server, &["--mode", "custom", "--where-fraction", "1"]).await;
    assert_eq!(custom["delivery_ratio"], 1.0, "{custom}");
    assert_eq!(custom["over_delivered_features"], 0, "{custom}");
}

#[actix_web::test]
async fn non_loopback_targets_are_refused() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_featurestream-load"))
        .args(["--url", "ws://192.0.2.1:8000", "--quiet"])
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--allow-remote"));
}

/// Ingest mode: publishers (broadcast WebSocket, then HTTP NDJSON) feed a server without a
/// simulator; unfiltered sessions receive what was published, with latency from send time.
#[actix_web::test]
async fn ingest_mode_publishes_and_sessions_receive_what_was_published() {
    let mut config = featurestream::config::Config::for_tests(1, 1.0);
    config.services[0].simulator = None;
    let server = TestServer::start(config);
    for via in ["ws", "http"] {
        let report = run_load(
            &server,
            &[
                "--mode",
                "custom",
                "--publishers",
                "2",
                "--publish-rate",
                "400",
                "--tracks",
                "200",
                "--publish-via",
                via,
            ],
        )
        .await;
        let published = &report["published"];
        assert!(published["in_window"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(published["refused_messages"], 0, "{report}");
        assert_eq!(published["failed_publishers"], 0, "{report}");
        assert_eq!(report["connected"], 20, "{report}");
        assert!(
            report["latency_ms"]["samples"].as_u64().unwrap() > 0,
            "{report}"
        );
        // Every track reports every half second, far apart enough that neither coalescing
        // nor a busy broker's merging (newest per track) drops any: all of it arrives.
        assert!(
            report["delivery_ratio"].as_f64().unwrap() > 0.99,
            "{via}: {report}"
        );
        assert_eq!(report["over_delivered_features"], 0, "{report}");
    }
}
