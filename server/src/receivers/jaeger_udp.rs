//! The Jaeger agent's UDP protocols: one `Agent.emitBatch` call per datagram, Thrift compact on
//! port 6831 (`thrift_compact`) or binary on 6832 (`thrift_binary`), what Jaeger clients' UDP
//! senders emit.
//!
//! UDP has no answer and no headers: a bad packet is dropped, counted (refused, reason
//! `malformed_request`) and logged at most every ten seconds with how many went since; spans go
//! to `single-tenant`, and with multitenancy on (no `X-Scope-OrgID` to say whose they are) every
//! packet is dropped that way, as Tempo drops them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_ingest::Ingester;
use allegro_ingest::jaeger::thrift::{Protocol, decode_agent_message};
use allegro_ingest::jaeger::translate;
use allegro_ingest::metrics::RefuseReason;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::tenant::SINGLE_TENANT;

/// One UDP listener's settings.
pub struct JaegerUdp {
    /// Where spans go.
    pub ingester: Arc<Ingester>,
    /// With multitenancy on, packets cannot name a tenant and are dropped.
    pub multitenancy: bool,
    /// Compact (6831) or binary (6832).
    pub protocol: Protocol,
    /// Longest datagram taken (`max_packet_size`).
    pub max_packet: usize,
}

impl JaegerUdp {
    fn label(&self) -> &'static str {
        match self.protocol {
            Protocol::Compact => "jaeger_thrift_compact",
            Protocol::Binary => "jaeger_thrift_binary",
        }
    }

    /// Reads datagrams until `stop`.
    pub async fn run(
        self,
        socket: UdpSocket,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), String> {
        // One byte more than the limit tells an oversized datagram from one that just fits.
        let mut buf = vec![0u8; self.max_packet + 1];
        let mut dropped = Dropped::default();
        loop {
            let n = tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                r = socket.recv_from(&mut buf) => match r {
                    Ok((n, _)) => n,
                    Err(e) => {
                        dropped.note(self.label(), &format!("cannot read a datagram: {e}"));
                        continue;
                    }
                },
            };
            if let Err(why) = self.take(&buf[..n]).await {
                dropped.note(self.label(), &why);
            }
        }
    }

    /// Stores one datagram's spans; the ingester counts what it refuses, this what it never
    /// reaches.
    async fn take(&self, packet: &[u8]) -> Result<(), String> {
        let unread = |why: String| {
            self.ingester.metrics().refused(
                SINGLE_TENANT,
                RefuseReason::MalformedRequest,
                0,
                packet.len() as u64,
            );
            why
        };
        if packet.len() > self.max_packet {
            return Err(unread(format!(
                "a datagram over max_packet_size ({} bytes)",
                self.max_packet
            )));
        }
        if self.multitenancy {
            return Err(unread(
                "multitenancy is on and a UDP datagram names no tenant".into(),
            ));
        }
        let batch =
            decode_agent_message(packet, self.protocol).map_err(|e| unread(e.to_string()))?;
        let o = self
            .ingester
            .push(
                SINGLE_TENANT,
                self.label(),
                translate::to_otlp(vec![batch]),
                packet.len(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if o.rejected > 0 {
            return Err(o.message);
        }
        Ok(())
    }
}

/// Logs dropped packets at most every ten seconds: a flood of bad packets must not become a
/// flood of log lines.
#[derive(Default)]
struct Dropped {
    since_last_log: u64,
    last_log: Option<Instant>,
}

impl Dropped {
    fn note(&mut self, receiver: &str, why: &str) {
        self.since_last_log += 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                receiver,
                dropped = self.since_last_log,
                "Jaeger UDP packets dropped; the last: {why}"
            );
            self.since_last_log = 0;
            self.last_log = Some(Instant::now());
        }
    }
}
