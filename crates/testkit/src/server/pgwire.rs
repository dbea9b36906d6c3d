//! Just enough of the PostgreSQL frontend/backend protocol (version 3.0) for readiness checks and
//! simple queries with trust authentication: startup, simple query, terminate.

use std::fmt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Protocol version 3.0, as sent in the startup message.
const PROTOCOL_3_0: i32 = 196_608;
/// Messages larger than this are treated as a broken connection rather than allocated.
const MAX_MESSAGE: usize = 64 << 20;

/// What went wrong talking to the server.
#[derive(Debug)]
pub(crate) enum WireError {
    Io(std::io::Error),
    /// An ErrorResponse: SQLSTATE and message.
    Server {
        code: String,
        message: String,
    },
    Protocol(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "connection failed: {e}"),
            Self::Server { code, message } => write!(f, "{message} (SQLSTATE {code})"),
            Self::Protocol(what) => write!(f, "unexpected reply: {what}"),
        }
    }
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// A session that completed startup and is ready for queries.
pub(crate) struct Session {
    stream: TcpStream,
}

impl Session {
    /// Connects and starts a session as `user` on `database`; the server must trust the user.
    pub(crate) async fn connect(port: u16, user: &str, database: &str) -> Result<Self, WireError> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let mut body = Vec::new();
        body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        for (key, value) in [
            ("user", user),
            ("database", database),
            ("application_name", "rampart-testkit"),
        ] {
            put_cstr(&mut body, key);
            put_cstr(&mut body, value);
        }
        body.push(0);
        let mut message = Vec::with_capacity(body.len() + 4);
        put_len(&mut message, body.len())?;
        message.extend_from_slice(&body);
        stream.write_all(&message).await?;

        let mut session = Self { stream };
        loop {
            let (kind, body) = session.read_message().await?;
            match kind {
                b'R' => {
                    let code = body.get(..4).map(|b| [b[0], b[1], b[2], b[3]]);
                    if code != Some([0, 0, 0, 0]) {
                        return Err(WireError::Protocol(
                            "the server asks for a password; the test kit needs trust auth"
                                .to_owned(),
                        ));
                    }
                }
                b'E' => return Err(server_error(&body)),
                b'Z' => return Ok(session),
                // ParameterStatus, BackendKeyData, NoticeResponse: not needed.
                _ => {}
            }
        }
    }

    /// Runs `sql` (one or more statements) with the simple query protocol and returns the rows of
    /// the last result, each column as text or `None` for NULL.
    pub(crate) async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, WireError> {
        let mut body = Vec::new();
        put_cstr(&mut body, sql);
        let mut message = vec![b'Q'];
        put_len(&mut message, body.len())?;
        message.extend_from_slice(&body);
        self.stream.write_all(&message).await?;

        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (kind, body) = self.read_message().await?;
            match kind {
                // RowDescription starts a new result: keep only the last one's rows.
                b'T' => rows.clear(),
                b'D' => rows.push(parse_row(&body)?),
                b'E' => error = Some(server_error(&body)),
                b'Z' => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    };
                }
                _ => {}
            }
        }
    }

    /// Ends the session politely.
    pub(crate) async fn terminate(mut self) {
        let _ = self.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = self.stream.shutdown().await;
    }

    async fn read_message(&mut self) -> Result<(u8, Vec<u8>), WireError> {
        let mut header = [0u8; 5];
        self.stream.read_exact(&mut header).await?;
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let len = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_sub(4))
            .filter(|&l| l <= MAX_MESSAGE)
            .ok_or_else(|| WireError::Protocol(format!("message length {len}")))?;
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        Ok((header[0], body))
    }
}

fn put_cstr(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

/// Appends a message length, which counts itself.
fn put_len(buf: &mut Vec<u8>, body_len: usize) -> Result<(), WireError> {
    let len = i32::try_from(body_len + 4)
        .map_err(|_| WireError::Protocol(format!("message of {body_len} bytes is too long")))?;
    buf.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Reads the SQLSTATE ('C') and message ('M') fields of an ErrorResponse.
fn server_error(body: &[u8]) -> WireError {
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|&b| b == 0) {
        if let Some((&kind, value)) = field.split_first() {
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'C' => code = value,
                b'M' => message = value,
                _ => {}
            }
        }
    }
    WireError::Server { code, message }
}

/// Parses a DataRow: a column count, then each column as a length (-1 for NULL) and bytes.
fn parse_row(body: &[u8]) -> Result<Vec<Option<String>>, WireError> {
    let bad = || WireError::Protocol("malformed DataRow".to_owned());
    let mut rest = body;
    let mut take = |n: usize| -> Result<&[u8], WireError> {
        if rest.len() < n {
            return Err(bad());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))?;
    let mut row = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))?;
        if len < 0 {
            row.push(None);
        } else {
            let bytes = take(usize::try_from(len).map_err(|_| bad())?)?;
            row.push(Some(String::from_utf8_lossy(bytes).into_owned()));
        }
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_row_with_a_null_is_parsed() {
        let body = [0, 2, 0, 0, 0, 2, b'4', b'2', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(parse_row(&body).unwrap(), vec![Some("42".to_owned()), None]);
        assert!(parse_row(&[0, 1, 0, 0, 0, 9, b'x']).is_err());
    }

    #[test]
    fn error_response_fields_are_read() {
        let body = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0";
        let e = server_error(body);
        assert!(matches!(&e, WireError::Server { code, .. } if code == "57P03"));
        assert_eq!(
            e.to_string(),
            "the database system is starting up (SQLSTATE 57P03)"
        );
    }
}
