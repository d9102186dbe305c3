//! Transports, log format and the SUBSCRIBE edge cases of the agent.

use mesos_hook_executor::{emulator::EmulatorOptions, proto::v1::TaskState};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_unix_domain_socket_is_used_when_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let emu = emulator(EmulatorOptions {
        unix_socket: Some(socket.clone()),
        ..Default::default()
    })
    .await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(shell_task("t-unix", "exit 0"));
    wait_state(&emu, &exec, "t-unix", TaskState::TaskFinished).await;
    assert_eq!(
        exec.wait_exit(SOON).await.code(),
        Some(0),
        "log:\n{}",
        exec.log()
    );
    let calls = emu.calls();
    assert!(!calls.is_empty());
    assert!(
        calls
            .iter()
            .all(|c| c.transport == mesos_hook_executor::emulator::Transport::Unix),
        "every call over the agent socket"
    );
    assert!(exec.log().contains("http+unix://"), "{}", exec.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_ids() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[("HOOK_EXECUTOR_LOG_FORMAT", "json")]);
    emu.launch(shell_task("t-json", "exit 0"));
    wait_state(&emu, &exec, "t-json", TaskState::TaskFinished).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    let log = exec.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() > 3);
    let ended = lines
        .iter()
        .find(|l| l["message"] == "task ended")
        .expect("a 'task ended' line");
    assert_eq!(ended["task_id"], "t-json");
    assert_eq!(ended["span"]["executor_id"], "executor-1");
    assert_eq!(ended["span"]["framework_id"], "framework-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_is_retried_while_the_agent_is_starting() {
    let emu = emulator(EmulatorOptions::default()).await;
    emu.set_starting(true);
    let mut exec = Executor::start(&emu, &[]);
    emu.wait_for(SOON, |e| {
        (e.calls().iter().filter(|c| c.status == 404).count() >= 2).then_some(())
    })
    .await
    .expect("retried after 404");
    emu.set_starting(false);
    emu.wait_subscribed(1, SOON)
        .await
        .expect("subscribed once the agent is up");
    // Never two SUBSCRIBEs in flight: each attempt got its answer before the next.
    let attempts: Vec<_> = emu
        .calls()
        .into_iter()
        .filter(|c| c.path.contains("executor"))
        .collect();
    assert!(attempts.windows(2).all(|w| w[0].at <= w[1].at));
    emu.shutdown();
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_as_the_first_event_exits_zero_without_updates() {
    let emu = emulator(EmulatorOptions::default()).await;
    emu.shutdown();
    let mut exec = Executor::start(&emu, &[]);
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", exec.log());
    assert!(emu.updates().is_empty());
    assert!(exec.log().contains("SHUTDOWN received"));
}

/// A TLS-terminating proxy in front of the emulator (the agent with libprocess
/// SSL): returns its port and the PEM of its self-signed certificate.
async fn tls_proxy(backend: std::net::SocketAddr) -> (u16, String) {
    use std::sync::Arc;
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate");
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_the_agent_with_and_without_certificate_verification() {
    for verify in [false, true] {
        let emu = emulator(EmulatorOptions::default()).await;
        let (port, pem) = tls_proxy(emu.addr()).await;
        let ca = tempfile::NamedTempFile::new().expect("ca file");
        std::fs::write(ca.path(), pem).expect("write ca");
        let upid = format!("slave(1)@127.0.0.1:{port}");
        let ca_path = ca.path().display().to_string();
        let mut extra = vec![
            ("MESOS_SLAVE_PID", upid.as_str()),
            ("LIBPROCESS_SSL_ENABLED", "true"),
        ];
        if verify {
            extra.extend([
                ("LIBPROCESS_SSL_VERIFY_CERT", "true"),
                ("LIBPROCESS_SSL_CA_FILE", ca_path.as_str()),
            ]);
        }
        let mut exec = Executor::start(&emu, &extra);
        emu.launch(shell_task("t-tls", "exit 0"));
        wait_state(&emu, &exec, "t-tls", TaskState::TaskFinished).await;
        assert_eq!(
            exec.wait_exit(SOON).await.code(),
            Some(0),
            "verify={verify}; log:\n{}",
            exec.log()
        );
        assert!(
            exec.log().contains(&format!("https://127.0.0.1:{port}")),
            "{}",
            exec.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_verification_refuses_an_untrusted_agent_certificate() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (port, _pem) = tls_proxy(emu.addr()).await;
    let other =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let ca = tempfile::NamedTempFile::new().expect("ca file");
    std::fs::write(ca.path(), other.cert.pem()).expect("write ca");
    let upid = format!("slave(1)@127.0.0.1:{port}");
    let ca_path = ca.path().display().to_string();
    let mut exec = Executor::start(
        &emu,
        &[
            ("MESOS_SLAVE_PID", upid.as_str()),
            ("LIBPROCESS_SSL_ENABLED", "1"),
            ("LIBPROCESS_SSL_VERIFY_CERT", "1"),
            ("LIBPROCESS_SSL_CA_FILE", ca_path.as_str()),
            ("HOOK_EXECUTOR_REGISTRATION_TIMEOUT", "1secs"),
        ],
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(3));
    assert!(
        exec.log().contains("invalid peer certificate"),
        "{}",
        exec.log()
    );
    assert_eq!(emu.subscribed_count(), 0);
}
