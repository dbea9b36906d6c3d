//! A throwaway Mosquitto (MQTT) broker.

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::instance::{Instance, Probe};
use super::process::{Launch, find_program};
use super::{ServerConfig, ServerError, lifecycle_methods};

const SERVER: &str = "mosquitto";
const PACKAGE: &str = "mosquitto";
const BINARY: &str = "mosquitto";

/// An MQTT 3.1.1 CONNECT with a clean session, an empty client id and a 60 s keepalive.
pub(crate) const CONNECT: [u8; 14] = [
    0x10,
    12,
    0,
    4,
    b'M',
    b'Q',
    b'T',
    b'T',
    4,
    0b0000_0010,
    0,
    60,
    0,
    0,
];
/// The CONNACK that accepts it.
pub(crate) const CONNACK_ACCEPTED: [u8; 4] = [0x20, 2, 0, 0];

/// A throwaway Mosquitto broker on a free port: anonymous clients allowed, no persistence.
#[derive(Debug)]
pub struct Mosquitto {
    instance: Instance,
}

impl Mosquitto {
    /// Starts a broker on a free port with the default [`ServerConfig`], returning once it accepts
    /// an MQTT connection.
    ///
    /// # Errors
    /// [`ServerError::MissingBinary`] when `mosquitto` is not installed; otherwise when it does not
    /// become ready in time (the error quotes its log).
    pub async fn start() -> Result<Self, ServerError> {
        Self::start_with(ServerConfig::default()).await
    }

    /// Like [`start`](Self::start), with the given settings.
    ///
    /// # Errors
    /// As for [`start`](Self::start).
    pub async fn start_with(config: ServerConfig) -> Result<Self, ServerError> {
        let program = find_program(BINARY).ok_or(ServerError::MissingBinary {
            server: SERVER,
            binary: BINARY.to_owned(),
            package: PACKAGE,
        })?;
        let setup = |what: &str, source| ServerError::Setup {
            server: SERVER,
            what: what.to_owned(),
            source,
        };
        let dir = TempDir::with_prefix("rampart-mosquitto-").map_err(|e| setup("temp dir", e))?;
        let cwd = dir.path().to_owned();
        let log = cwd.join("mosquitto.log");
        let conf = cwd.join("mosquitto.conf");
        let instance = Instance::start(dir, Probe::Mqtt, config, |port| {
            let text = format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
            );
            std::fs::write(&conf, text).map_err(|e| setup("could not write the config file", e))?;
            Ok(Launch {
                server: SERVER,
                program: program.clone(),
                args: vec!["-c".into(), conf.clone().into_os_string()],
                cwd: cwd.clone(),
                log: log.clone(),
                run_as: None,
            })
        })
        .await?;
        Ok(Self { instance })
    }

    lifecycle_methods!();

    /// The broker's URL: `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port())
    }
}

/// Ready when a CONNECT gets an accepting CONNACK.
pub(crate) async fn probe(port: u16) -> bool {
    let connect = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(&CONNECT).await?;
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).await?;
        // DISCONNECT, so the broker does not log a lost client.
        let _ = stream.write_all(&[0xe0, 0]).await;
        Ok::<_, std::io::Error>(reply == CONNACK_ACCEPTED)
    };
    connect.await.unwrap_or(false)
}
