//! Rows held in the serving process's memory (the live head, a `traceql()` call's matches)
//! that executors fetch from it over Arrow Flight, instead of receiving them inside the plan.
//!
//! Why: a table of rows inside a plan travels twice (to the scheduler, then in every task of
//! its stage), and a plan is one gRPC message, which Ballista caps at 16 MiB. A head of
//! 30k spans is past that (every SQL query failed with a 503), and a head of minutes at
//! production rates is hundreds of megabytes. A served table travels as three fields (this
//! process's address, a random ID, its partition count); each task fetches only its own
//! partition and only the columns its plan reads (a `count(*)` fetches none), in Flight
//! messages of at most 1 MiB.
//!
//! Lifetime: a table is registered while its plan is encoded for sending, which Ballista does
//! inside the synchronous `execute` of its `DistributedQueryExec`. [`ServedRowsScopeExec`]
//! wraps that node: it opens a scope on the thread around the call, takes the tables
//! registered in it, and holds them until the answer's stream ends or is dropped (a client
//! gone, a time budget spent). A plan encoded outside a scope (`Cluster::plan_bytes`) carries
//! its rows inline, as before. The batches are the head snapshot's own (reference-counted),
//! not copies.
//!
//! Trust: whoever reaches the address and knows a table's ID (a v4 UUID, 122 random bits)
//! can read it while its query runs, as whoever reaches an executor's Flight port can read
//! its shuffle files. Both belong on the cluster's private network.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightClient, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::block_scan::{global_partition, partition_indexes, partition_indexes_of};
use crate::error::{ClusterError, Result as ClusterResult};
use crate::wire;

/// Largest Flight message a served partition is cut into.
const FLIGHT_DATA_BYTES: usize = 1 << 20;
/// Largest message an executor accepts from a serving process: one row bigger than
/// [`FLIGHT_DATA_BYTES`] still travels whole.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// One served table: its rows, per partition.
struct Served {
    schema: SchemaRef,
    partitions: Vec<Vec<RecordBatch>>,
}

/// The tables this process serves to executors, and where it serves them; see the module docs.
pub struct RowsServer {
    address: String,
    /// Tables whose rows take fewer bytes than this travel inside the plan.
    inline_below: usize,
    tables: Mutex<HashMap<Uuid, Arc<Served>>>,
}

impl fmt::Debug for RowsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowsServer")
            .field("address", &self.address)
            .field("serving", &self.serving())
            .finish()
    }
}

thread_local! {
    /// The tables registered since the innermost open scope on this thread.
    static SCOPE: RefCell<Option<Vec<Uuid>>> = const { RefCell::new(None) };
}

impl RowsServer {
    /// Starts serving on `bind` (port 0: any free port), telling executors to connect to
    /// `advertise_host` (unset: `bind`'s IP) at the bound port. Tables whose rows take fewer
    /// than `inline_below` bytes travel inside plans instead. Must be called inside a Tokio
    /// runtime; the server runs as one of its tasks.
    pub fn start(
        bind: SocketAddr,
        advertise_host: Option<&str>,
        inline_below: usize,
    ) -> ClusterResult<Arc<Self>> {
        let bound = |e: std::io::Error| {
            ClusterError::Ballista(format!("serving rows to executors on {bind}: {e}"))
        };
        let listener = std::net::TcpListener::bind(bind).map_err(bound)?;
        listener.set_nonblocking(true).map_err(bound)?;
        let port = listener.local_addr().map_err(bound)?.port();
        let listener = tokio::net::TcpListener::from_std(listener).map_err(bound)?;
        let host = advertise_host.map_or_else(|| bind.ip().to_string(), str::to_string);
        let server = Arc::new(Self {
            address: format!("{host}:{port}"),
            inline_below,
            tables: Mutex::new(HashMap::new()),
        });
        let service = FlightServiceServer::new(RowsService(server.clone()))
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(error = %e, "serving rows to executors stopped");
            }
        });
        Ok(server)
    }

    /// Where executors fetch this process's rows (`host:port`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Tables served now (each held by a query still running).
    pub fn serving(&self) -> usize {
        self.tables.lock().map_or(0, |t| t.len())
    }

    /// Serves `partitions` under a new ID held by the open scope on this thread, and says
    /// where; `None` when no scope is open or the rows are small enough to travel inside the
    /// plan.
    pub(crate) fn register(
        &self,
        schema: SchemaRef,
        partitions: Vec<Vec<RecordBatch>>,
    ) -> Option<ServedRef> {
        let mut column_bytes = vec![0u64; schema.fields().len()];
        for b in partitions.iter().flatten() {
            for (sum, c) in column_bytes.iter_mut().zip(b.columns()) {
                *sum += c.get_array_memory_size() as u64;
            }
        }
        if column_bytes.iter().sum::<u64>() < self.inline_below as u64 {
            return None;
        }
        let id = Uuid::new_v4();
        let held = SCOPE.with(|s| match s.borrow_mut().as_mut() {
            Some(ids) => {
                ids.push(id);
                true
            }
            None => false,
        });
        if !held {
            return None;
        }
        let at = ServedRef {
            address: self.address.clone(),
            id,
            rows: partitions
                .iter()
                .map(|p| p.iter().map(|b| b.num_rows() as u64).sum())
                .collect(),
            column_bytes,
        };
        let served = Arc::new(Served { schema, partitions });
        if let Ok(mut t) = self.tables.lock() {
            t.insert(id, served);
        }
        Some(at)
    }

    fn release(&self, ids: &[Uuid]) {
        if let Ok(mut t) = self.tables.lock() {
            for id in ids {
                t.remove(id);
            }
        }
    }

    fn table(&self, id: &Uuid) -> Option<Arc<Served>> {
        self.tables.lock().ok()?.get(id).cloned()
    }
}

