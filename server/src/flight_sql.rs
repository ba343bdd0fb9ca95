//! Arrow Flight SQL: the SQL door for ADBC, JDBC (DBeaver), pyarrow and Flight SQL tools, on
//! `sql.flight_listen_address`. A thin door like the others: `GetFlightInfo` with a statement
//! runs it through the engine's SQL (tenant from `x-scope-orgid` metadata, row limit, the
//! tenant's query budget) and answers the schema and one ticket; `DoGet` with that ticket
//! streams the rows. Answers wait for their `DoGet` at most [`ANSWER_TTL`] and only for the
//! tenant that asked; a ticket is good once. Prepared statements (what JDBC, and so DBeaver,
//! use for every query; ADBC's `adbc_prepare`) are planned when created, which checks them and
//! gives their result schema; each execution runs the text again and answers like a statement.
//! They take no parameters, belong to the tenant that made them, and are forgotten when
//! closed, after [`PREPARED_TTL`] unused, or past [`MAX_PREPARED`]. The catalog calls that
//! tools make on connecting (`GetCatalogs`, `GetDbSchemas`, `GetTables` with schemas,
//! `GetSqlInfo`) describe catalog `allegro`, schema `public` and the four tables.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_engine::query::QueryEngine;
use allegro_engine::sql::SqlAnswer;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{GetCatalogsBuilder, SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTables, CommandPreparedStatementQuery, CommandStatementQuery,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::api::sql::HTTP_MAX_ROWS;
use crate::grpc::status;
use crate::tenant::request_tenants;

/// How long an answer waits for its `DoGet`.
pub const ANSWER_TTL: Duration = Duration::from_secs(60);
/// Most answers waiting at once, and their most bytes together; past either the oldest go,
/// so clients that never fetch cannot fill the memory.
const MAX_WAITING: usize = 64;
const MAX_WAITING_BYTES: usize = 512 << 20;

/// How long a prepared statement is kept unused.
pub const PREPARED_TTL: Duration = Duration::from_secs(3600);
/// Most prepared statements kept at once; past it the least recently used go.
pub const MAX_PREPARED: usize = 1024;

/// A prepared statement: its text, for the tenants that made it.
struct Prepared {
    tenants: Vec<String>,
    query: String,
    used: Instant,
}

struct Waiting {
    tenants: Vec<String>,
    answer: SqlAnswer,
    since: Instant,
}

impl Waiting {
    fn bytes(&self) -> usize {
        self.answer
            .batches
            .iter()
            .map(|b| b.get_array_memory_size())
            .sum()
    }
}

/// The Flight SQL service.
pub struct AllegroFlightSql {
    engine: Arc<QueryEngine>,
    multitenancy: bool,
    waiting: Mutex<HashMap<uuid::Uuid, Waiting>>,
    prepared: Mutex<HashMap<uuid::Uuid, Prepared>>,
}

impl AllegroFlightSql {
    /// The tonic service over `engine`.
    pub fn service(engine: Arc<QueryEngine>, multitenancy: bool) -> FlightServiceServer<Self> {
        FlightServiceServer::new(Self {
            engine,
            multitenancy,
            waiting: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
        })
    }

    fn tenants<T>(&self, req: &Request<T>) -> Result<Vec<String>, Status> {
        request_tenants(self.multitenancy, &req.metadata().clone().into_headers()).map_err(status)
    }

    /// Runs `query` for `tenants` and keeps the answer for its `DoGet`: the schema, one
    /// ticket and the row count.
    async fn answer(
        &self,
        tenants: Vec<String>,
        query: &str,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let answer = self
            .engine
            .sql(&tenants, query, HTTP_MAX_ROWS)
            .await
            .map_err(|e| status(e.into()))?;
        let id = uuid::Uuid::new_v4();
        let ticket = TicketStatementQuery {
            statement_handle: id.as_bytes().to_vec().into(),
        };
        let rows: usize = answer.batches.iter().map(|b| b.num_rows()).sum();
        let info = FlightInfo::new()
            .try_with_schema(&answer.schema)
            .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor)
            .with_total_records(rows as i64);
        self.keep(
            id,
            Waiting {
                tenants,
                answer,
                since: Instant::now(),
            },
        );
        Ok(Response::new(info))
    }

    /// The ID and text of prepared statement `handle`, if `tenants` made it (marked used).
    fn prepared_query(
        &self,
        handle: &[u8],
        tenants: &[String],
    ) -> Result<(uuid::Uuid, String), Status> {
        let id = uuid::Uuid::from_slice(handle)
            .map_err(|_| Status::invalid_argument("not a prepared statement of this server"))?;
        let mut m = self.prepared.lock();
        m.retain(|_, p| p.used.elapsed() < PREPARED_TTL);
        match m.get_mut(&id) {
            Some(p) if p.tenants != tenants => Err(Status::permission_denied(
                "this prepared statement belongs to another tenant",
            )),
            Some(p) => {
                p.used = Instant::now();
                Ok((id, p.query.clone()))
            }
            None => Err(Status::not_found(format!(
                "no such prepared statement (closed, or unused for {}s)",
                PREPARED_TTL.as_secs()
            ))),
        }
    }

    fn keep(&self, id: uuid::Uuid, w: Waiting) {
        let mut m = self.waiting.lock();
        m.retain(|_, w| w.since.elapsed() < ANSWER_TTL);
        let incoming = w.bytes();
        drop_oldest(
            &mut m,
            |w| w.since,
            |m| {
                m.len() >= MAX_WAITING
                    || (!m.is_empty()
                        && m.values().map(Waiting::bytes).sum::<usize>() + incoming
                            > MAX_WAITING_BYTES)
            },
        );
        m.insert(id, w);
    }

    /// Keeps prepared statement `p` as `id`, the least recently used going past
    /// [`MAX_PREPARED`].
    fn keep_prepared(&self, id: uuid::Uuid, p: Prepared) {
        let mut m = self.prepared.lock();
        m.retain(|_, p| p.used.elapsed() < PREPARED_TTL);
        drop_oldest(&mut m, |p| p.used, |m| m.len() >= MAX_PREPARED);
        m.insert(id, p);
    }
}

