//! Sharded ingest, the read side: the live spans of every ingester on the ring, for queries.
//! A query's live spans are this process's head and each other member's, asked for at once;
//! each member's groups stay groups (whole traces), so a search still reads them newest first.
//! A member that does not answer fails the query as unavailable: an answer without its live
//! spans would be partial, presented as whole.
//!
//! A member's answer also names the blocks its head flushed lately: this process learns of
//! another member's blocks by polling the bucket, so without them a span just flushed there
//! would be in neither its head nor the blocks listed here until the next poll.
//!
//! Cost: every query that reads live spans moves each other member's head for the tenant over
//! the network as Arrow IPC (about 1.6 KB a span), whatever its filters. That is fine for
//! heads of seconds to minutes; pushing the query's filters to the members is the next step.

use std::sync::Arc;

use allegro_engine::error::{EngineError, Result};
use allegro_engine::ids::TraceId;
use allegro_engine::otlp::trace::v1::ResourceSpans;
use allegro_engine::query::{LiveBatches, LiveSpans};

use crate::Ingester;
use crate::distributor::Distributor;
use crate::peers::others;

/// This process's head and the other members' live spans.
pub struct RingLive {
    local: Arc<Ingester>,
    distributor: Arc<Distributor>,
}

impl RingLive {
    /// The live spans of `local` and of every other member of `distributor`'s ring.
    pub fn new(local: Arc<Ingester>, distributor: Arc<Distributor>) -> Self {
        Self { local, distributor }
    }
}

fn unavailable(e: crate::error::IngestError) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

#[async_trait::async_trait]
impl LiveSpans for RingLive {
    async fn live_batches(&self, tenant: &str) -> Result<LiveBatches> {
        let peers = self.distributor.peers();
        let theirs = futures::future::try_join_all(
            others(self.distributor.ring()).map(|m| peers.live_spans(m, tenant)),
        );
        // The members are asked first (their requests start on first poll), so their answers
        // arrive while this head converts.
        let (theirs, mine) = futures::join!(theirs, self.local.live_batches(tenant));
        let mut live = mine?;
        // Other members' groups come without what they record or their traces listed (not on
        // the wire): the query lists theirs from the rows.
        live.recorded.resize(live.groups.len(), None);
        live.traces.resize(live.groups.len(), None);
        for theirs in theirs.map_err(unavailable)? {
            live.groups.extend(theirs.groups);
            live.flushed.extend(theirs.flushed);
        }
        Ok(live)
    }

    async fn live_trace(&self, tenant: &str, id: &TraceId) -> Result<Vec<ResourceSpans>> {
        // Every member is asked, not only the trace's owner: spans that arrived before the
        // member list changed are with their owner then.
        let peers = self.distributor.peers();
        let theirs = futures::future::try_join_all(
            others(self.distributor.ring()).map(|m| peers.live_trace(m, tenant, id)),
        );
        let (theirs, mine) = futures::join!(theirs, self.local.live_trace(tenant, id));
        let mut spans = mine?;
        for s in theirs.map_err(unavailable)? {
            spans.extend(s);
        }
        Ok(spans)
    }
}