/// The tables a scope registered; released when dropped.
pub(crate) struct Held {
    server: Arc<RowsServer>,
    ids: Vec<Uuid>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.server.release(&self.ids);
    }
}

/// Runs `f` with a scope open on this thread and returns what it registered, held.
pub(crate) fn scoped<T>(server: &Arc<RowsServer>, f: impl FnOnce() -> T) -> (T, Held) {
    let outer = SCOPE.with(|s| s.borrow_mut().replace(Vec::new()));
    let out = f();
    let ids = SCOPE.with(|s| std::mem::replace(&mut *s.borrow_mut(), outer).unwrap_or_default());
    let held = Held {
        server: server.clone(),
        ids,
    };
    (out, held)
}

/// A fetch of one partition: which table, which partition, which columns.
#[derive(Clone, PartialEq, Message)]
struct RowsTicket {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(uint32, tag = "2")]
    partition: u32,
    /// Column indices, when `projected`.
    #[prost(uint32, repeated, tag = "3")]
    projection: Vec<u32>,
    #[prost(bool, tag = "4")]
    projected: bool,
}

/// The Flight service executors fetch served rows from: `do_get` only.
struct RowsService(Arc<RowsServer>);

type FlightStream<T> = BoxStream<'static, std::result::Result<T, Status>>;

fn unsupported<T>(what: &str) -> std::result::Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what}: this endpoint only serves rows to a cluster's executors (do_get)"
    )))
}

impl RowsService {
    /// The batches `ticket` asks for, projected, and their schema.
    fn rows(
        &self,
        ticket: &RowsTicket,
    ) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), Status> {
        let id = Uuid::from_slice(&ticket.id)
            .map_err(|_| Status::invalid_argument("a rows ticket without a table ID"))?;
        let served = self.0.table(&id).ok_or_else(|| {
            Status::not_found(format!(
                "rows {id} are no longer served here (the query that sent them has ended)"
            ))
        })?;
        let batches = served
            .partitions
            .get(ticket.partition as usize)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "rows {id} have {} partitions, not {}",
                    served.partitions.len(),
                    ticket.partition + 1
                ))
            })?;
        if !ticket.projected {
            return Ok((served.schema.clone(), batches.clone()));
        }
        let projection: Vec<usize> = ticket.projection.iter().map(|&i| i as usize).collect();
        let bad = |e: arrow::error::ArrowError| Status::invalid_argument(e.to_string());
        let schema = Arc::new(served.schema.project(&projection).map_err(bad)?);
        let batches = batches
            .iter()
            .map(|b| b.project(&projection).map_err(bad))
            .collect::<std::result::Result<_, _>>()?;
        Ok((schema, batches))
    }
}