/// Removes the entry of `m` with the earliest `at` while `over(m)` holds.
fn drop_oldest<V>(
    m: &mut HashMap<uuid::Uuid, V>,
    at: impl Fn(&V) -> Instant,
    over: impl Fn(&HashMap<uuid::Uuid, V>) -> bool,
) {
    while over(m) {
        let Some(oldest) = m.iter().min_by_key(|(_, v)| at(v)).map(|(k, _)| *k) else {
            break;
        };
        m.remove(&oldest);
    }
}

/// The catalog and schema the tables are listed under.
const CATALOG: &str = "allegro";
const SCHEMA: &str = "public";

type DoGetStream =
    Pin<Box<dyn futures::Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// A `FlightInfo` whose one ticket is the command itself (catalog calls answer in `DoGet`).
fn info_for(
    command: &impl ProstMessageExt,
    schema: &arrow::datatypes::Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
        .with_endpoint(
            FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec())),
        )
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// `batch` as a `DoGet` stream.
fn one_batch<E: std::fmt::Display>(
    batch: Result<arrow::array::RecordBatch, E>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(format!("building the answer: {e}")))?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Ok(Response::new(stream.boxed()))
}

/// What `GetSqlInfo` answers.
fn sql_info() -> Result<SqlInfoData, Status> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Allegro");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.build()
        .map_err(|e| Status::internal(format!("SQL info: {e}")))
}

#[tonic::async_trait]
impl FlightSqlService for AllegroFlightSql {
    type FlightService = AllegroFlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let tenants = self.tenants(&request)?;
        self.answer(tenants, &query.query, request.into_inner())
            .await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let tenants = self.tenants(&request)?;
        // Planned now: a bad statement fails here, and the client learns its columns.
        let schema = self
            .engine
            .sql_schema(&tenants, &query.query)
            .await
            .map_err(|e| status(e.into()))?;
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?;
        let id = uuid::Uuid::new_v4();
        self.keep_prepared(
            id,
            Prepared {
                tenants,
                query: query.query,
                used: Instant::now(),
            },
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: id.as_bytes().to_vec().into(),
            dataset_schema,
            // No parameters: an empty schema says so.
            parameter_schema: Default::default(),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let tenants = self.tenants(&request)?;
        let (_, query) = self.prepared_query(&cmd.prepared_statement_handle, &tenants)?;
        self.answer(tenants, &query, request.into_inner()).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        _query: CommandPreparedStatementQuery,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        Err(Status::invalid_argument(
            "prepared statements take no parameters here: write the values into the SQL text",
        ))
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let tenants = self.tenants(&request)?;
        let (id, _) = self.prepared_query(&query.prepared_statement_handle, &tenants)?;
        self.prepared.lock().remove(&id);
        Ok(())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let tenants = self.tenants(&request)?;
        let id = uuid::Uuid::from_slice(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("not a ticket of this server"))?;
        let w = {
            let mut m = self.waiting.lock();
            match m.get(&id) {
                Some(w) if w.tenants != tenants => {
                    return Err(Status::permission_denied(
                        "this ticket belongs to another tenant",
                    ));
                }
                Some(w) if w.since.elapsed() >= ANSWER_TTL => None,
                Some(_) => m.remove(&id),
                None => None,
            }
        };
        let w = w.ok_or_else(|| {
            Status::not_found(format!(
                "no answer waits for this ticket (tickets are good once, for {}s)",
                ANSWER_TTL.as_secs()
            ))
        })?;
        let schema = w.answer.schema.clone();
        let batches = futures::stream::iter(w.answer.batches.into_iter().map(Ok));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        let stream: Pin<Box<dyn futures::Stream<Item = Result<_, Status>> + Send>> = stream.boxed();
        Ok(Response::new(stream))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_for(
            &query,
            &GetCatalogsBuilder::new().schema(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = GetCatalogsBuilder::new();
        b.append(CATALOG);
        one_batch(b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info_for(&query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG, SCHEMA);
        one_batch(b.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info_for(&query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let tenants = self.tenants(&request)?;
        let tables = self
            .engine
            .sql_tables(&tenants)
            .await
            .map_err(|e| status(e.into()))?;
        let mut b = query.into_builder();
        for (name, schema) in &tables {
            b.append(CATALOG, SCHEMA, name, "VIEW", schema)
                .map_err(|e| Status::internal(format!("listing {name}: {e}")))?;
        }
        one_batch(b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let data = sql_info()?;
        let schema = query.clone().into_builder(&data).schema();
        info_for(&query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let data = sql_info()?;
        one_batch(query.into_builder(&data).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
