//! Listening sockets with an accept queue sized for bursts of new connections.
//!
//! `tokio::net::TcpListener::bind` listens with a backlog of 128 (mio copies the standard
//! library's). When more connections than that arrive before the server accepts them, Linux
//! drops the SYNs over the limit (`TcpExtListenOverflows`, `TcpExtListenDrops` in `nstat`) and
//! each client retransmits after 1 s, then 3 s, 7 s, 15 s, 31 s. The benchmark's 1,000 checks on
//! three replicas open thousands of connections to the simulator at once: one run counted 66,391
//! overflows, and some checks waited 30 s and more for a request to get through, which no
//! Azure front door does. [`listen`] asks for [`BACKLOG`]; the kernel caps it at
//! `net.core.somaxconn` (4096 by default since Linux 5.4).

use tokio::net::{TcpListener, TcpSocket};

/// The accept queue asked for.
pub const BACKLOG: u32 = 4096;

/// Listen on `addr` ("host:port"; the first of its addresses that binds) with [`BACKLOG`].
pub async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for address in tokio::net::lookup_host(addr).await? {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        let bound = socket.and_then(|socket| {
            // As `TcpListener::bind` does: a restarted server can bind its port at once.
            #[cfg(not(windows))]
            socket.set_reuseaddr(true)?;
            socket.bind(address)?;
            socket.listen(BACKLOG)
        });
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} names no address"),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// More connections than the default backlog of 128 arrive before any is accepted: every
    /// one completes its handshake at once (with 128, those over it wait for a retransmitted
    /// SYN, a second or more).
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_queue_not_for_retransmits() {
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let burst = 300.min(somaxconn.saturating_sub(8));
        assert!(
            burst > 128,
            "net.core.somaxconn is {somaxconn}: the kernel caps every accept queue below a burst \
             over tokio's default of 128, so this test cannot tell the two apart"
        );
        let listener = listen("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..burst).map(|_| {
            tokio::time::timeout(
                Duration::from_millis(900),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures::future::join_all(connects).await;
        let completed = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(
            completed, burst,
            "{completed} of {burst} connections completed their handshake within 0.9 s \
             (the server accepts none: they wait in its queue)"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn an_address_that_is_not_one_is_an_error() {
        assert!(listen("not an address").await.is_err());
        assert!(listen("127.0.0.1:99999").await.is_err());
    }
}