#[async_trait]
impl FlightService for RowsService {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        let ticket = RowsTicket::decode(request.into_inner().ticket)
            .map_err(|e| Status::invalid_argument(format!("malformed rows ticket: {e}")))?;
        let (schema, batches) = self.rows(&ticket)?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(FLIGHT_DATA_BYTES)
            .with_dictionary_handling(DictionaryHandling::Resend)
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(stream.boxed()))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        unsupported("handshake")
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("list_flights")
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        unsupported("get_flight_info")
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        unsupported("poll_flight_info")
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        unsupported("get_schema")
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        unsupported("do_put")
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        unsupported("do_exchange")
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        unsupported("do_action")
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        unsupported("list_actions")
    }
}

/// Where a served table's rows are (the serving process's address, the table's ID), and
/// their size, which the planner weighs (a small side of a join is sent to every task, not
/// shuffled).
#[derive(Debug, Clone)]
pub struct ServedRef {
    /// The serving process's rows address (`host:port`).
    pub address: String,
    /// The table's ID there.
    pub id: Uuid,
    /// Rows per partition.
    pub rows: Vec<u64>,
    /// In-memory bytes per column, all partitions.
    pub column_bytes: Vec<u64>,
}

impl ServedRef {
    /// Its partitions.
    pub fn partitions(&self) -> usize {
        self.rows.len()
    }
}

/// A served table as a node that is not its own: decoded where a plan lands (the scheduler),
/// it scans into a [`ServedRowsExec`].
#[derive(Debug)]
pub struct ServedRowsTable {
    at: ServedRef,
    schema: SchemaRef,
}

impl ServedRowsTable {
    /// The table `at` names, whose rows have `schema`.
    pub fn new(at: ServedRef, schema: SchemaRef) -> Self {
        Self { at, schema }
    }
}

#[async_trait]
impl TableProvider for ServedRowsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        Ok(Arc::new(ServedRowsExec::new(
            self.at.clone(),
            schema,
            projection.cloned(),
            partition_indexes(self.at.partitions())?,
        )))
    }
}

/// A scan of a served table: each partition fetched from the serving process. Like a
/// [`crate::block_scan::BlockScanExec`], its child names the global partition each of its
/// partitions reads, so Ballista can cut it to a task's partitions.
#[derive(Debug)]
pub struct ServedRowsExec {
    at: ServedRef,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    indexes: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl ServedRowsExec {
    /// Fetches columns `projection` (all: `None`) of the table `at`, which then have
    /// `schema`, in the global partitions `indexes` names.
    pub fn new(
        at: ServedRef,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        indexes: Arc<dyn ExecutionPlan>,
    ) -> Self {
        let partitions = indexes.properties().output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            at,
            schema,
            projection,
            indexes,
            properties,
        }
    }

    /// Where its rows are.
    pub fn served(&self) -> &ServedRef {
        &self.at
    }

    /// The columns it fetches (all: `None`).
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }
}

impl DisplayAs for ServedRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ServedRowsExec: from={}, partitions={}, projection={:?}",
            self.at.address,
            self.at.partitions(),
            self.projection
        )
    }
}

/// `e` as a query error: the serving process unreachable or the table gone is the cluster's
/// failure, not the query's.
fn fetch_failed(at: &ServedRef, e: impl fmt::Display) -> DataFusionError {
    DataFusionError::External(Box::new(ClusterError::Ballista(format!(
        "fetching rows {} from the serving process at {}: {e}",
        at.id, at.address
    ))))
}

/// The rows of `ticket`'s partition, from the serving process `at`, as batches of `schema`
/// (of no columns, only their row counts kept, when `counts_only`).
async fn fetch(
    at: ServedRef,
    ticket: RowsTicket,
    schema: SchemaRef,
    counts_only: bool,
) -> Result<impl futures::Stream<Item = Result<RecordBatch>>> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", at.address))
        .map_err(|e| fetch_failed(&at, e))?
        .connect_timeout(Duration::from_secs(10));
    let channel = endpoint.connect().await.map_err(|e| fetch_failed(&at, e))?;
    let mut client = FlightClient::new_from_inner(
        FlightServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
    );
    let stream = client
        .do_get(Ticket::new(ticket.encode_to_vec()))
        .await
        .map_err(|e| fetch_failed(&at, e))?;
    Ok(stream.map(move |b| {
        let b = b.map_err(|e| fetch_failed(&at, e))?;
        if counts_only {
            let rows = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            return Ok(RecordBatch::try_new_with_options(
                schema.clone(),
                Vec::new(),
                &rows,
            )?);
        }
        // The Flight schema names the same columns; the plan's (nullability, metadata) rules.
        Ok(RecordBatch::try_new(schema.clone(), b.columns().to_vec())?)
    }))
}

