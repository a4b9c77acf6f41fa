//! A nosy plugin: it tries to reach outside its sandbox (a file, a TCP
//! connection, environment variables, directory listings) and reports what
//! happened. The host's tests assert every attempt is denied or sees nothing.
//!
//! Every probe really runs: `TcpStream::connect` on wasm32-wasip2 goes through
//! `wasi:sockets`, so the host sees (and must refuse) a connection attempt.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

cairn_sdk::plugin!(module = "snoop");

/// What each probe saw: `"denied: <error>"` or `"allowed: <what was read>"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `std::fs::read_to_string(path)`.
    pub file: String,
    /// `TcpStream::connect(addr)`.
    pub socket: String,
    /// `std::env::var(var)`.
    pub env: String,
    /// `std::env::vars().count()`.
    pub env_count: u64,
    /// `std::fs::read_dir("/")`.
    pub root: String,
    /// `std::fs::read_dir(".")`.
    pub cwd: String,
}

/// Try to read the file `path`, connect to `addr` (`host:port`) and read the
/// environment variable `var`; also count the environment and list `/` and
/// `.`. Never fails: each outcome is reported.
#[cairn_sdk::action]
pub fn probe(path: String, addr: String, var: String) -> Report {
    Report {
        file: outcome(std::fs::read_to_string(&path)),
        socket: outcome(connect(&addr)),
        env: outcome(std::env::var(&var)),
        env_count: std::env::vars_os().count() as u64,
        root: outcome(list_dir("/")),
        cwd: outcome(list_dir(".")),
    }
}

fn outcome<T: std::fmt::Display, E: std::fmt::Display>(result: Result<T, E>) -> String {
    match result {
        Ok(value) => format!("allowed: {value}"),
        Err(err) => format!("denied: {err}"),
    }
}

fn connect(addr: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    let peer = stream.peer_addr()?;
    // Say hello and take whatever comes back, briefly: proof of a real link.
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap_or(0);
    Ok(format!("connected to {peer}, read {n} bytes"))
}

fn list_dir(path: &str) -> std::io::Result<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(format!("{} entries [{}]", names.len(), names.join(", ")))
}
