//! `rampart serve` with `[server] tls`: HTTPS to a client that trusts the certificate, nothing
//! for plain HTTP; bad TLS files are a configuration error (exit 2) naming the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rustls::pki_types::ServerName;

const DEADLINE: Duration = Duration::from_secs(20);

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_answers_https_and_not_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    let key_pem = key.serialize_pem();
    std::fs::write(&k, &key_pem).unwrap();
    let config = dir.path().join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = {c:?}, key = {k:?} }}\n\
             [store]\npath = {:?}\n\
             [[target]]\nname = \"t\"\nkind = \"tcp\"\n[target.tcp]\naddress = \"127.0.0.1:1\"\n",
            dir.path().join("h.db")
        ),
    )
    .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let addr: SocketAddr = loop {
        let line = lines.recv_timeout(DEADLINE).expect("a listening line");
        seen.push(line.clone());
        if let Some(rest) = line
            .split("addr=")
            .nth(1)
            .filter(|_| line.contains("listening"))
        {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    while !seen.iter().any(|l| l.contains("serving HTTPS")) {
        let line = lines.recv_timeout(DEADLINE).expect("a serving HTTPS line");
        seen.push(line);
    }

    // A client that trusts the certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Plain HTTP: no HTTP answer.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(DEADLINE)).unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "plain HTTP was answered"
    );

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) {
        seen.push(line);
    }
    let log = seen.join("\n");
    assert!(
        !log.contains(key_pem.lines().nth(1).unwrap()),
        "the key leaked into the log"
    );
}

#[test]
fn bad_tls_files_are_a_configuration_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN NOTHING-----\nAAAA\n-----END NOTHING-----\n",
    )
    .unwrap();
    let config = dir.path().join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls = {{ cert = {junk:?}, key = {:?} }}\n\
             [[target]]\nname = \"t\"\nkind = \"tcp\"\n[target.tcp]\naddress = \"127.0.0.1:1\"\n",
            dir.path().join("missing.pem")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("server.tls.cert"), "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
    assert!(stderr.contains("server.tls.key"), "{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
}