impl ExecutionPlan for ServedRowsExec {
    fn name(&self) -> &str {
        "ServedRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.indexes]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let locals = match args.partition() {
            Some(p) => vec![p],
            None => (0..self.properties.output_partitioning().partition_count()).collect(),
        };
        let mut rows = 0;
        for local in locals {
            let global = global_partition(&self.indexes, local)?;
            rows += self.at.rows.get(global).copied().unwrap_or(0);
        }
        // Bytes of the columns read, in proportion to the rows.
        let all_rows: u64 = self.at.rows.iter().sum();
        let columns: u64 = match &self.projection {
            Some(p) => p.iter().filter_map(|&i| self.at.column_bytes.get(i)).sum(),
            None => self.at.column_bytes.iter().sum(),
        };
        let bytes = match all_rows {
            0 => 0,
            n => (columns as u128 * rows as u128 / n as u128) as usize,
        };
        let mut stats = Statistics::new_unknown(&self.schema);
        stats.num_rows = Precision::Exact(rows as usize);
        stats.total_byte_size = Precision::Inexact(bytes);
        Ok(Arc::new(stats))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let indexes = partition_indexes_of(children, "ServedRowsExec")?;
        Ok(Arc::new(Self::new(
            self.at.clone(),
            self.schema.clone(),
            self.projection.clone(),
            indexes,
        )))
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partition = global_partition(&self.indexes, partition)?;
        // Flight cannot carry a batch of no columns (its row count is lost): a scan that
        // reads none (`count(*)`) fetches the first and keeps only the counts.
        let counts_only = self.projection.as_ref().is_some_and(Vec::is_empty);
        let projection = match &self.projection {
            Some(p) if p.is_empty() => Some(vec![0]),
            p => p.clone(),
        };
        let ticket = RowsTicket {
            id: self.at.id.as_bytes().to_vec(),
            partition: u32::try_from(partition).map_err(|_| {
                DataFusionError::Internal(format!("served partition {partition} is too large"))
            })?,
            projection: projection.iter().flatten().map(|&i| i as u32).collect(),
            projected: projection.is_some(),
        };
        let rows = fetch(self.at.clone(), ticket, self.schema.clone(), counts_only);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(rows).try_flatten(),
        )))
    }
}

/// The node Ballista's planner answers with, wrapped so the tables its plan registers while
/// being sent are served until its answer ends; see the module docs.
#[derive(Debug)]
pub struct ServedRowsScopeExec {
    inner: Arc<dyn ExecutionPlan>,
    server: Arc<RowsServer>,
}

impl ServedRowsScopeExec {
    /// `inner`, its sent tables served by `server`.
    pub fn new(inner: Arc<dyn ExecutionPlan>, server: Arc<RowsServer>) -> Self {
        Self { inner, server }
    }
}

impl DisplayAs for ServedRowsScopeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ServedRowsScopeExec: at={}", self.server.address)
    }
}

impl ExecutionPlan for ServedRowsScopeExec {
    fn name(&self) -> &str {
        "ServedRowsScopeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.inner]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [inner] = <[_; 1]>::try_from(children).map_err(|c| {
            DataFusionError::Internal(format!(
                "ServedRowsScopeExec takes one child, not {}",
                c.len()
            ))
        })?;
        Ok(Arc::new(Self::new(inner, self.server.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (stream, held) = scoped(&self.server, || self.inner.execute(partition, context));
        let stream = stream?;
        let schema = stream.schema();
        let held_while_streaming = stream.map(move |b| {
            let _ = &held;
            b
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            held_while_streaming,
        )))
    }
}

/// A query planner whose plans serve the rows they send (see [`ServedRowsScopeExec`]).
#[derive(Debug)]
pub struct ServingPlanner {
    inner: Arc<dyn QueryPlanner + Send + Sync>,
    server: Arc<RowsServer>,
}

impl ServingPlanner {
    /// `inner`'s plans, their sent rows served by `server`.
    pub fn new(inner: Arc<dyn QueryPlanner + Send + Sync>, server: Arc<RowsServer>) -> Self {
        Self { inner, server }
    }
}

#[async_trait]
impl QueryPlanner for ServingPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let inner = self.inner.create_physical_plan(plan, state).await?;
        Ok(Arc::new(ServedRowsScopeExec::new(
            inner,
            self.server.clone(),
        )))
    }
}

/// `ServedRef` on the wire.
pub(crate) fn to_wire(at: &ServedRef) -> wire::ServedTable {
    wire::ServedTable {
        address: at.address.clone(),
        id: at.id.as_bytes().to_vec(),
        rows: at.rows.clone(),
        column_bytes: at.column_bytes.clone(),
    }
}

/// `ServedRef` from the wire.
pub(crate) fn from_wire(t: &wire::ServedTable) -> Result<ServedRef> {
    Ok(ServedRef {
        address: t.address.clone(),
        id: Uuid::from_slice(&t.id).map_err(|e| {
            DataFusionError::Internal(format!("malformed served table ID in a plan: {e}"))
        })?,
        rows: t.rows.clone(),
        column_bytes: t.column_bytes.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::TaskContext;

    fn rows(n: i64) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("v{i}")),
                )),
            ],
        )
        .expect("batch");
        (schema, batch)
    }

    fn server() -> Arc<RowsServer> {
        RowsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), None, 0).expect("rows server")
    }

    /// Each partition's rows and columns arrive as registered; a table is served only while
    /// its scope's stream lives, and only inside a scope.
    #[tokio::test]
    async fn a_partition_is_fetched_projected_and_released_with_its_stream() {
        let server = server();
        let (schema, big) = rows(300_000);
        let (_, small) = rows(3);
        assert!(
            server
                .register(schema.clone(), vec![vec![small.clone()]])
                .is_none(),
            "outside a scope the rows travel in the plan"
        );
        let (at, held) = scoped(&server, || {
            server.register(schema.clone(), vec![vec![small.clone()], vec![big.clone()]])
        });
        let at = at.expect("registered in a scope");
        assert_eq!(server.serving(), 1);
        assert_eq!(at.rows, [3, 300_000]);
        let table = ServedRowsTable::new(at.clone(), schema.clone());
        let ctx = datafusion::prelude::SessionContext::new();
        let scan = table
            .scan(&ctx.state(), Some(&vec![1]), &[], None)
            .await
            .expect("scan");
        // The planner's estimates: rows exact, per partition and in all.
        let rows = |partition: Option<usize>| {
            let args = match partition {
                Some(p) => StatisticsArgs::new().with_partition(Some(p)),
                None => StatisticsArgs::new(),
            };
            scan.statistics_from_inputs(&[], &args)
                .expect("statistics")
                .num_rows
        };
        assert_eq!(rows(None), Precision::Exact(300_003));
        assert_eq!(rows(Some(0)), Precision::Exact(3));
        let task = Arc::new(TaskContext::default());
        let second: Vec<RecordBatch> = scan
            .execute(1, task.clone())
            .expect("execute")
            .try_collect()
            .await
            .expect("fetched");
        let fetched = arrow::compute::concat_batches(&second[0].schema(), &second).expect("concat");
        assert_eq!(fetched.num_columns(), 1, "only the projected column");
        assert_eq!(fetched.num_rows(), 300_000);
        assert_eq!(fetched.column(0).as_ref(), big.column(1).as_ref());
        assert!(second.len() > 1, "a 1 MiB cap cuts 3 MB into messages");

        // A scan of no columns (`count(*)`) still counts every row.
        let counts = table
            .scan(&ctx.state(), Some(&vec![]), &[], None)
            .await
            .expect("scan");
        let batches: Vec<RecordBatch> = counts
            .execute(1, task.clone())
            .expect("execute")
            .try_collect()
            .await
            .expect("fetched");
        assert!(batches.iter().all(|b| b.num_columns() == 0));
        assert_eq!(
            batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            300_000
        );

        drop(held);
        assert_eq!(server.serving(), 0);
        let gone = scan.execute(0, task).expect("execute");
        let err = gone.try_collect::<Vec<_>>().await.expect_err("released");
        assert!(err.to_string().contains("no longer served"), "{err}");
    }
}
